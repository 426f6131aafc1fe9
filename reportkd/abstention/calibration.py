"""The whole calibration step: every task's threshold (per task or jointly), optionally after temperature scaling.

Either method (``empirical``: :mod:`reportkd.abstention.empirical`; ``ltt``: :mod:`reportkd.abstention.ltt`) runs per
task, or jointly (``mode="joint"``): a report is auto-coded only when every task is accepted, and the target applies
to the joint accuracy (every task right). :func:`calibrate` runs the whole step, with optional temperature scaling
fitted on a held-out part of the calibration split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..data import IGNORE_INDEX
from .empirical import Threshold, check_target, empirical_threshold, empirical_threshold_from_scores
from .ltt import ltt_threshold, ltt_threshold_from_scores
from .metrics import apply_temperature, check_probs, fit_temperature, joint_confidence_and_correct

METHODS = ("empirical", "ltt")
MODES = ("per-task", "joint")


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
    check_target(target_accuracy, delta if method == "ltt" else None)
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


def coverage_at_targets(
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    targets: tuple[float, ...],
    *,
    delta: float = 0.1,
) -> dict[str, dict[str, float | bool | None]]:
    """Per target and method, thresholds from the calibration split applied to the test split (one task).

    Args:
        cal_probs: Calibration probabilities, ``(n, classes)``.
        cal_labels: Calibration class ids (``-100`` missing).
        test_probs: Test probabilities.
        test_labels: Test class ids (``-100`` missing).
        targets: Target accuracies.
        delta: LTT risk level.

    Returns:
        ``{"empirical@0.97": {"coverage", "accuracy", "met"}, "ltt@0.97": {...}, ...}``: test coverage, accuracy on
        accepted reports and whether it reaches the target (None when nothing is accepted).
    """
    from .empirical import selective_metrics

    out: dict[str, dict[str, float | bool | None]] = {}
    for target in targets:
        for method in METHODS:
            if method == "ltt":
                thr = ltt_threshold(cal_probs, cal_labels, target, delta)
            else:
                thr = empirical_threshold(cal_probs, cal_labels, target)
            m = selective_metrics(test_probs, test_labels, thr.threshold)
            acc = m["selective_accuracy"]
            out[f"{method}@{target:.2f}"] = {
                "coverage": m["coverage"],
                "accuracy": acc,
                "met": None if acc is None else acc >= target,
            }
    return out


__all__ = [
    "METHODS",
    "MODES",
    "Calibration",
    "apply_thresholds",
    "calibrate",
    "calibrate_thresholds",
    "coverage_at_targets",
]
