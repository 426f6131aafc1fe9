import numpy as np
import pytest

from reportkd.abstention import empirical_threshold, selective_metrics


def synthetic_scores(n=2000, seed=0):
    """Confidence-dependent correctness: a well-ranked classifier with accuracy ~0.8."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.34, 1.0, n)
    correct = rng.uniform(size=n) < conf
    labels = np.where(correct, 0, 1)
    third = np.minimum(0.001, (1 - conf) / 2)  # keeps every row a probability vector
    probs = np.stack([conf, 1 - conf - third, third], 1)
    return probs, labels


def test_threshold_reaches_target_with_maximal_coverage():
    probs, labels = synthetic_scores()
    th = empirical_threshold(probs, labels, 0.95)
    m = selective_metrics(probs, labels, th.threshold)
    assert m["selective_accuracy"] >= 0.95
    assert m["coverage"] == pytest.approx(th.coverage)
    # maximal: accepting the next lower confidence drops below target
    conf = probs.max(1)
    lower = conf[conf < th.threshold].max()
    assert selective_metrics(probs, labels, lower)["selective_accuracy"] < 0.95
    # monotone in target
    covs = [empirical_threshold(probs, labels, t).coverage for t in (0.8, 0.9, 0.95, 0.99)]
    assert covs == sorted(covs, reverse=True)


def test_unreachable_target_and_perfect_model():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    wrong = np.array([1, 1, 1])
    th = empirical_threshold(probs, wrong, 0.97)
    assert th.coverage == 0 and th.threshold > 1 and th.accuracy is None
    assert selective_metrics(probs, wrong, th.threshold)["coverage"] == 0
    th = empirical_threshold(probs, np.zeros(3, int), 0.97)
    assert th.coverage == 1 and th.threshold == pytest.approx(0.7)


def test_ties_are_accepted_together():
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    labels = np.array([0, 0, 0, 1, 0, 0])
    th = empirical_threshold(probs, labels, 0.75)
    assert th.coverage in (4 / 6, 1.0) and th.n == 6


def test_missing_labels_and_bad_probabilities():
    probs, labels = synthetic_scores(100)
    labels = labels.copy()
    labels[:10] = -100
    assert empirical_threshold(probs, labels, 0.9).n == 90
    probs[[3, 7], 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3, 7\]"):
        empirical_threshold(probs, labels, 0.9)
    with pytest.raises(ValueError, match="target_accuracy"):
        empirical_threshold(probs, labels, 1.5)


def test_one_subpackage_with_its_api_at_the_top_and_no_shadowed_module():
    import importlib
    import types

    import reportkd.abstention as abstention

    for name in abstention.__all__:
        assert hasattr(abstention, name), name
    for sub in ("calibration", "empirical", "ltt", "metrics", "plots", "predictions", "thresholds"):
        module = importlib.import_module(f"reportkd.abstention.{sub}")
        assert getattr(abstention, sub) is module  # the attribute is the module, not a function of that name
        assert sub not in abstention.__all__
    assert isinstance(abstention.selective_metrics, types.FunctionType)
    for old in ("reportkd.thresholds", "reportkd.selective_metrics", "reportkd.predictions", "reportkd.plots"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_coverage_at_targets_applies_calibration_thresholds_to_the_test_split():
    from reportkd.abstention import coverage_at_targets, ltt_threshold

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=400)
    labels = np.where(rng.random(400) < 0.8, probs.argmax(1), rng.integers(0, 3, 400))
    cal_p, cal_y, test_p, test_y = probs[:200], labels[:200], probs[200:], labels[200:]
    out = coverage_at_targets(cal_p, cal_y, test_p, test_y, (0.9, 0.97), delta=0.2)
    assert set(out) == {"empirical@0.90", "ltt@0.90", "empirical@0.97", "ltt@0.97"}
    for method, fn in (("empirical", empirical_threshold), ("ltt", ltt_threshold)):
        kw = {"delta": 0.2} if method == "ltt" else {}
        expected = selective_metrics(test_p, test_y, fn(cal_p, cal_y, 0.9, **kw).threshold)
        row = out[f"{method}@0.90"]
        assert row["coverage"] == expected["coverage"] and row["accuracy"] == expected["selective_accuracy"]
        assert row["met"] is (None if row["accuracy"] is None else row["accuracy"] >= 0.9)
