"""Learn-then-Test thresholds, joint mode and temperature scaling (reportkd.abstention)."""

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom

from reportkd.abstention import (
    ABSTAIN_ALL,
    apply_temperature,
    apply_thresholds,
    binomial_p_value,
    calibrate,
    default_grid,
    empirical_threshold,
    empirical_threshold_from_scores,
    fit_temperature,
    fixed_sequence_test,
    hoeffding_bentkus_p_value,
    ltt_p_values,
    ltt_threshold,
    ltt_threshold_from_scores,
    selective_metrics,
)

# A known distribution: confidence C ~ Beta(A, 1), P(correct | C) = C. Selective accuracy at threshold l is
# E[C | C >= l] = A / (A + 1) * (1 - l^(A+1)) / (1 - l^A), coverage 1 - l^A.
A = 30.0


def true_selective_accuracy(threshold: float) -> float:
    if threshold > 1:
        return 1.0  # abstains on everything: nothing wrong is accepted
    lam = min(threshold, 1 - 1e-9)
    return A / (A + 1) * (1 - lam ** (A + 1)) / (1 - lam**A)


def draw(rng, n):
    conf = rng.beta(A, 1, n)
    return conf, rng.uniform(size=n) < conf


def as_probs(conf, correct):
    """Two-class probabilities whose max is ``conf``, labels right when ``correct``."""
    probs = np.stack([conf, 1 - conf], 1)
    return probs, np.where(correct, 0, 1)


def test_p_values_match_their_definitions():
    errors, n = np.array([0, 3, 10, 5]), np.array([100, 200, 150, 0])
    p = binomial_p_value(errors, n, 0.05)
    np.testing.assert_allclose(p[:3], binom.cdf(errors[:3], n[:3], 0.05))
    assert p[3] == 1.0
    hb = hoeffding_bentkus_p_value(errors, n, 0.05)
    assert (hb >= p - 1e-12).all() and hb[3] == 1.0
    # observed rate above alpha: Hoeffding term is exp(0) = 1, Bentkus e * cdf — never below the binomial
    assert hoeffding_bentkus_p_value(np.array([20]), np.array([100]), 0.05)[0] == pytest.approx(1.0)


def test_p_values_agree_with_mapie():
    methods = pytest.importorskip("mapie.risk_control.methods")
    rng = np.random.default_rng(0)
    n = rng.integers(1, 500, 50)
    errors = rng.binomial(n, 0.04)
    for binary in (True, False):
        # MAPIE takes the error rate and rounds n * rate up; nudge it so float error cannot add one error
        theirs = methods.compute_hoeffding_bentkus_p_value(np.maximum(errors - 1e-9, 0) / n, n, 0.05, binary=binary)
        ours = (binomial_p_value if binary else hoeffding_bentkus_p_value)(errors, n, 0.05)
        np.testing.assert_allclose(ours, theirs[:, 0], rtol=1e-6, atol=1e-12)


def test_fixed_sequence_stops_at_first_failure():
    np.testing.assert_array_equal(fixed_sequence_test([0.01, 0.05, 0.2, 0.01], 0.1), [0, 1])
    assert len(fixed_sequence_test([0.5, 0.01], 0.1)) == 0
    np.testing.assert_array_equal(fixed_sequence_test([0.01, 0.02], 0.1), [0, 1])


def test_ltt_p_values_count_accepted_reports():
    conf = np.array([0.9, 0.8, 0.8, 0.5])
    correct = np.array([True, False, True, True])
    p, n_acc, errors = ltt_p_values(conf, correct, np.array([0.95, 0.9, 0.8, 0.1]), 0.1)
    np.testing.assert_array_equal(n_acc, [0, 1, 3, 4])
    np.testing.assert_array_equal(errors, [0, 0, 1, 1])
    assert p[0] == 1.0


def test_ltt_guarantee_holds_over_resampled_calibration_splits():
    """P(true accuracy on accepted >= target) >= 1 - delta, up to binomial slack; the empirical threshold fails."""
    target, delta, n, resamples = 0.97, 0.1, 1000, 300
    rng = np.random.default_rng(0)
    ltt_ok, emp_ok, coverage = [], [], []
    for _ in range(resamples):
        conf, correct = draw(rng, n)
        th = ltt_threshold_from_scores(conf, correct, target, delta)
        ltt_ok.append(true_selective_accuracy(th.threshold) >= target)
        coverage.append(th.coverage)
        emp_ok.append(
            true_selective_accuracy(empirical_threshold_from_scores(conf, correct, target).threshold) >= target
        )
    slack = 3 * np.sqrt(delta * (1 - delta) / resamples)
    assert np.mean(ltt_ok) >= 1 - delta - slack
    assert np.mean(emp_ok) < 0.7  # no guarantee: misses the target about half of the time
    best = 1 - brentq(lambda lam: true_selective_accuracy(lam) - target, 0.01, 0.9999) ** A
    assert 0.5 * best < np.mean(coverage) < best  # useful, and below the oracle coverage


def test_ltt_on_a_fresh_test_split_and_bonferroni():
    rng = np.random.default_rng(1)
    conf, correct = draw(rng, 3000)
    probs, labels = as_probs(conf, correct)
    th = ltt_threshold(probs, labels, 0.97, 0.1)
    assert th.method == "ltt" and th.delta == 0.1 and th.reached and th.accuracy >= 0.97
    test_probs, test_labels = as_probs(*draw(rng, 20000))
    assert selective_metrics(test_probs, test_labels, th.threshold)["selective_accuracy"] >= 0.965
    bonf = ltt_threshold(probs, labels, 0.97, 0.1, fwer="bonferroni", grid=np.linspace(0, 0.99, 100))
    assert bonf.reached and bonf.accuracy >= 0.97
    emp = empirical_threshold(probs, labels, 0.97)
    assert th.coverage <= emp.coverage and bonf.coverage <= emp.coverage
    loose = ltt_threshold(probs, labels, 0.97, 0.3)
    strict = ltt_threshold(probs, labels, 0.97, 0.01)
    assert strict.coverage <= th.coverage <= loose.coverage


def test_ltt_unreachable_and_missing_labels():
    rng = np.random.default_rng(2)
    probs, labels = as_probs(*draw(rng, 200))
    for th in (ltt_threshold(probs, labels, 1.0, 0.1), ltt_threshold(probs, 1 - labels, 0.97, 0.1)):
        assert th.threshold == ABSTAIN_ALL and th.coverage == 0 and th.accuracy is None and not th.reached
        assert selective_metrics(probs, labels, th.threshold)["coverage"] == 0
    labels = labels.copy()
    labels[:15] = -100
    th = ltt_threshold(probs, labels, 0.9, 0.1)
    assert th.n == 185 and th.n_missing == 15
    probs[[4, 9], 1] = np.inf
    with pytest.raises(ValueError, match=r"rows \[4, 9\]"):
        ltt_threshold(probs, labels, 0.9, 0.1)
    with pytest.raises(ValueError, match="delta"):
        ltt_threshold(probs[:3], labels[:3], 0.9, 1.5)
    with pytest.raises(ValueError, match="fwer"):
        ltt_threshold_from_scores(np.ones(3), np.ones(3, bool), 0.9, 0.1, fwer="holm")


@pytest.mark.filterwarnings("ignore:Fixed sequence testing requires a monotonic risk")
def test_ltt_matches_mapie_controller():
    """Same inputs through MAPIE's BinaryClassificationController (precision of "accept" = selective accuracy).

    MAPIE counts errors as ``ceil(n * (1 - precision))`` in floating point, which sometimes adds one error, and
    takes the minimum with the Hoeffding bound; with that reproduced, the p-values and the certified thresholds are
    identical, and without it ours are never more conservative.
    """
    risk_control = pytest.importorskip("mapie.risk_control")
    rng = np.random.default_rng(3)
    conf, correct = draw(rng, 2000)
    grid = np.linspace(0.995, 0.5, 100)  # most conservative first: the order fixed-sequence testing walks
    p, n_acc, errors = ltt_p_values(conf, correct, grid, 0.03)
    rate = 1 - (n_acc - errors) / n_acc
    r = np.minimum(rate, 0.03)
    hoeffding = np.exp(
        -n_acc * (np.where(r > 0, r * np.log(np.maximum(r, 1e-300) / 0.03), 0) + (1 - r) * np.log((1 - r) / 0.97))
    )
    p_mapie_rounding = np.minimum(binomial_p_value(np.ceil(n_acc * rate), n_acc, 0.03), hoeffding)
    for fwer in ("fixed_sequence", "bonferroni"):
        controller = risk_control.BinaryClassificationController(
            predict_function=lambda x: np.stack([1 - x[:, 0], x[:, 0]], 1),
            risk="precision",
            target_level=0.97,
            confidence_level=0.9,
            list_predict_params=grid,
            fwer_method=fwer,
        )
        controller.calibrate(conf[:, None], correct.astype(int))
        np.testing.assert_allclose(controller.p_values[:, 0], p_mapie_rounding, rtol=1e-9, atol=1e-15)
        assert (p <= controller.p_values[:, 0] * (1 + 1e-9)).all()
        # the same testing procedure on the same p-values certifies the same thresholds
        if fwer == "fixed_sequence":
            certified = fixed_sequence_test(p_mapie_rounding, 0.1)
        else:
            certified = np.flatnonzero(p_mapie_rounding <= 0.1 / len(grid))
        np.testing.assert_allclose(np.sort(grid[certified]), np.sort(controller.valid_predict_params))
        assert grid[certified].min() == pytest.approx(controller.best_predict_param)
        ours = ltt_threshold_from_scores(conf, correct, 0.97, 0.1, fwer=fwer, grid=grid, min_accepted=1)
        assert ours.reached and ours.threshold <= controller.best_predict_param + 1e-12


def test_default_grid_is_fixed_and_descending():
    g = default_grid()
    assert (np.diff(g) < 0).all() and g[0] == 1.0 and g[-1] == 0.0
    assert (g > 0.999).sum() > 50  # resolution where confident models put their reports


def joint_data(rng, n=3000):
    """Two tasks; task b is harder. Probabilities are over-confident by a factor 2 in the logits."""
    logits = {"a": rng.normal(size=(n, 3)) * 3, "b": rng.normal(size=(n, 4)) * 1.5}
    probs, labels = {}, {}
    for t, z in logits.items():
        p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        labels[t] = np.array([rng.choice(len(row), p=row) for row in p_true])
        probs[t] = apply_temperature(p_true, 0.5)
    return probs, labels


def test_joint_mode_shares_a_report_level_threshold():
    rng = np.random.default_rng(4)
    probs, labels = joint_data(rng)
    labels["b"][:100] = -100
    c = calibrate(probs, labels, 0.9, method="empirical", mode="joint")
    assert c.mode == "joint" and c.joint is not None and c.joint.n == 2900 and c.joint.n_missing == 100
    assert len(set(c.thresholds.values())) == 1
    accepted = apply_thresholds(probs, c.thresholds, "joint")
    np.testing.assert_array_equal(accepted["a"], accepted["b"])
    both = accepted["a"][100:]
    right = (probs["a"].argmax(1) == labels["a"]) & (probs["b"].argmax(1) == labels["b"])
    assert right[100:][both].mean() >= 0.9
    assert both.mean() == pytest.approx(c.joint.coverage)
    per_task = calibrate(probs, labels, 0.9, method="empirical")
    assert per_task.joint is None and per_task.tasks["a"].threshold != per_task.tasks["b"].threshold
    ltt = calibrate(probs, labels, 0.9, method="ltt", delta=0.1, mode="joint")
    assert ltt.joint.method == "ltt" and ltt.joint.coverage <= c.joint.coverage


def test_temperature_scaling_recovers_the_temperature_and_holds_out_rows():
    rng = np.random.default_rng(5)
    probs, labels = joint_data(rng, 4000)
    assert fit_temperature(probs["a"], labels["a"]) == pytest.approx(2.0, rel=0.1)
    c = calibrate(probs, labels, 0.9, method="ltt", temperature_scaling=True, temperature_fraction=0.25)
    assert c.temperature_size == 1000 and c.calibration_size == 3000
    assert all(t == pytest.approx(2.0, rel=0.15) for t in c.temperatures.values())
    assert c.tasks["a"].n == 3000
    np.testing.assert_allclose(apply_temperature(probs["a"], 1.0), probs["a"], atol=1e-12)
    with pytest.raises(ValueError, match="temperature_fraction"):
        calibrate(probs, labels, temperature_scaling=True, temperature_fraction=1.0)
