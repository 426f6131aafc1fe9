"""The numbers the MtCNN benchmarks compute (reportkd.text.mtcnn.benchmarking): paired differences, views, cache."""

from __future__ import annotations

import numpy as np
import pytest

from reportkd.text.mtcnn.benchmarking import (
    halving_differences,
    load_npz,
    save_npz,
    summarise,
    task_metrics,
    unknown_as_missing,
)


def _probs(labels: np.ndarray, classes: int, skill: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy probabilities that put more mass on the true class the higher ``skill`` is."""
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), labels] += skill
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _split(n: int = 400, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {s: {"t": rng.integers(0, classes, n)} for s in ("calibration", "test")}


def _model(labels, skill: float, seed: int, classes: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{s}/t": _probs(labels[s]["t"], classes, skill, rng) for s in ("calibration", "test")}


def test_npz_roundtrip_and_missing(tmp_path):
    arrays = {"calibration/t": np.arange(6.0).reshape(3, 2), "test/t": np.ones((2, 2))}
    save_npz(tmp_path / "a.npz", arrays)
    back = load_npz(tmp_path / "a.npz")
    assert set(back) == set(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert load_npz(tmp_path / "missing.npz") is None


def test_task_metrics_accuracy_and_coverage():
    labels = _split()
    perfect = {f"{s}/t": np.eye(4)[labels[s]["t"]] * 0.9 + 0.025 for s in ("calibration", "test")}
    row = task_metrics(perfect, labels, delta=0.1, targets=(0.9,))["t"]
    assert row["accuracy"] == 1.0
    assert row["empirical@0.90"]["coverage"] == 1.0 and row["empirical@0.90"]["accuracy"] == 1.0
    weak = task_metrics(_model(labels, 0.5, 1), labels, delta=0.1, targets=(0.9,))["t"]
    assert weak["accuracy"] < 1.0 and weak["empirical@0.90"]["coverage"] < 1.0


def test_unknown_as_missing_drops_label_and_renormalises():
    labels = {s: {"laterality": np.array([0, 1, 2, -100])} for s in ("calibration", "test")}
    p = np.array([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    arrays = {"calibration/laterality": p, "test/laterality": p}
    out_arrays, out_labels = unknown_as_missing(arrays, labels, {"laterality": ["left", "unknown", "right"]})
    assert out_labels["test"]["laterality~known"].tolist() == [0, -100, 1, -100]
    known = out_arrays["test/laterality~known"]
    assert known.shape == (4, 2) and np.allclose(known.sum(1), 1) and np.isclose(known[0, 0], 0.5 / 0.7)
    assert "laterality~known" not in labels["test"]  # inputs untouched
    # a model sure of "unknown" (the other classes underflowed to 0 in float32) says nothing else: uniform, sums to 1
    sure = {"calibration/laterality": p, "test/laterality": np.array([[0, 1, 0]] * 4, dtype=np.float32)}
    known = unknown_as_missing(sure, labels, {"laterality": ["left", "unknown", "right"]})[0]["test/laterality~known"]
    assert np.allclose(known, 0.5)


def test_summarise_pairs_by_seed():
    per_seed = {
        s: {"baseline": {"t": {"accuracy": 0.5 + s / 10}}, "student-a": {"t": {"accuracy": 0.6 + s / 10 + s / 100}}}
        for s in range(3)
    }
    out = summarise(per_seed, metrics=("accuracy",))
    d = out["student_minus_baseline"]["student-a"]["t"]["accuracy"]
    assert d["mean"] == pytest.approx(0.11) and d["wins"] == 3 and d["n"] == 3
    assert d["sd"] == pytest.approx(0.01)  # the seed effect (s / 10) cancels in the pairs
    assert out["models"]["baseline"]["t"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert "baseline" not in out["student_minus_baseline"]


def test_halving_differences_zero_for_a_copy_and_positive_for_a_better_model():
    labels = _split()
    per_seed = {}
    for seed in range(3):
        base = _model(labels, 2.0, seed)
        per_seed[seed] = {"baseline": base, "copy": dict(base), "better": _model(labels, 5.0, 100 + seed)}
    out = halving_differences(per_seed, labels, ["t"], delta=0.1, halvings=4, targets=(0.9,))
    copy = out["copy"]["t"]["empirical@0.90"]
    assert copy["mean"] == 0 and copy["se_seeds"] == 0 and copy["wins"] == 0 and copy["seeds"] == 3
    better = out["better"]["t"]["empirical@0.90"]
    assert better["mean"] > 2 * better["se_seeds"] and better["wins"] > 0.9
    assert better["model"] - better["baseline"] == pytest.approx(better["mean"])
    assert set(out["better"]["t"]) == {"empirical@0.90", "ltt@0.90"}
