"""The report → synoptic-line task of the SKD recipe: report cleaning, the patient split, greedy scoring.

A pathology report becomes a prompt (``report:\n<cleaned text>\nsynoptic:``) and its synoptic line
``organ: … | histology: … | grade: … | t_stage: … | laterality: … | behavior: …`` the completion. Models are scored
on held-out patients with greedy decoding (ROUGE-L, BLEU, field-level accuracy).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from reportkd.metrics import evaluate_generations

from .data import PromptCompletionCollator
from .sampling import interleaved_sample
from .sharding import is_sharded

logger = logging.getLogger(__name__)
# the TCGA reports next to a source checkout (../shared/data); pass data_path elsewhere
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
FIELDS = ("organ", "histology", "grade", "t_stage", "laterality", "behavior")
KEYWORDS = re.compile(
    r"diagnos|carcinom|adenocarc|sarcom|lymphom|melanom|gliom|glioblast|astrocyt|oligoden|neoplas|tumou?r|"
    r"malignan|benign|in situ|metasta|grade|differentiat|fuhrman|gleason|nottingham|stage|\bp?t[0-4x]|\bpt\b|"
    r"left|right|bilateral|midline|histolog|type|invasi|lobe|kidney|renal|lung|brain|colon|rect|prostat|uter|"
    r"endometri|ovar|cervi|bladder|urothel|liver|hepat|pancrea|head and neck|squamous|tongue|larynx|serous",
    re.IGNORECASE,
)


# -- data ----------------------------------------------------------------------------------------------------------
def clean_report(text: str, max_words: int) -> str:
    """OCR noise out, diagnostic lines first: keeps up to ``max_words`` words, lower-cased, in reading order.

    Args:
        text: Raw OCR'd report.
        max_words: Word budget.
    """
    lines = []
    for line in str(text or "").splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        chars = line.replace(" ", "")
        letters = sum(c.isalpha() for c in chars)
        barcode = sum(c in "iIl1|!" for c in chars)  # OCR'd barcodes: rows of I, l, 1
        if len(chars) < 3 or letters < 0.6 * len(chars) or barcode > 0.4 * len(chars):
            continue
        if re.search(r"uuid|tcga-|redacted", line, re.IGNORECASE):
            continue
        lines.append(line.lower())
    ranked = sorted(range(len(lines)), key=lambda i: (not KEYWORDS.search(lines[i]), i))
    chosen, words = set(), 0
    for i in ranked:
        n = len(lines[i].split())
        if words + n > max_words and chosen:
            continue
        chosen.add(i)
        words += n
    return "\n".join(lines[i] for i in sorted(chosen))


def make_example(record: dict, prompt_words: int) -> dict:
    """Prompt / completion pair of one report."""
    report = clean_report(record["text"], prompt_words)
    return {"prompt": f"report:\n{report}\nsynoptic:", "completion": " " + record["synoptic"].strip()}


def read_records(spec: str) -> list[dict]:
    """Report records from a TCGA-schema ``.jsonl[.gz]`` file or ``synthetic:n=..,seed=..``."""
    if spec.startswith("synthetic"):
        from reportkd.synthetic import generate_reports

        options = {"n": 400, "seed": 0}
        for item in filter(None, spec.partition(":")[2].split(",")):
            key, _, value = item.partition("=")
            if key not in options:
                raise ValueError(f"Unknown synthetic option {key!r} in {spec!r}; use n and seed.")
            options[key] = int(value)
        return generate_reports(options["n"], seed=options["seed"])
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data_path to a TCGA-schema reports file.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def describe_data(args: Any) -> str:
    """The training data as model cards describe it."""
    if args.training_data:
        return args.training_data
    if args.data_path.startswith("synthetic"):
        return f"synthetic TCGA-style pathology reports (`reportkd.synthetic`, {args.data_path.partition(':')[2]})"
    return f"pathology reports from `{Path(args.data_path).name}` (report text → synoptic line), split by patient"


def load_split(args: Any) -> tuple[list[dict], list[dict]]:
    """Train and held-out (test) examples; the split is by patient (stable hash), so no patient is on both sides."""
    train, _, test = load_splits(args)
    return train, test


def load_splits(args: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """Train, validation and test examples, split by patient (stable hash): test is the first ``eval_fraction``
    of the hash range, validation the next ``validation_fraction`` (empty when 0), train the rest.

    Args:
        args: ``ScriptArguments`` (``data_path``, ``eval_fraction``, ``validation_fraction``, caps, ``min_words``,
            ``prompt_words``).
    """
    validation_fraction = getattr(args, "validation_fraction", 0.0)
    if not (0 < args.eval_fraction and 0 <= validation_fraction and args.eval_fraction + validation_fraction < 1):
        raise ValueError(
            f"eval_fraction ({args.eval_fraction}) must be > 0, validation_fraction ({validation_fraction}) >= 0, "
            "and together < 1 so that patients are left for training."
        )
    records = read_records(args.data_path)
    train, validation, test = [], [], []
    test_end = args.eval_fraction * 10_000
    validation_end = test_end + validation_fraction * 10_000
    for r in records:
        if not r.get("synoptic") or len(str(r.get("text") or "").split()) < args.min_words:
            continue
        key = str(r.get("patient") or r.get("id"))
        bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10_000
        (test if bucket < test_end else validation if bucket < validation_end else train).append(r)
    if args.max_train_samples:
        train = train[: args.max_train_samples]
    if args.max_eval_samples:
        test, validation = test[: args.max_eval_samples], validation[: args.max_eval_samples]
    logger.info("%d training, %d validation and %d test reports", len(train), len(validation), len(test))
    return tuple([make_example(r, args.prompt_words) for r in rows] for rows in (train, validation, test))


# -- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model, tok, prompts: list[str], max_prompt_length: int, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy completions, batched by prompt length, with the same KV-cached sampler as training."""
    from tqdm.auto import tqdm

    collator = PromptCompletionCollator(tok, max_prompt_length, max_new_tokens)
    encoded = [collator.encode({"prompt": p})[0] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="generating", leave=False):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), collator.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        out = interleaved_sample(
            model, None, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens, student_temperature=0.0,
            eos_token_id=tok.eos_token_id, pad_token_id=collator.pad_token_id, synced=is_sharded(model),
        )  # fmt: skip
        for row, i in enumerate(idx):
            outputs[i] = tok.decode(
                out.completion_ids[row][out.completion_mask[row]], skip_special_tokens=True
            ).strip()
    return outputs


def score(name, model, tok, held_out, args: Any, script_args: Any, extra=None, out=None) -> dict:
    """Greedy generations on the held-out reports, their metrics, and ``<out>/predictions/<name>.jsonl``."""
    start = time.perf_counter()
    preds = generate(
        model, tok, [ex["prompt"] for ex in held_out], args.max_prompt_length, args.max_completion_length,
        script_args.eval_batch_size,
    )  # fmt: skip
    refs = [ex["completion"].strip() for ex in held_out]
    metrics = evaluate_generations(preds, refs, fields=FIELDS)
    metrics["eval_seconds"] = round(time.perf_counter() - start, 1)
    metrics["examples"] = [{"prediction": p, "reference": r} for p, r in list(zip(preds, refs))[:3]]
    metrics.update(extra or {})
    # Per-report generations, for `reportkd evaluate generations --predictions <file>`.
    if out is not None and PartialState().is_main_process:
        path = Path(out) / "predictions" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for p, r in zip(preds, refs):
                f.write(json.dumps({"prediction": p, "reference": r}) + "\n")
    logger.info("%s: field accuracy %.3f, ROUGE-L %.3f", name, metrics["field_accuracy"], metrics["rougeL"])
    return metrics


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: field accuracies, ROUGE-L and BLEU per model."""
    cols = [f"accuracy_{f}" for f in FIELDS] + ["field_accuracy", "exact_match", "rougeL", "bleu"]
    head = ["model", *[c.replace("accuracy_", "") if c.startswith("accuracy_") else c for c in cols], "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        cells = [f"{m.get(c, float('nan')):.3f}" if c != "bleu" else f"{m.get(c, 0):.1f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m.get('train_seconds', 0):.0f} |")
    return "\n".join(lines)
