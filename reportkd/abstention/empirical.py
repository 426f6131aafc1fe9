"""The :class:`Threshold` result and the empirical threshold: the smallest one reaching the target accuracy.

What De Angeli et al. (JAMIA Open 2022) do: maximal coverage on the calibration split, no guarantee on new data
(see :mod:`reportkd.abstention.ltt` for one). ``ABSTAIN_ALL`` (a threshold just above 1) marks an unreachable target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .metrics import _valid, confidence_and_correct

ABSTAIN_ALL = float(np.nextafter(1.0, 2.0))  # a threshold no probability reaches: coverage 0


@dataclass
class Threshold:
    """A calibrated threshold and what it achieved on the calibration split.

    ``threshold > 1`` means the target was unreachable: the task abstains on every report (coverage 0).

    Args:
        threshold: Accept a prediction when its (max) probability is ``>= threshold``.
        coverage: Fraction of calibration reports accepted.
        accuracy: Accuracy on the accepted calibration reports (None when none is accepted).
        n: Calibration reports used (labelled ones).
        target_accuracy: The target the threshold was calibrated to.
        method: ``"empirical"`` or ``"ltt"``.
        delta: LTT risk level (the target holds with probability ``>= 1 - delta``); None for ``empirical``.
        n_missing: Calibration reports left out because their label was missing.
    """

    threshold: float
    coverage: float
    accuracy: float | None
    n: int
    target_accuracy: float
    method: str = "empirical"
    delta: float | None = None
    n_missing: int = 0

    @property
    def reached(self) -> bool:
        """False when the target was unreachable (the task abstains on every report)."""
        return self.coverage > 0

    def to_dict(self) -> dict:
        return asdict(self)


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


def check_target(target_accuracy: float, delta: float | None = None) -> None:
    """Raises ``ValueError`` unless ``target_accuracy`` is in ``(0, 1]`` and ``delta`` (when given) in ``(0, 1)``."""
    if not 0 < target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}.")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}.")


def empirical_threshold_from_scores(
    conf: np.ndarray, correct: np.ndarray, target_accuracy: float = 0.97, *, n_missing: int = 0
) -> Threshold:
    """:func:`empirical_threshold` on precomputed confidences and correctness (e.g. report-level joint scores).

    Args:
        conf: ``(N,)`` confidence of each labelled report.
        correct: ``(N,)`` whether its prediction is right.
        target_accuracy: Required accuracy on accepted reports, in ``(0, 1]``.
        n_missing: Reports left out for missing labels (recorded in the result).
    """
    check_target(target_accuracy)
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)
    n = len(conf)
    if n == 0:
        return Threshold(ABSTAIN_ALL, 0.0, None, 0, target_accuracy, n_missing=n_missing)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    cum_acc = np.cumsum(correct) / np.arange(1, n + 1)
    # a threshold at conf[k] accepts every report with conf >= conf[k]: the last index of each tie group
    last_of_group = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(last_of_group & (cum_acc >= target_accuracy - 1e-12))
    if len(ok) == 0:
        return Threshold(ABSTAIN_ALL, 0.0, None, n, target_accuracy, n_missing=n_missing)
    k = ok[-1]
    return Threshold(float(conf[k]), (k + 1) / n, float(cum_acc[k]), n, target_accuracy, n_missing=n_missing)


def empirical_threshold(probs: np.ndarray, labels: np.ndarray, target_accuracy: float = 0.97) -> Threshold:
    """The smallest softmax threshold whose accepted predictions reach ``target_accuracy`` (maximal coverage).

    Args:
        probs: ``(N, C)`` calibration-split probabilities.
        labels: ``(N,)`` calibration labels (``-100`` rows are left out).
        target_accuracy: Required accuracy on accepted reports, in ``(0, 1]``.
    """
    check_target(target_accuracy)
    conf, correct, n_missing = confidence_and_correct(probs, labels)
    return empirical_threshold_from_scores(conf, correct, target_accuracy, n_missing=n_missing)


__all__ = [
    "ABSTAIN_ALL",
    "Threshold",
    "check_target",
    "empirical_threshold",
    "empirical_threshold_from_scores",
    "selective_metrics",
]
