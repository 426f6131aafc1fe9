"""The review page for human coders: one self-contained HTML file of the reports a classifier abstained on.

Per report: the text with the n-grams that drove each candidate highlighted (:mod:`.attribution`: the windows that won
the MtCNN's max-pools, weighted by the class head), per task the top candidates with probabilities, whether the task
abstained, and a choice per task. The page filters by task ("abstained only" on by default), pages through long
lists, keeps the coder's choices in the browser's local storage and exports them as JSONL through a Blob download:
one line per report, ``{"id": …, "labels": {task: label | null}, "by": {task: "coder" | "model" | null}}``.

Security: report text is untrusted. The data travel as one JSON block whose ``<``, ``>`` and ``&`` are escaped as
``\\u003c`` …, so no text can close the script element; the page's script inserts text only as text nodes (never
``innerHTML``), and a Content-Security-Policy forbids any network access, external script or frame. The page needs no
server: open the file.

Highlights per candidate for an MtCNN; for a HiSAN the words it attended to most (the same for every task and
candidate: :func:`~.attribution.hisan_token_attention`); other models (ensembles) get the page without highlights,
and it says so.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reportkd.utils import atomic_path

from .attribution import attribute_reports, hisan_token_attention, top_token_spans
from .modeling_mtcnn import MtCNNForReportClassification

TEMPLATE = "review_template.html"
ATTRIBUTION_RULE = (
    "Highlighted: the word windows that won the max-pool of the convolution filters pushing the selected candidate "
    "up most (filter weight in that class's head minus its mean over the task's classes, times the pooled "
    "activation); darker = larger push. Hover or click a candidate to see its words."
)
HISAN_RULE = (
    "Highlighted (HiSAN): the words the model attended to most: word-level target attention within a line times that "
    "line's line-level target attention, averaged over heads; the same for every task and candidate (attention shows "
    "what the model read, not why it chose a class)."
)


def _attribution_kind(model: Any) -> str | None:
    """``"mtcnn"`` (max-pooled windows), ``"hisan"`` (attention) or None (no highlights)."""
    if isinstance(model, MtCNNForReportClassification):
        return "mtcnn"
    if getattr(getattr(model, "config", None), "model_type", None) == "hisan" and hasattr(model, "word_level"):
        return "hisan"
    return None


def _no_highlights(model: Any, ngrams: int) -> str:
    if ngrams == 0:
        return "No highlights (--ngrams 0)."
    return f"No highlights: they need an MtCNN or a HiSAN ({type(model).__name__} given)."


def select_for_review(
    accepted: Mapping[str, np.ndarray], *, include_coded: bool = False, max_reports: int | None = 500
) -> tuple[np.ndarray, int]:
    """Rows to put on the page, in input order, and how many qualified before the cap.

    Args:
        accepted: Task → ``(N,)`` accepted mask (after thresholds).
        include_coded: Also list reports labelled on every task.
        max_reports: At most this many rows (None: no cap).
    """
    if max_reports is not None and max_reports < 1:
        raise ValueError(f"max_reports must be >= 1 or None, got {max_reports}.")
    every = np.all(np.stack([np.asarray(a, dtype=bool) for a in accepted.values()]), axis=0)
    rows = np.arange(len(every)) if include_coded else np.flatnonzero(~every)
    return rows[:max_reports] if max_reports is not None else rows, len(rows)


def word_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token character offsets widened to whole digit runs.

    The report tokenizer folds long numbers (``83290`` → ``000``); the tokenizers library then aligns the token with
    only part of the run, so the offsets are widened over adjacent digits (token boundaries never split a digit run).

    Args:
        text: The report text.
        offsets: ``(start, end)`` per token, as the fast tokenizer returns them.
    """
    out = []
    for start, end in offsets:
        while 0 < start < len(text) and text[start - 1].isdigit() and text[start].isdigit():
            start -= 1
        while 0 < end < len(text) and text[end].isdigit() and text[end - 1].isdigit():
            end += 1
        out.append((int(start), int(end)))
    return out


def _spans(ngrams: Sequence[Any], offsets: Sequence[tuple[int, int]]) -> list[list[float]]:
    """Token n-grams → ``[char_start, char_end, score]`` in the original text."""
    return [[offsets[g.start][0], offsets[g.end - 1][1], round(g.score, 4)] for g in ngrams]


def build_review(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    ids: Sequence[str],
    probs: Mapping[str, np.ndarray],
    accepted: Mapping[str, np.ndarray],
    task_labels: Mapping[str, Sequence[str]],
    *,
    thresholds: Mapping[str, float] | None = None,
    top_k: int = 3,
    ngrams: int = 5,
    top_filters: int = 10,
    batch_size: int = 32,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The page's data (JSON-serialisable): reports, candidates, highlights.

    Args:
        model: The classifier (highlights only for an MtCNN).
        tokenizer: Its (fast) tokenizer; offsets map token windows back to characters.
        texts: Report texts of the rows to show.
        ids: Their ids.
        probs: Task → ``(n, C)`` probabilities of those rows (calibration temperature already applied).
        accepted: Task → ``(n,)`` accepted mask of those rows.
        task_labels: Task → class names.
        thresholds: Task → threshold, shown on the page (None: no thresholds).
        top_k: Candidates listed per task.
        ngrams: Highlighted n-grams per candidate.
        top_filters: Filters considered per candidate (see :func:`~.attribution.decisive_ngrams`).
        batch_size: Reports per forward pass of the attribution.
        meta: Extra fields for the page header (model, source, counts).
    """
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts but {len(ids)} ids.")
    if top_k < 1 or ngrams < 0:
        raise ValueError(f"top_k must be >= 1 and ngrams >= 0, got {top_k} and {ngrams}.")
    tasks = list(task_labels)
    kind = _attribution_kind(model) if ngrams > 0 else None
    max_length = getattr(model.config, "max_length", None) or None
    reports = []
    for start in tqdm(range(0, len(texts), batch_size), desc="Review page", leave=False):
        chunk = list(texts[start : start + batch_size])
        enc = tokenizer(
            chunk, truncation=True, max_length=max_length, add_special_tokens=False, return_offsets_mapping=True
        )
        rows = range(start, start + len(chunk))
        top = {t: np.argsort(-probs[t][list(rows)], axis=1, kind="stable")[:, :top_k] for t in tasks}
        attributions: list[dict] = [{} for _ in chunk]
        shared: list[list] = [[] for _ in chunk]  # HiSAN: one set of spans per report
        if kind is not None:
            lengths = [len(x) for x in enc["input_ids"]]
            width = max(max(lengths, default=1), max(getattr(model.config, "kernel_sizes", [1])))
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            for i, x in enumerate(enc["input_ids"]):
                input_ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
            device = next(model.parameters()).device
            input_ids, mask = input_ids.to(device), (input_ids != pad).long().to(device)
            if kind == "mtcnn":
                attributions = attribute_reports(
                    model, input_ids, mask, {t: top[t].tolist() for t in tasks}, top_filters=top_filters,
                    max_ngrams=ngrams,
                )  # fmt: skip
            else:
                weights, _ = hisan_token_attention(model, input_ids, mask)
                shared = [top_token_spans(w, max_spans=ngrams) for w in weights.float().cpu()]
        for i, row in enumerate(rows):
            text = chunk[i]
            offsets = word_offsets(text, enc["offset_mapping"][i])
            read_end = int(offsets[-1][1]) if offsets else 0
            truncated = max_length is not None and len(offsets) >= max_length and bool(text[read_end:].strip())
            report: dict[str, Any] = {"id": str(ids[row]), "text": text, "read_end": read_end if truncated else None}
            report["tasks"] = {}
            for t in tasks:
                candidates = []
                for c in top[t][i].tolist():
                    found = attributions[i].get(t, {}).get(int(c), shared[i])
                    candidates.append(
                        {
                            "label": task_labels[t][c],
                            "p": round(float(probs[t][row, c]), 6),
                            "spans": _spans(found, offsets),
                        }
                    )
                ok = bool(accepted[t][row])
                report["tasks"][t] = {
                    "abstained": not ok,
                    "label": candidates[0]["label"] if ok else None,
                    "top": candidates,
                }
            reports.append(report)
    key = hashlib.sha256(
        json.dumps([str(i) for i in ids]).encode() + json.dumps(dict(meta or {}), sort_keys=True, default=str).encode()
    )
    return {
        **dict(meta or {}),
        "key": key.hexdigest()[:16],
        "tasks": tasks,
        "labels": {t: list(v) for t, v in task_labels.items()},
        "thresholds": dict(thresholds) if thresholds is not None else None,
        "attribution_kind": kind,
        "attribution": {"mtcnn": ATTRIBUTION_RULE, "hisan": HISAN_RULE}.get(kind),
        "attribution_missing": None if kind else _no_highlights(model, ngrams),
        "reports": reports,
    }


def _script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` or line separators."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def render_review_html(data: Mapping[str, Any], *, title: str = "reportkd review") -> str:
    """The self-contained page (inline CSS and script, no network) for :func:`build_review`'s data.

    Args:
        data: The page's data.
        title: Page title.
    """
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    values = {"TITLE": html.escape(title), "DATA": _script_json(data)}
    return re.sub(r"\{\{(TITLE|DATA)\}\}", lambda m: values[m.group(1)], template)  # one pass: no re-substitution


def write_review_html(path: str | Path, data: Mapping[str, Any], *, title: str = "reportkd review") -> Path:
    """Writes the page atomically; returns its path.

    Args:
        path: Output ``.html`` file.
        data: The page's data (:func:`build_review`).
        title: Page title.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(render_review_html(data, title=title), encoding="utf-8")
    return Path(path)


__all__ = [
    "ATTRIBUTION_RULE",
    "HISAN_RULE",
    "build_review",
    "render_review_html",
    "select_for_review",
    "word_offsets",
    "write_review_html",
]
