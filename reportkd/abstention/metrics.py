"""Selective-classification and calibration metrics on per-task probability arrays (NumPy in, floats out).

Risk–coverage curve and its area (AURC, Geifman et al. 2019), top-label expected calibration error with its
reliability-diagram bins, negative log-likelihood and multiclass Brier score; temperature scaling (Guo et al. 2017)
and the confidence / correctness scores the abstention thresholds are computed from. Rows with a missing label
(``-100``) are left out everywhere; probabilities that are NaN, inf, outside ``[0, 1]`` or whose rows do not sum to
1 raise, naming the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..data import IGNORE_INDEX

PROB_ATOL = 1e-6  # how far outside [0, 1] a probability may stray (float rounding)
SUM_ATOL = 1e-3  # how far from 1 a row of probabilities may sum (float32 softmax outputs)


def probability_problems(probs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """What is wrong with a ``(N, C)`` probability array: ``(problem, bad row indices)`` pairs, empty when valid.

    Checked in order: NaN or inf; values outside ``[0, 1]`` (``PROB_ATOL`` slack); rows not summing to 1
    (``SUM_ATOL`` slack). Rows with NaN or inf are not checked further.

    Args:
        probs: ``(N, C)`` float array.
    """
    finite = np.isfinite(probs).all(1)
    out = []
    if not finite.all():
        out.append(("contain NaN or inf", np.flatnonzero(~finite)))
    safe = np.where(finite[:, None], probs, 0.5)
    outside = finite & ((safe < -PROB_ATOL) | (safe > 1 + PROB_ATOL)).any(1)
    if outside.any():
        out.append(("lie outside [0, 1]", np.flatnonzero(outside)))
    if probs.shape[1]:
        off = finite & ~outside & (np.abs(safe.sum(1) - 1.0) > SUM_ATOL)
        if off.any():
            out.append((f"do not sum to 1 (within {SUM_ATOL:g})", np.flatnonzero(off)))
    return out


def check_probs(probs: np.ndarray, labels: np.ndarray | None = None, *, name: str = "probs") -> np.ndarray:
    """``probs`` as a float64 ``(N, C)`` array of probabilities; raises naming the rows when some are invalid.

    Each row must be finite, within ``[0, 1]`` and sum to 1 (see :func:`probability_problems`): logits, percentages
    or unnormalised scores are refused rather than silently thresholded.

    Args:
        probs: ``(N, C)`` class probabilities.
        labels: Optional ``(N,)`` labels whose shape is checked against ``probs``.
        name: What to call the array in error messages (e.g. the task).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"{name} must be a (N, C) array of class probabilities, got shape {probs.shape}.")
    if labels is not None and np.shape(labels) != probs.shape[:1]:
        raise ValueError(f"{name} has {probs.shape[0]} rows but its labels have shape {np.shape(labels)}.")
    problems = probability_problems(probs)
    if problems:
        what, bad = problems[0]
        raise ValueError(
            f"{name}: probabilities {what} in rows {bad[:10].tolist()} ({len(bad)} rows in all); "
            "give softmax probabilities (not logits or percentages), or fix or drop those reports."
        )
    return probs


def _valid(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checked probabilities and labels with the missing-label (``-100``) rows left out."""
    labels = np.asarray(labels)
    probs = check_probs(probs, labels)
    keep = labels != IGNORE_INDEX
    return probs[keep], labels[keep]


def confidence_and_correct(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Max probability and correctness of each labelled report, and the number of missing-label rows left out.

    Args:
        probs: ``(N, C)`` class probabilities.
        labels: ``(N,)`` true class ids; ``-100`` rows are left out.
    """
    kept_probs, kept_labels = _valid(probs, labels)
    return kept_probs.max(1), kept_probs.argmax(1) == kept_labels, len(labels) - len(kept_labels)


def joint_confidence_and_correct(
    probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Report-level scores: min over tasks of the max probability, and "every task right".

    Reports missing the label of any task are left out (their number is returned third).

    Args:
        probs: Task → ``(N, C_t)`` probabilities.
        labels: Task → ``(N,)`` label ids (``-100`` = missing).
    """
    tasks = list(probs)
    if not tasks:
        raise ValueError("No tasks given.")
    missing_labels = [t for t in tasks if t not in labels]
    if missing_labels:
        raise ValueError(f"Joint calibration needs labels for every task; none for {missing_labels}.")
    checked = {t: check_probs(probs[t], labels[t], name=t) for t in tasks}
    sizes = {t: len(p) for t, p in checked.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Tasks have different numbers of rows: {sizes}.")
    keep = np.all([np.asarray(labels[t]) != IGNORE_INDEX for t in tasks], axis=0)
    conf = np.min([checked[t].max(1) for t in tasks], axis=0)
    correct = np.all([checked[t].argmax(1) == np.asarray(labels[t]) for t in tasks], axis=0)
    return conf[keep], correct[keep], int((~keep).sum())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)``: the same as dividing the logits by ``T`` (log-softmax differs by a constant)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)) / temperature
    logp -= logp.max(1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (Guo et al., 2017).

    Args:
        probs: ``(N, C)`` probabilities (the model's, at temperature 1).
        labels: ``(N,)`` labels; ``-100`` rows are left out. Without labelled rows the result is 1.
        bounds: Search interval for ``T``.
    """
    from scipy.optimize import minimize_scalar

    probs, labels = _valid(probs, labels)
    if len(labels) == 0:
        return 1.0
    logp = np.log(np.clip(probs, 1e-300, None))

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))).mean())

    res = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded")
    return float(math.exp(res.x))


@dataclass
class RiskCoverage:
    """A risk–coverage curve: accepting the ``k`` most confident reports, for every distinct confidence.

    Args:
        coverage: ``(K,)`` fraction of reports accepted, increasing.
        risk: ``(K,)`` error rate on the accepted reports.
        thresholds: ``(K,)`` confidence threshold giving each point, decreasing.
    """

    coverage: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray

    @property
    def aurc(self) -> float:
        """Area under the curve (the mean selective risk over every coverage ``k / n``); NaN without reports."""
        return _area(self.coverage, self.risk)


def _area(coverage: np.ndarray, risk: np.ndarray) -> float:
    if len(coverage) == 0:
        return float("nan")
    # step function: the risk at tie-group ends, over the coverage added by the group
    widths = np.diff(np.r_[0.0, coverage])
    return float((widths * risk).sum())


def risk_coverage_from_scores(conf: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """:func:`risk_coverage_curve` on precomputed confidences and correctness.

    Args:
        conf: ``(N,)`` confidences.
        correct: ``(N,)`` correctness.
    """
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)
    n = len(conf)
    if n == 0:
        return RiskCoverage(np.zeros(0), np.zeros(0), np.zeros(0))
    order = np.argsort(-conf, kind="stable")
    conf, wrong = conf[order], ~correct[order]
    ends = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])  # ties are accepted together
    k = ends + 1
    return RiskCoverage(k / n, np.cumsum(wrong)[ends] / k, conf[ends])


def risk_coverage_curve(probs: np.ndarray, labels: np.ndarray) -> RiskCoverage:
    """Risk (error rate) on accepted reports against coverage, thresholding the max probability.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
    """
    probs, labels = _valid(probs, labels)
    return risk_coverage_from_scores(probs.max(1), probs.argmax(1) == labels)


def aurc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Area under the risk–coverage curve (lower is better; ``0`` for a perfect model).

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
    """
    return risk_coverage_curve(probs, labels).aurc


def excess_aurc(probs: np.ndarray, labels: np.ndarray) -> float:
    """AURC minus that of an oracle ranking of the same predictions (E-AURC): the cost of the ranking alone.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
    """
    probs, labels = _valid(probs, labels)
    correct = probs.argmax(1) == labels
    if len(correct) == 0:
        return float("nan")
    n, n_right = len(correct), int(correct.sum())
    k = np.arange(n_right + 1, n + 1)  # the oracle accepts every right prediction first
    oracle = float(((k - n_right) / k).sum() / n)
    return aurc(probs, labels) - oracle


@dataclass
class ReliabilityBins:
    """Top-label reliability diagram: equal-width confidence bins.

    Args:
        edges: ``(B + 1,)`` bin edges over ``[0, 1]``.
        confidence: ``(B,)`` mean confidence per bin (NaN for an empty bin).
        accuracy: ``(B,)`` accuracy per bin (NaN for an empty bin).
        count: ``(B,)`` reports per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_b n_b / n * |acc_b - conf_b|``; NaN without reports."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        used = self.count > 0
        return float((self.count[used] / n * np.abs(self.accuracy[used] - self.confidence[used])).sum())


def reliability_from_scores(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """:func:`reliability_bins` on precomputed confidences and correctness."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins are (lo, hi]; a confidence of exactly 0 goes to the first bin
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(edges, confidence, accuracy, count)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Reliability-diagram bins of the top-label confidence.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
        n_bins: Equal-width bins over ``[0, 1]``.
    """
    probs, labels = _valid(probs, labels)
    return reliability_from_scores(probs.max(1), probs.argmax(1) == labels, n_bins)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (Guo et al., 2017).

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
        n_bins: Equal-width bins over ``[0, 1]``.
    """
    return reliability_bins(probs, labels, n_bins).ece


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean ``-log p(label)`` (probabilities clipped at ``eps``); NaN without labelled rows.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
        eps: Floor on the probability of the true class.
    """
    probs, labels = _valid(probs, labels)
    if len(labels) == 0:
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None)).mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean over reports of ``sum_c (p_c - 1[c = label])^2`` (in ``[0, 2]``).

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` rows are left out).
    """
    probs, labels = _valid(probs, labels)
    if len(labels) == 0:
        return float("nan")
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean())


def _rate(mask: np.ndarray, of: np.ndarray | None = None) -> float | None:
    if of is None:
        return float(mask.mean()) if len(mask) else None
    return float(mask[of].mean()) if of.any() else None


def selective_report(
    probs: np.ndarray, labels: np.ndarray, accepted: np.ndarray | None = None, *, n_bins: int = 15
) -> dict[str, float | int | None]:
    """Every metric of one task: accuracy, coverage and selective accuracy (given the accepted mask), AURC, E-AURC,
    ECE, NLL and Brier, with the counts of labelled and missing-label rows.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` labels (``-100`` = missing).
        accepted: ``(N,)`` accepted mask from the thresholds (None: coverage metrics are left out).
        n_bins: ECE bins.
    """
    labels = np.asarray(labels)
    has = labels != IGNORE_INDEX
    kept_probs, kept_labels = _valid(probs, labels)
    correct = kept_probs.argmax(1) == kept_labels
    out: dict[str, float | int | None] = {"n": int(has.sum()), "n_missing": int((~has).sum())}
    out["accuracy"] = _rate(correct)
    if accepted is not None:
        acc = np.asarray(accepted, dtype=bool)[has]
        out["coverage"] = _rate(acc) if len(acc) else 0.0
        out["selective_accuracy"] = _rate(correct, acc)
        out["accepted"] = int(acc.sum())
    out["aurc"] = aurc(kept_probs, kept_labels)
    out["e_aurc"] = excess_aurc(kept_probs, kept_labels)
    out["ece"] = expected_calibration_error(kept_probs, kept_labels, n_bins)
    out["nll"] = negative_log_likelihood(kept_probs, kept_labels)
    out["brier"] = brier_score(kept_probs, kept_labels)
    return out


def joint_report(
    probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], accepted: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """Report-level metrics: a report is right when every task is; confidence is the minimum over tasks.

    Reports missing any task's label are left out (``n_missing``).

    Args:
        probs: Task → ``(N, C_t)`` probabilities.
        labels: Task → ``(N,)`` labels.
        accepted: ``(N,)`` report-level accepted mask (None: coverage metrics are left out).
    """
    conf, correct, n_missing = joint_confidence_and_correct(probs, labels)
    out: dict[str, float | int | None] = {"n": len(conf), "n_missing": n_missing, "accuracy": _rate(correct)}
    if accepted is not None:
        has = np.all([np.asarray(labels[t]) != IGNORE_INDEX for t in probs], axis=0)
        acc = np.asarray(accepted, dtype=bool)[has]
        out["coverage"] = _rate(acc) if len(acc) else 0.0
        out["selective_accuracy"] = _rate(correct, acc)
        out["accepted"] = int(acc.sum())
    out["aurc"] = risk_coverage_from_scores(conf, correct).aurc
    return out


__all__ = [
    "PROB_ATOL",
    "SUM_ATOL",
    "ReliabilityBins",
    "apply_temperature",
    "check_probs",
    "confidence_and_correct",
    "fit_temperature",
    "joint_confidence_and_correct",
    "RiskCoverage",
    "aurc",
    "brier_score",
    "excess_aurc",
    "expected_calibration_error",
    "joint_report",
    "negative_log_likelihood",
    "probability_problems",
    "reliability_bins",
    "reliability_from_scores",
    "risk_coverage_curve",
    "risk_coverage_from_scores",
    "selective_report",
]
