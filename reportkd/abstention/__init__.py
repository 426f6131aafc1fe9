"""Abstention by softmax thresholding, calibrated to a target accuracy (model-agnostic, NumPy in and out).

One subpackage, one module per concern (every public name is re-exported here, so
``from reportkd.abstention import calibrate, write_thresholds`` is all a caller needs):

* :mod:`~reportkd.abstention.empirical` — :class:`Threshold` and the empirical threshold (smallest one reaching the
  target on the calibration split; what De Angeli et al., JAMIA Open 2022, do).
* :mod:`~reportkd.abstention.ltt` — Learn-then-Test thresholds: accuracy on accepted reports ``>= target`` with
  probability ``>= 1 - delta`` (Angelopoulos et al., 2021).
* :mod:`~reportkd.abstention.calibration` — :func:`calibrate`: every task per task or jointly, optional temperature
  scaling; :func:`apply_thresholds`.
* :mod:`~reportkd.abstention.metrics` — risk–coverage, AURC, ECE, NLL, Brier, temperature scaling, probability checks.
* :mod:`~reportkd.abstention.thresholds` — the versioned ``thresholds.json`` file and what binds it to a model.
* :mod:`~reportkd.abstention.predictions` — saved per-task probabilities (``--predictions FILE``).
* :mod:`~reportkd.abstention.plots` — risk–coverage and reliability PNGs.
"""

from .calibration import (
    METHODS,
    MODES,
    Calibration,
    apply_thresholds,
    calibrate,
    calibrate_thresholds,
    coverage_at_targets,
)
from .empirical import ABSTAIN_ALL, Threshold, empirical_threshold, empirical_threshold_from_scores, selective_metrics
from .ltt import (
    FWER_METHODS,
    P_VALUES,
    binomial_p_value,
    default_grid,
    fixed_sequence_test,
    hoeffding_bentkus_p_value,
    ltt_p_values,
    ltt_threshold,
    ltt_threshold_from_scores,
    min_testable,
)
from .metrics import (
    ReliabilityBins,
    RiskCoverage,
    apply_temperature,
    aurc,
    brier_score,
    check_probs,
    confidence_and_correct,
    excess_aurc,
    expected_calibration_error,
    fit_temperature,
    joint_confidence_and_correct,
    joint_report,
    negative_log_likelihood,
    probability_problems,
    reliability_bins,
    reliability_from_scores,
    risk_coverage_curve,
    risk_coverage_from_scores,
    selective_report,
)
from .plots import plot_reliability, plot_risk_coverage
from .predictions import PREDICTIONS_FORMAT, Predictions, load_predictions, save_predictions
from .thresholds import (
    THRESHOLDS_FORMAT,
    THRESHOLDS_NAME,
    ThresholdsFile,
    read_thresholds,
    thresholds_from_dict,
    thresholds_to_dict,
    weights_fingerprint,
    write_thresholds,
)

__all__ = [
    "ABSTAIN_ALL",
    "FWER_METHODS",
    "METHODS",
    "MODES",
    "PREDICTIONS_FORMAT",
    "P_VALUES",
    "THRESHOLDS_FORMAT",
    "THRESHOLDS_NAME",
    "Calibration",
    "Predictions",
    "ReliabilityBins",
    "RiskCoverage",
    "Threshold",
    "ThresholdsFile",
    "apply_temperature",
    "apply_thresholds",
    "aurc",
    "binomial_p_value",
    "brier_score",
    "calibrate",
    "calibrate_thresholds",
    "coverage_at_targets",
    "check_probs",
    "confidence_and_correct",
    "default_grid",
    "empirical_threshold",
    "empirical_threshold_from_scores",
    "excess_aurc",
    "expected_calibration_error",
    "fit_temperature",
    "fixed_sequence_test",
    "hoeffding_bentkus_p_value",
    "joint_confidence_and_correct",
    "joint_report",
    "load_predictions",
    "ltt_p_values",
    "ltt_threshold",
    "ltt_threshold_from_scores",
    "min_testable",
    "negative_log_likelihood",
    "plot_reliability",
    "plot_risk_coverage",
    "probability_problems",
    "read_thresholds",
    "reliability_bins",
    "reliability_from_scores",
    "risk_coverage_curve",
    "risk_coverage_from_scores",
    "save_predictions",
    "selective_metrics",
    "selective_report",
    "thresholds_from_dict",
    "thresholds_to_dict",
    "weights_fingerprint",
    "write_thresholds",
]
