"""Abstention by softmax thresholding, calibrated to a target accuracy (model-agnostic, NumPy in and out).

Two ways to pick a task's threshold on a labelled calibration split:

* ``empirical`` (:func:`empirical_threshold`): the smallest threshold whose accepted calibration reports reach the
  target accuracy (maximal coverage). What De Angeli et al. (JAMIA Open 2022) do; no guarantee on new data.
* ``ltt`` (:func:`ltt_threshold`): Learn-then-Test (Angelopoulos et al., 2021). For each threshold of a fixed grid,
  the null hypothesis "accuracy on accepted reports < target" is tested with a binomial (or Hoeffding–Bentkus)
  p-value on the accepted calibration reports, and the grid is walked from the most to the least conservative
  threshold by fixed-sequence testing (or Bonferroni). The returned threshold satisfies
  ``P(accuracy on accepted reports >= target) >= 1 - delta`` over draws of the calibration split — the guarantee of
  MAPIE's ``BinaryClassificationController`` with a precision risk.

Either can run per task, or jointly (``mode="joint"``): a report is auto-coded only when every task is accepted, and
the target applies to the joint accuracy (every task right). :func:`calibrate` runs the whole step, with optional
temperature scaling fitted on a held-out part of the calibration split.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import IGNORE_INDEX
from .selective_metrics import (
    _valid,
    apply_temperature,
    check_probs,
    confidence_and_correct,
    fit_temperature,
    joint_confidence_and_correct,
)

METHODS = ("empirical", "ltt")
MODES = ("per-task", "joint")
P_VALUES = ("binomial", "hoeffding_bentkus")
FWER_METHODS = ("fixed_sequence", "bonferroni")
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


def _check_target(target_accuracy: float, delta: float | None = None) -> None:
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
    _check_target(target_accuracy)
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
    _check_target(target_accuracy)
    conf, correct, n_missing = confidence_and_correct(probs, labels)
    return empirical_threshold_from_scores(conf, correct, target_accuracy, n_missing=n_missing)


# ----------------------------------------------------------------------------------------------- Learn-then-Test


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
    _check_target(target_accuracy, delta)
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
    _check_target(target_accuracy, delta)
    conf, correct, n_missing = confidence_and_correct(probs, labels)
    return ltt_threshold_from_scores(conf, correct, target_accuracy, delta, n_missing=n_missing, **kwargs)


# -------------------------------------------------------------------------------------------------- whole step


@dataclass
class Calibration:
    """Thresholds of every task, how they were obtained and (joint mode) the report-level result.

    Args:
        tasks: Task → :class:`Threshold` (in joint mode: the shared threshold, and the task's accuracy and coverage
            among the reports accepted jointly).
        mode: ``"per-task"`` or ``"joint"``.
        method: ``"empirical"`` or ``"ltt"``.
        target_accuracy: Target accuracy (per task, or joint).
        delta: LTT risk level (None for ``empirical``).
        joint: Joint mode: the report-level threshold and its joint accuracy / coverage.
        temperatures: Task → temperature applied to the probabilities before thresholding (None: none).
        calibration_size: Reports the thresholds were calibrated on (after the temperature hold-out).
        temperature_size: Reports the temperatures were fitted on.
        settings: Extra LTT settings (p-value, FWER procedure, …).
    """

    tasks: dict[str, Threshold]
    mode: str
    method: str
    target_accuracy: float
    delta: float | None = None
    joint: Threshold | None = None
    temperatures: dict[str, float] | None = None
    calibration_size: int = 0
    temperature_size: int = 0
    settings: dict = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        """Task → threshold."""
        return {t: th.threshold for t, th in self.tasks.items()}


def calibrate_thresholds(
    probs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    target_accuracy: float = 0.97,
    *,
    method: str = "empirical",
    delta: float = 0.1,
    **ltt_kwargs,
) -> dict[str, Threshold]:
    """Per-task thresholds (:func:`empirical_threshold` or :func:`ltt_threshold`).

    Args:
        probs: Task → ``(N, C_t)`` probabilities.
        labels: Task → ``(N,)`` label ids (``-100`` = missing).
        target_accuracy: Required accuracy on accepted reports.
        method: ``"empirical"`` or ``"ltt"``.
        delta: LTT risk level.
        **ltt_kwargs: See :func:`ltt_threshold_from_scores`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "empirical":
        return {t: empirical_threshold(probs[t], labels[t], target_accuracy) for t in probs}
    return {t: ltt_threshold(probs[t], labels[t], target_accuracy, delta, **ltt_kwargs) for t in probs}


def apply_thresholds(
    probs: Mapping[str, np.ndarray], thresholds: Mapping[str, float], mode: str = "per-task"
) -> dict[str, np.ndarray]:
    """Task → ``(N,)`` accepted mask; in joint mode a report is accepted for every task or for none.

    Args:
        probs: Task → ``(N, C_t)`` probabilities.
        thresholds: Task → threshold.
        mode: ``"per-task"`` or ``"joint"``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    missing = [t for t in probs if t not in thresholds]
    if missing:
        raise ValueError(f"No threshold for task(s) {missing}; calibrate thresholds for every task of the model.")
    accepted = {t: check_probs(p, name=t).max(1) >= thresholds[t] for t, p in probs.items()}
    if mode == "joint":
        every = np.all(list(accepted.values()), axis=0)
        accepted = {t: every for t in accepted}
    return accepted


def calibrate(
    probs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    target_accuracy: float = 0.97,
    *,
    method: str = "empirical",
    delta: float = 0.1,
    mode: str = "per-task",
    temperature_scaling: bool = False,
    temperature_fraction: float = 0.3,
    seed: int = 0,
    **ltt_kwargs,
) -> Calibration:
    """Calibrates every task's threshold (per task or jointly), optionally after temperature scaling.

    With ``temperature_scaling`` a random ``temperature_fraction`` of the reports fits one temperature per task and
    is then left out of threshold calibration, so the LTT guarantee still holds (the thresholds are tested on reports
    the temperatures never saw). ``temperature_fraction=0`` fits on every report (no LTT guarantee).

    Args:
        probs: Task → ``(N, C_t)`` calibration probabilities (same rows for every task).
        labels: Task → ``(N,)`` label ids (``-100`` = missing: left out and counted).
        target_accuracy: Required accuracy on accepted reports (joint accuracy in joint mode).
        method: ``"empirical"`` or ``"ltt"``.
        delta: LTT risk level.
        mode: ``"per-task"`` or ``"joint"`` (a report is auto-coded only when every task is accepted).
        temperature_scaling: Fit a temperature per task before calibrating thresholds.
        temperature_fraction: Fraction of reports held out to fit the temperatures, in ``[0, 1)``.
        seed: Seed of the temperature hold-out split.
        **ltt_kwargs: See :func:`ltt_threshold_from_scores`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    _check_target(target_accuracy, delta if method == "ltt" else None)
    missing = [t for t in probs if t not in labels]
    if missing:
        raise ValueError(f"No labels for task(s) {missing}: the calibration data needs every task's label column.")
    probs = {t: check_probs(p, labels[t], name=t) for t, p in probs.items()}
    sizes = {len(p) for p in probs.values()}
    if len(sizes) != 1:
        raise ValueError(f"Every task needs the same rows; got row counts { {t: len(p) for t, p in probs.items()} }.")
    n = sizes.pop()
    labels = {t: np.asarray(labels[t]) for t in probs}
    temperatures, fit_rows = None, np.zeros(n, dtype=bool)
    if temperature_scaling:
        if not 0 <= temperature_fraction < 1:
            raise ValueError(f"temperature_fraction must be in [0, 1), got {temperature_fraction}.")
        if temperature_fraction > 0:
            fit_rows[np.random.default_rng(seed).permutation(n)[: round(temperature_fraction * n)]] = True
        on = fit_rows if fit_rows.any() else np.ones(n, dtype=bool)
        temperatures = {t: fit_temperature(probs[t][on], labels[t][on]) for t in probs}
        probs = {t: apply_temperature(p, temperatures[t]) for t, p in probs.items()}
    rest = ~fit_rows
    probs = {t: p[rest] for t, p in probs.items()}
    labels = {t: y[rest] for t, y in labels.items()}
    settings = {k: v for k, v in ltt_kwargs.items() if k != "grid"} if method == "ltt" else {}
    result = Calibration(
        {}, mode, method, target_accuracy, delta if method == "ltt" else None, None, temperatures,
        int(rest.sum()), int(fit_rows.sum()), settings,
    )  # fmt: skip
    if mode == "per-task":
        result.tasks = calibrate_thresholds(probs, labels, target_accuracy, method=method, delta=delta, **ltt_kwargs)
        return result
    conf, correct, n_missing = joint_confidence_and_correct(probs, labels)
    if method == "empirical":
        joint = empirical_threshold_from_scores(conf, correct, target_accuracy, n_missing=n_missing)
    else:
        joint = ltt_threshold_from_scores(conf, correct, target_accuracy, delta, n_missing=n_missing, **ltt_kwargs)
    result.joint = joint
    accepted = apply_thresholds(probs, {t: joint.threshold for t in probs}, "joint")
    for t in probs:
        has = labels[t] != IGNORE_INDEX
        acc = accepted[t] & has
        k = int(acc.sum())
        right = int((probs[t].argmax(1)[acc] == labels[t][acc]).sum())
        result.tasks[t] = Threshold(
            joint.threshold, k / max(int(has.sum()), 1), right / k if k else None, int(has.sum()), target_accuracy,
            method, result.delta, int((~has).sum()),
        )  # fmt: skip
    return result


__all__ = [
    "ABSTAIN_ALL",
    "Calibration",
    "Threshold",
    "apply_temperature",
    "apply_thresholds",
    "binomial_p_value",
    "calibrate",
    "calibrate_thresholds",
    "check_probs",
    "confidence_and_correct",
    "default_grid",
    "empirical_threshold",
    "empirical_threshold_from_scores",
    "fit_temperature",
    "fixed_sequence_test",
    "hoeffding_bentkus_p_value",
    "joint_confidence_and_correct",
    "ltt_p_values",
    "ltt_threshold",
    "ltt_threshold_from_scores",
    "min_testable",
    "selective_metrics",
]
