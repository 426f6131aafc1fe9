"""Selective-classification and calibration metrics (reportkd.abstention.metrics) and their plots."""

import numpy as np
import pytest

from reportkd.abstention import plot_reliability, plot_risk_coverage
from reportkd.abstention.metrics import (
    aurc,
    brier_score,
    excess_aurc,
    expected_calibration_error,
    joint_report,
    negative_log_likelihood,
    reliability_bins,
    risk_coverage_curve,
    selective_report,
)


def random_probs(rng, n=500, c=4, scale=2.0):
    z = rng.normal(size=(n, c)) * scale
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(c, p=row) for row in p])
    return p, labels


def test_aurc_is_the_mean_selective_risk_and_oracle_has_zero_excess():
    rng = np.random.default_rng(0)
    probs, labels = random_probs(rng)
    conf, wrong = probs.max(1), probs.argmax(1) != labels
    order = np.argsort(-conf)
    brute = np.mean([wrong[order[:k]].mean() for k in range(1, len(conf) + 1)])
    assert aurc(probs, labels) == pytest.approx(brute)
    rc = risk_coverage_curve(probs, labels)
    assert (np.diff(rc.coverage) > 0).all() and rc.coverage[-1] == 1.0
    assert rc.risk[-1] == pytest.approx(wrong.mean())
    assert excess_aurc(probs, labels) > 0
    # a confidence that ranks every right prediction first is the oracle: no excess
    oracle = probs.copy()
    oracle[np.arange(len(labels)), probs.argmax(1)] += np.where(wrong, 0.0, 10.0)
    oracle /= oracle.sum(1, keepdims=True)
    assert excess_aurc(oracle, labels) == pytest.approx(0.0, abs=1e-12)
    perfect = np.eye(4)[labels]
    assert aurc(perfect, labels) == 0.0


def test_ties_are_one_point_of_the_curve():
    probs = np.array([[0.9, 0.1]] * 2 + [[0.6, 0.4]] * 2)
    labels = np.array([0, 1, 0, 0])
    rc = risk_coverage_curve(probs, labels)
    np.testing.assert_allclose(rc.coverage, [0.5, 1.0])
    np.testing.assert_allclose(rc.risk, [0.5, 0.25])
    assert rc.aurc == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)


def test_ece_reliability_nll_and_brier():
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([0, 0, 0, 1, 1])
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins.count.sum() == 5 and bins.count[7] == 4 and bins.count[6] == 1  # bins are (lo, hi]
    # 4 reports at 0.8 with accuracy 0.75, one at 0.7 right: ECE = 4/5 * 0.05 + 1/5 * 0.3
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.8 * 0.05 + 0.2 * 0.3)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert negative_log_likelihood(probs, labels) == pytest.approx(sklearn_metrics.log_loss(labels, probs))
    onehot = np.eye(2)[labels]
    assert brier_score(probs, labels) == pytest.approx(((probs - onehot) ** 2).sum(1).mean())
    # a calibrated model has a small ECE
    rng = np.random.default_rng(1)
    p, y = random_probs(rng, n=20000)
    assert expected_calibration_error(p, y) < 0.02
    assert expected_calibration_error(np.eye(4)[p.argmax(1)], y) > 0.2  # over-confident


def test_missing_labels_and_bad_rows():
    rng = np.random.default_rng(2)
    probs, labels = random_probs(rng, n=50)
    labels = labels.copy()
    labels[:5] = -100
    report = selective_report(probs, labels, probs.max(1) >= 0.5)
    assert report["n"] == 45 and report["n_missing"] == 5
    assert set(report) >= {"accuracy", "coverage", "selective_accuracy", "aurc", "e_aurc", "ece", "nll", "brier"}
    assert report["aurc"] == pytest.approx(aurc(probs[5:], labels[5:]))
    nothing = selective_report(probs, labels, np.zeros(50, bool))
    assert nothing["coverage"] == 0 and nothing["selective_accuracy"] is None
    probs[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[7\]"):
        aurc(probs, labels)


def test_joint_report_needs_every_task_right():
    probs = {"a": np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]]), "b": np.array([[0.7, 0.3], [0.2, 0.8], [0.9, 0.1]])}
    labels = {"a": np.array([0, 0, 0]), "b": np.array([0, 0, -100])}
    r = joint_report(probs, labels, np.array([True, True, True]))
    assert r["n"] == 2 and r["n_missing"] == 1 and r["accuracy"] == 0.5
    assert r["coverage"] == 1.0 and r["selective_accuracy"] == 0.5


def test_plots_are_written_atomically(tmp_path):
    rng = np.random.default_rng(3)
    curves, bins = {}, {}
    for name in ("baseline", "student"):
        probs, labels = random_probs(rng, n=200)
        curves[name] = {"organ": risk_coverage_curve(probs, labels), "grade": risk_coverage_curve(probs, labels)}
        bins[name] = {"organ": reliability_bins(probs, labels), "grade": reliability_bins(probs, labels)}
    rc = plot_risk_coverage(
        curves, tmp_path / "rc.png", target_accuracy=0.97, operating_points={"student": {"organ": (0.4, 0.03)}}
    )
    rel = plot_reliability(bins, tmp_path / "rel.png")
    for path in (rc, rel):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rc.png", "rel.png"]
