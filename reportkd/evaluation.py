"""One set of classification metrics for every model family (report classifiers, CLIP zero-shot, slide probes).

Metrics come with percentile bootstrap confidence intervals so that differences between models can be read
against resampling noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .data import IGNORE_INDEX


def accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    return float((y == pred).mean())


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in ``y``."""
    present = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in present]))


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean F1 over the classes present in ``y`` or ``pred``."""
    classes = np.union1d(np.unique(y), np.unique(pred))
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def macro_auroc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """One-vs-rest AUROC averaged over classes present in ``y`` with both positives and negatives.

    Mann–Whitney form with average ranks for ties (``scipy.stats.rankdata``), equal to scikit-learn's
    ``roc_auc_score`` per class.
    """
    from scipy.stats import rankdata

    scores = []
    for c in np.unique(y):
        pos, neg = probs[y == c, c], probs[y != c, c]
        if len(pos) == 0 or len(neg) == 0:
            continue
        ranks = rankdata(np.concatenate([pos, neg]))
        scores.append((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    return float(np.mean(scores)) if scores else None


LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "macro_f1": macro_f1,
}


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1 and macro AUROC, each with a bootstrap confidence interval.

    Args:
        probs: ``(N, C)`` class probabilities (or scores).
        labels: ``(N,)`` class ids; ``-100`` rows are left out (and counted as ``n_missing``).
        n_bootstrap: Bootstrap resamples (0 = no intervals).
        confidence: Interval coverage.
        seed: Resampling seed.

    Returns:
        ``{"n", "n_missing", "<metric>": value, "<metric>_ci": [low, high], ...}``.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}.")
    keep = labels != IGNORE_INDEX
    probs, y = probs[keep], labels[keep]
    out: dict[str, Any] = {"n": int(len(y)), "n_missing": int((~keep).sum())}
    if len(y) == 0:
        return out
    pred = probs.argmax(1)
    n_classes = probs.shape[1]
    for name, fn in LABEL_METRICS.items():
        out[name] = fn(y, pred, n_classes)
    out["macro_auroc"] = macro_auroc(y, probs)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples: dict[str, list[float]] = {k: [] for k in [*LABEL_METRICS, "macro_auroc"]}
        for _ in range(n_bootstrap):
            idx = rng.integers(0, len(y), len(y))
            for name, fn in LABEL_METRICS.items():
                samples[name].append(fn(y[idx], pred[idx], n_classes))
            if n_bootstrap <= 200 or len(y) <= 5000:
                auc = macro_auroc(y[idx], probs[idx])
                if auc is not None:
                    samples["macro_auroc"].append(auc)
        lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
        for name, vals in samples.items():
            if vals:
                out[f"{name}_ci"] = [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))]
    return out


def format_metrics_table(results: Mapping[str, Mapping[str, Any]], metrics: tuple[str, ...] | None = None) -> str:
    """Markdown table: one row per key of ``results`` (task, model…), one column per metric (with CI if present)."""
    metrics = metrics or ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc")
    lines = ["| | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, r in results.items():
        cells = []
        for m in metrics:
            v = r.get(m)
            ci = r.get(f"{m}_ci")
            cells.append("—" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {name} | {r.get('n', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
