"""Saved per-task probabilities of any model (``reportkd.predictions.v1``): what ``--predictions FILE`` reads.

Calibrate or evaluate abstention for a model that ``reportkd`` cannot run by saving its probabilities in one of two
layouts (``reportkd predict --save-probs FILE`` writes them for reportkd models):

``.npz`` (``numpy.savez``; no pickles)::

    ids            (N,) str         report ids, row order
    probs.<task>   (N, C_t) float   class probabilities, columns in label-map order
    labels.<task>  (N,) int         optional: true class ids, -100 = missing
    meta           () str           JSON: {"format": "reportkd.predictions.v1",
                                           "task_labels": {task: [class names…]}, "model_id": "…" | null,
                                           "model_sha256": "…" | null}

``.jsonl`` / ``.jsonl.gz``: a header line, then one line per report::

    {"format": "reportkd.predictions.v1", "task_labels": {"grade": ["G1", "G2", "G3", "other"]}, "model_id": "m",
     "model_sha256": "3f9c…"}
    {"id": "r1", "probs": {"grade": [0.1, 0.7, 0.1, 0.1]}, "labels": {"grade": "G2"}}
    {"id": "r2", "probs": {"grade": [0.4, 0.3, 0.2, 0.1]}, "labels": {"grade": null}}

In JSONL, labels are class names (a name outside the label map counts as the ``other`` class when the map has one)
or class ids (integers, or integer-valued floats such as ``3.0`` as pandas writes them); ``null`` or an absent
``labels`` entry is a missing label. A task's labels are either given for the file (possibly missing on some rows)
or absent altogether. ``model_sha256`` (optional) is the :func:`~reportkd.abstention.weights_fingerprint` of the model
that produced the probabilities (``reportkd predict --save-probs`` records it): ``reportkd calibrate`` binds the
thresholds to it. Probabilities must be finite, in ``[0, 1]`` and sum to 1 per row (:meth:`Predictions.validate`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import IGNORE_INDEX, encode_labels, is_missing
from ..utils import atomic_path
from .metrics import probability_problems

PREDICTIONS_FORMAT = "reportkd.predictions.v1"


@dataclass
class Predictions:
    """Per-task probabilities of a set of reports, with their label maps and (optionally) true labels.

    Args:
        ids: Report ids, in row order.
        probs: Task → ``(N, C_t)`` probabilities.
        task_labels: Task → class names (column order of ``probs``).
        labels: Task → ``(N,)`` class ids (``-100`` = missing), for the tasks with labels.
        model_id: The model that produced them, if known.
        model_sha256: :func:`~reportkd.abstention.weights_fingerprint` of that model, if known.
    """

    ids: list[str]
    probs: dict[str, np.ndarray]
    task_labels: dict[str, list[str]]
    labels: dict[str, np.ndarray] | None = None
    model_id: str | None = None
    model_sha256: str | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if set(self.probs) != set(self.task_labels):
            raise ValueError(
                f"probabilities for tasks {sorted(self.probs)} but label maps for {sorted(self.task_labels)}."
            )
        for t, p in self.probs.items():
            if np.ndim(p) != 2 or np.shape(p) != (n, len(self.task_labels[t])):
                raise ValueError(
                    f"probabilities of task {t!r} have shape {np.shape(p)}, expected {(n, len(self.task_labels[t]))} "
                    f"({n} reports, {len(self.task_labels[t])} classes)."
                )
        for t, y in (self.labels or {}).items():
            if t not in self.task_labels:
                raise ValueError(f"labels given for task {t!r}, which has no probabilities.")
            y = np.asarray(y)
            if y.shape != (n,):
                raise ValueError(f"labels of task {t!r} have shape {y.shape}, expected ({n},).")
            bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= len(self.task_labels[t])))
            if bad.any():
                raise ValueError(f"labels of task {t!r} hold class ids outside [0, {len(self.task_labels[t])}).")

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the task and the first reports whose probabilities are not valid.

        Valid: finite, within ``[0, 1]`` and summing to 1 per row (see
        :func:`~reportkd.abstention.metrics.probability_problems`).
        """
        problems = []
        for t, p in self.probs.items():
            for what, bad in probability_problems(np.asarray(p, dtype=np.float64)):
                shown = ", ".join(f"{i} (id {self.ids[i]})" for i in bad[:10])
                problems.append(f"task {t!r}: probabilities {what} in rows {shown}{' …' if len(bad) > 10 else ''}"
                                f" ({len(bad)} in all)")  # fmt: skip
        if problems:
            raise ValueError(
                "; ".join(problems) + ". Save softmax probabilities (not logits or percentages), or fix or drop "
                "those reports."
            )

    def fingerprint(self) -> str:
        """Short SHA-256 of what a calibration uses: ids, task label maps and probabilities (as float32).

        The same predictions saved as ``.npz`` or ``.jsonl`` give the same fingerprint; labels are not included.
        """
        h = hashlib.sha256()
        h.update(json.dumps({"ids": self.ids, "task_labels": self.task_labels}, sort_keys=True).encode())
        for t in sorted(self.probs):
            h.update(t.encode())
            h.update(np.ascontiguousarray(self.probs[t], dtype="<f4").tobytes())
        return h.hexdigest()[:16]

    def missing_label_tasks(self) -> list[str]:
        """Tasks without any label column."""
        return [t for t in self.task_labels if t not in (self.labels or {})]


def save_predictions(path: str | os.PathLike, predictions: Predictions) -> Path:
    """Writes ``predictions`` atomically as ``.npz`` or ``.jsonl[.gz]`` (chosen by the file name).

    Args:
        path: Output file.
        predictions: What to write.
    """
    path, p = Path(path), predictions
    meta = {
        "format": PREDICTIONS_FORMAT, "task_labels": p.task_labels, "model_id": p.model_id,
        "model_sha256": p.model_sha256,
    }  # fmt: skip
    name = path.name.lower()
    with atomic_path(path) as tmp:
        if name.endswith(".npz"):
            arrays = {"ids": np.asarray(p.ids, dtype=str), "meta": np.asarray(json.dumps(meta))}
            arrays.update({f"probs.{t}": np.asarray(v, dtype=np.float32) for t, v in p.probs.items()})
            arrays.update({f"labels.{t}": np.asarray(v, dtype=np.int64) for t, v in (p.labels or {}).items()})
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(tmp, "wt", encoding="utf-8") as f:
                f.write(json.dumps(meta) + "\n")
                for i, rid in enumerate(p.ids):
                    row: dict[str, Any] = {"id": rid, "probs": {t: v[i].tolist() for t, v in p.probs.items()}}
                    if p.labels:
                        row["labels"] = {
                            t: (None if y[i] == IGNORE_INDEX else p.task_labels[t][int(y[i])])
                            for t, y in p.labels.items()
                        }
                    f.write(json.dumps(row) + "\n")
        else:
            raise ValueError(f"Unsupported predictions file {path.name!r}: use .npz, .jsonl or .jsonl.gz.")
    return path


def _check_meta(meta: Any, source: str) -> dict[str, Any]:
    if not isinstance(meta, Mapping) or meta.get("format") != PREDICTIONS_FORMAT:
        raise ValueError(
            f"{source} is not a reportkd predictions file: its header must be "
            f'{{"format": "{PREDICTIONS_FORMAT}", "task_labels": {{...}}}} (see reportkd.abstention.predictions).'
        )
    if not isinstance(meta.get("task_labels"), Mapping) or not meta["task_labels"]:
        raise ValueError(f"{source}: the header lacks task_labels (task → class names).")
    return dict(meta)


def _encode_label(value: Any, names: Sequence[str], where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: label {value!r} is neither a class name nor a class id.")
    if isinstance(value, float) and math.isfinite(value):
        if not value.is_integer():
            raise ValueError(f"{where}: label {value!r} is neither a class name nor a class id.")
        value = int(value)  # 3.0, as pandas writes an integer column with gaps
    if isinstance(value, int):
        if not 0 <= value < len(names):
            raise ValueError(f"{where}: class id {value} is outside [0, {len(names)}).")
        return value
    if is_missing(value):
        return IGNORE_INDEX
    return encode_labels([str(value)], names)[0]


def _int_labels(values: np.ndarray, where: str) -> np.ndarray:
    """Class ids as int64; integer-valued floats are accepted, anything else (3.5, NaN) is refused."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            rows = np.flatnonzero(bad)[:10].tolist()
            raise ValueError(f"{where} holds non-integer class ids in rows {rows}; use -100 for a missing label.")
    elif values.dtype.kind not in "iu":
        raise ValueError(f"{where} must hold integer class ids, got dtype {values.dtype}.")
    return values.astype(np.int64)


def load_predictions(path: str | os.PathLike) -> Predictions:
    """Reads a predictions file (see the module docstring for the layouts).

    Args:
        path: ``.npz`` or ``.jsonl[.gz]`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file {path} does not exist.")
    name = path.name.lower()
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise ValueError(f"{path} lacks the 'meta' array; see reportkd.abstention.predictions for the layout.")
            meta = _check_meta(json.loads(str(z["meta"])), str(path))
            if "ids" not in z.files:
                raise ValueError(f"{path} lacks the 'ids' array.")
            tasks = list(meta["task_labels"])
            missing = [t for t in tasks if f"probs.{t}" not in z.files]
            if missing:
                raise ValueError(f"{path} lacks probabilities for task(s) {missing} (arrays 'probs.<task>').")
            probs = {t: z[f"probs.{t}"] for t in tasks}
            labels = {
                t: _int_labels(z[f"labels.{t}"], f"{path}: labels.{t}") for t in tasks if f"labels.{t}" in z.files
            }
            ids = [str(i) for i in z["ids"].tolist()]
        return Predictions(
            ids, probs, meta["task_labels"], labels or None, meta.get("model_id"), meta.get("model_sha256")
        )
    if not name.endswith((".jsonl", ".jsonl.gz")):
        raise ValueError(f"Unsupported predictions file {path.name!r}: use .npz, .jsonl or .jsonl.gz.")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty.")
    rows = []
    for lineno, line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({e.msg}).") from None
    meta = _check_meta(rows[0], str(path))
    task_labels = {t: list(v) for t, v in meta["task_labels"].items()}
    body = rows[1:]
    if not body:
        raise ValueError(f"{path} has a header but no reports.")
    labelled = {t for r in body for t in (r.get("labels") or {})}
    ids, probs = [], {t: [] for t in task_labels}
    labels = {t: [] for t in task_labels if t in labelled}
    for (lineno, _), r in zip(lines[1:], body):
        ids.append(str(r.get("id", lineno)))
        rp = r.get("probs") or {}
        for t in task_labels:
            if t not in rp:
                raise ValueError(f"{path}: line {lineno} has no probabilities for task {t!r}.")
            probs[t].append(rp[t])
        rl = r.get("labels") or {}
        for t in labels:
            labels[t].append(_encode_label(rl.get(t), task_labels[t], f"{path}: line {lineno}, task {t!r}"))
    arrays = {}
    for t, v in probs.items():
        widths = {len(x) if isinstance(x, list) else -1 for x in v}
        if widths != {len(task_labels[t])}:
            raise ValueError(f"{path}: task {t!r} needs {len(task_labels[t])} probabilities per report.")
        arrays[t] = np.asarray(v, dtype=np.float64)
    return Predictions(
        ids, arrays, task_labels, {t: np.asarray(v, dtype=np.int64) for t, v in labels.items()} or None,
        meta.get("model_id"), meta.get("model_sha256"),
    )  # fmt: skip


__all__ = ["PREDICTIONS_FORMAT", "Predictions", "load_predictions", "save_predictions"]
