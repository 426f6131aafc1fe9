"""Generation metrics shipped as local ``evaluate`` modules (hub-loaded metrics fail offline).

``load_metric("rouge_l" | "bleu" | "synoptic_accuracy")`` returns the ``evaluate`` module from this folder;
:func:`evaluate_generations` computes all three for ``reportkd evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent
SHIPPED_METRICS: tuple[str, ...] = ("rouge_l", "bleu", "synoptic_accuracy")


def metric_path(name: str) -> str:
    """Folder of a shipped metric, for ``evaluate.load(metric_path(name))``.

    Args:
        name: One of :data:`SHIPPED_METRICS`.
    """
    if name not in SHIPPED_METRICS:
        raise KeyError(f"Unknown metric {name!r}. Shipped metrics: {', '.join(SHIPPED_METRICS)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs: Any):
    """Loads a shipped metric as an ``evaluate`` module, offline.

    Args:
        name: One of :data:`SHIPPED_METRICS`.
        **kwargs: Further ``evaluate.load`` arguments.
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


def evaluate_generations(
    predictions: Sequence[str], references: Sequence[str], *, fields: Sequence[str] | None = None
) -> dict[str, float]:
    """ROUGE-L, BLEU and field-level synoptic accuracy of generated texts.

    Args:
        predictions: Generated texts (``None`` counts as empty).
        references: One reference per prediction.
        fields: Synoptic fields to score (default: every field of each reference).

    Returns:
        ``rougeL`` (and its precision / recall) in [0, 1], ``bleu`` in [0, 100], ``field_accuracy``,
        ``exact_match``, ``parse_rate``, ``accuracy_<field>`` and ``known_accuracy_<field>``, and ``n``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: give one reference each.")
    preds = ["" if p is None else str(p) for p in predictions]
    refs = ["" if r is None else str(r) for r in references]
    out: dict[str, float] = {"n": len(preds)}
    out.update(load_metric("rouge_l").compute(predictions=preds, references=refs))
    bleu = load_metric("bleu").compute(predictions=preds, references=refs)
    out["bleu"] = bleu["bleu"]
    kwargs = {"fields": list(fields)} if fields is not None else {}
    out.update(load_metric("synoptic_accuracy").compute(predictions=preds, references=refs, **kwargs))
    return out
