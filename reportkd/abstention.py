"""Abstention by softmax thresholding, calibrated to a target accuracy (model-agnostic, NumPy in and out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .data import IGNORE_INDEX


@dataclass
class Threshold:
    """A calibrated threshold and what it achieved on the calibration split.

    ``threshold > 1`` means the target was unreachable: the task abstains on every report (coverage 0).
    """

    threshold: float
    coverage: float
    accuracy: float | None
    n: int
    target_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


def _valid(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}.")
    bad = ~np.isfinite(probs).all(1)
    if bad.any():
        rows = np.flatnonzero(bad)[:10].tolist()
        raise ValueError(f"probabilities contain NaN or inf in rows {rows} ({int(bad.sum())} rows in all).")
    keep = labels != IGNORE_INDEX
    return probs[keep], labels[keep]


def selective_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Coverage (fraction of reports not abstained) and accuracy on the accepted ones.

    Args:
        probs: ``(N, C)`` class probabilities.
        labels: ``(N,)`` true class ids; ``-100`` rows are left out.
        threshold: Accept a prediction when its max probability is ``>= threshold``.
    """
    probs, labels = _valid(probs, labels)
    conf, pred = probs.max(1), probs.argmax(1)
    accepted = conf >= threshold
    n_acc = int(accepted.sum())
    return {
        "accuracy": float((pred == labels).mean()) if len(labels) else None,
        "coverage": n_acc / len(labels) if len(labels) else 0.0,
        "selective_accuracy": float((pred[accepted] == labels[accepted]).mean()) if n_acc else None,
        "n": len(labels),
    }


def empirical_threshold(probs: np.ndarray, labels: np.ndarray, target_accuracy: float = 0.97) -> Threshold:
    """The smallest softmax threshold whose accepted predictions reach ``target_accuracy`` (maximal coverage).

    Args:
        probs: ``(N, C)`` calibration-split probabilities.
        labels: ``(N,)`` calibration labels (``-100`` rows are left out).
        target_accuracy: Required accuracy on accepted reports, in ``(0, 1]``.
    """
    if not 0 < target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}.")
    probs, labels = _valid(probs, labels)
    n = len(labels)
    if n == 0:
        return Threshold(float("inf"), 0.0, None, 0, target_accuracy)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    cum_acc = np.cumsum(correct) / np.arange(1, n + 1)
    # a threshold at conf[k] accepts every report with conf >= conf[k]: the last index of each tie group
    last_of_group = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(last_of_group & (cum_acc >= target_accuracy - 1e-12))
    if len(ok) == 0:
        return Threshold(float(np.nextafter(1.0, 2.0)), 0.0, None, n, target_accuracy)
    k = ok[-1]
    return Threshold(float(conf[k]), (k + 1) / n, float(cum_acc[k]), n, target_accuracy)


def calibrate_thresholds(
    probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], target_accuracy: float = 0.97
) -> dict[str, Threshold]:
    """Per-task :func:`empirical_threshold`."""
    return {t: empirical_threshold(probs[t], labels[t], target_accuracy) for t in probs}
