"""Learn-then-Test thresholds (Angelopoulos et al., 2021).

For each threshold of a fixed grid, the null hypothesis "accuracy on accepted reports < target" is tested with a
binomial (or Hoeffding–Bentkus) p-value on the accepted calibration reports, and the grid is walked from the most to
the least conservative threshold by fixed-sequence testing (or Bonferroni). The returned threshold satisfies
``P(accuracy on accepted reports >= target) >= 1 - delta`` over draws of the calibration split — the guarantee of
MAPIE's ``BinaryClassificationController`` with a precision risk.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from .empirical import ABSTAIN_ALL, Threshold, check_target
from .metrics import confidence_and_correct

P_VALUES = ("binomial", "hoeffding_bentkus")
FWER_METHODS = ("fixed_sequence", "bonferroni")


def default_grid() -> np.ndarray:
    """Candidate LTT thresholds, fixed before seeing data, from the most to the least conservative.

    Steps of 0.001 over ``[0, 1]`` plus log-spaced points between ``1 - 1e-3`` and ``1 - 1e-7`` (confident models put
    most reports there).
    """
    grid = np.unique(np.r_[np.linspace(0.0, 1.0, 1001), 1.0 - np.logspace(-7, -3, 81)])
    return grid[::-1].copy()


def binomial_p_value(errors: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """Exact p-value of "error rate > alpha" given ``errors`` in ``n`` trials: ``P(Bin(n, alpha) <= errors)``.

    ``n == 0`` gives 1 (nothing to test). For 0/1 losses this equals MAPIE's binary Hoeffding–Bentkus p-value.

    Args:
        errors: Observed errors.
        n: Trials (accepted reports).
        alpha: Error level under test (``1 - target_accuracy``).
    """
    from scipy.stats import binom

    errors, n = np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64)
    p = binom.cdf(errors, np.maximum(n, 1), alpha)
    return np.where(n > 0, np.minimum(p, 1.0), 1.0)


def hoeffding_bentkus_p_value(errors: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """Hoeffding–Bentkus p-value of "mean loss > alpha" (LTT paper, Prop. 3.5), valid for any loss in [0, 1].

    ``min(exp(-n h(min(r, alpha), alpha)), e * P(Bin(n, alpha) <= ceil(n r)))`` with ``r = errors / n``, ``h`` the
    Bernoulli KL divergence; ``n == 0`` gives 1. Matches MAPIE's ``compute_hoeffding_bentkus_p_value``.

    Args:
        errors: Sum of losses.
        n: Number of losses.
        alpha: Level under test.
    """
    from scipy.stats import binom

    errors, n = np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64)
    safe_n = np.maximum(n, 1)
    r = np.minimum(errors / safe_n, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(r > 0, r * np.log(r / alpha), 0.0) + (1 - r) * np.log((1 - r) / (1 - alpha))
    hoeffding = np.exp(-safe_n * kl)
    bentkus = math.e * binom.cdf(np.ceil(errors), safe_n, alpha)
    return np.where(n > 0, np.minimum(np.minimum(hoeffding, bentkus), 1.0), 1.0)


def ltt_p_values(
    conf: np.ndarray, correct: np.ndarray, grid: np.ndarray, alpha: float, p_value: str = "binomial"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P-values of "error rate on reports accepted at threshold λ > alpha" for each λ of ``grid``.

    Args:
        conf: ``(N,)`` confidences of the calibration reports.
        correct: ``(N,)`` correctness.
        grid: Thresholds λ.
        alpha: Error level, ``1 - target_accuracy``.
        p_value: ``"binomial"`` (exact, for 0/1 losses) or ``"hoeffding_bentkus"``.

    Returns:
        p-values, accepted counts and error counts, each ``(len(grid),)``.
    """
    if p_value not in P_VALUES:
        raise ValueError(f"p_value must be one of {P_VALUES}, got {p_value!r}.")
    conf, wrong = np.asarray(conf, dtype=np.float64), ~np.asarray(correct, dtype=bool)
    order = np.argsort(conf, kind="stable")
    conf, wrong = conf[order], wrong[order]
    start = np.searchsorted(conf, np.asarray(grid, dtype=np.float64), side="left")  # first accepted index
    suffix_errors = np.r_[np.cumsum(wrong[::-1])[::-1], 0]
    n_acc, errors = len(conf) - start, suffix_errors[start]
    fn = binomial_p_value if p_value == "binomial" else hoeffding_bentkus_p_value
    return fn(errors, n_acc, alpha), n_acc, errors


def min_testable(alpha: float, delta: float, p_value: str = "binomial", *, error_rate: float = 0.0) -> int:
    """Fewest accepted reports at which an observed ``error_rate`` rejects "error rate > alpha" at level ``delta``.

    Args:
        alpha: Error level under test.
        delta: Test level.
        p_value: ``"binomial"`` or ``"hoeffding_bentkus"``.
        error_rate: Observed error rate (0: an error-free sample), below ``alpha``.
    """
    return _min_testable(float(alpha), float(delta), p_value, float(error_rate))


@functools.lru_cache(maxsize=64)
def _min_testable(alpha: float, delta: float, p_value: str, error_rate: float) -> int:
    fn = binomial_p_value if p_value == "binomial" else hoeffding_bentkus_p_value
    n = np.arange(1, 200_001)
    ok = np.flatnonzero(fn(np.floor(n * error_rate), n, alpha) <= delta)
    return int(n[ok[0]]) if len(ok) else int(n[-1])


def fixed_sequence_test(p_values: np.ndarray, delta: float) -> np.ndarray:
    """Fixed-sequence testing: reject hypotheses in the given order while ``p <= delta``; returns rejected indices.

    Controls the family-wise error rate at ``delta`` for any order fixed independently of the p-values' data.
    """
    p_values = np.asarray(p_values)
    failed = np.flatnonzero(p_values > delta)
    return np.arange(failed[0] if len(failed) else len(p_values))


def ltt_threshold_from_scores(
    conf: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float = 0.97,
    delta: float = 0.1,
    *,
    p_value: str = "binomial",
    fwer: str = "fixed_sequence",
    grid: Sequence[float] | np.ndarray | None = None,
    min_accepted: int | None = None,
    n_missing: int = 0,
) -> Threshold:
    """:func:`ltt_threshold` on precomputed confidences and correctness (e.g. report-level joint scores).

    Args:
        conf: ``(N,)`` confidence of each labelled calibration report.
        correct: ``(N,)`` whether its prediction is right.
        target_accuracy: Required accuracy on accepted reports, in ``(0, 1]``.
        delta: The target holds with probability at least ``1 - delta`` over calibration draws.
        p_value: ``"binomial"`` (exact; default) or ``"hoeffding_bentkus"`` (MAPIE's non-binary p-value).
        fwer: ``"fixed_sequence"`` (walk the grid from high to low thresholds, stop at the first non-rejection) or
            ``"bonferroni"`` (test every threshold at ``delta / len(grid)``).
        grid: Candidate thresholds, fixed in advance (default :func:`default_grid`); any order, they are tested from
            the highest down.
        min_accepted: Fixed-sequence only: thresholds accepting fewer calibration reports are not tested (as in
            Angelopoulos & Bates' selective-classification example), so the sequence does not stop on thresholds
            that accept too few reports to ever reject. Default: the count at which an error rate of half the
            allowed one would be rejected (:func:`min_testable` at ``alpha / 2``), at most half the reports.
        n_missing: Reports left out for missing labels (recorded in the result).
    """
    check_target(target_accuracy, delta)
    if fwer not in FWER_METHODS:
        raise ValueError(f"fwer must be one of {FWER_METHODS}, got {fwer!r}.")
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)
    n = len(conf)
    grid = default_grid() if grid is None else np.sort(np.asarray(grid, dtype=np.float64))[::-1]
    alpha = 1.0 - target_accuracy
    result = Threshold(ABSTAIN_ALL, 0.0, None, n, target_accuracy, "ltt", delta, n_missing)
    if n == 0 or alpha <= 0:  # a 100% target can never be certified from a finite sample
        return result
    p, n_acc, errors = ltt_p_values(conf, correct, grid, alpha, p_value)
    if fwer == "bonferroni":
        rejected = np.flatnonzero(p <= delta / len(grid))
    else:
        if min_accepted is None:
            min_accepted = min(min_testable(alpha, delta, p_value, error_rate=alpha / 2), max(n // 2, 1))
        tested = np.flatnonzero(n_acc >= max(min_accepted, 1))  # a suffix of the descending grid
        rejected = tested[fixed_sequence_test(p[tested], delta)]
    if len(rejected) == 0:
        return result
    best = rejected[np.argmax(n_acc[rejected])]  # maximal coverage among certified thresholds
    k, e = int(n_acc[best]), int(errors[best])
    return Threshold(float(grid[best]), k / n, 1.0 - e / k, n, target_accuracy, "ltt", delta, n_missing)


def ltt_threshold(
    probs: np.ndarray,
    labels: np.ndarray,
    target_accuracy: float = 0.97,
    delta: float = 0.1,
    **kwargs,
) -> Threshold:
    """Learn-then-Test threshold: accuracy on accepted reports ``>= target`` with probability ``>= 1 - delta``.

    Args:
        probs: ``(N, C)`` calibration-split probabilities (from a model not fitted on these reports).
        labels: ``(N,)`` calibration labels (``-100`` rows are left out and counted).
        target_accuracy: Required accuracy on accepted reports, in ``(0, 1]``.
        delta: Allowed probability that the guarantee fails, in ``(0, 1)``.
        **kwargs: ``p_value``, ``fwer``, ``grid``, ``min_accepted`` (see :func:`ltt_threshold_from_scores`).
    """
    check_target(target_accuracy, delta)
    conf, correct, n_missing = confidence_and_correct(probs, labels)
    return ltt_threshold_from_scores(conf, correct, target_accuracy, delta, n_missing=n_missing, **kwargs)


__all__ = [
    "FWER_METHODS",
    "P_VALUES",
    "binomial_p_value",
    "default_grid",
    "fixed_sequence_test",
    "hoeffding_bentkus_p_value",
    "ltt_p_values",
    "ltt_threshold",
    "ltt_threshold_from_scores",
    "min_testable",
]
