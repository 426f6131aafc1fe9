"""``reportkd evaluate features`` / ``reportkd evaluate slide`` on synthetic features files, and the probe helpers."""

import json

import pytest
import torch
from slide_tiny import tiny_aligned, tiny_encoder

from reportkd.cli import main
from reportkd.vlm.slide.evaluation import (
    SlideEmbeddings,
    evaluate_slide_embeddings,
    knn_predict_proba,
    label_retrieval_metrics,
    make_splits,
    select_logistic_regression,
)
from reportkd.vlm.slide.synthetic import SyntheticSlideWorld, write_synthetic_slides

EASY = SyntheticSlideWorld(num_tissue_types=1, class_separation=1.0)  # separable after mean pooling


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    return write_synthetic_slides(tmp_path_factory.mktemp("synthetic"), 100, seed=0, world=EASY)


def test_evaluate_features_prints_the_table_and_writes_json(slides, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "features", "--features", str(slides / "fine"), "--labels", str(slides / "labels.csv"),
            "--bootstrap", "100", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("| linear | 20 |", "| knn | 20 |", "| abmil | 20 |", "| retrieval acc@1 |", "| retrieval map@5 |"):
        assert row in printed, row
    metrics = json.loads(out.read_text())
    assert metrics["meta"]["splits"] == {"train": 60, "val": 20, "test": 20} and len(metrics["meta"]["classes"]) == 4
    for probe in ("linear", "knn", "abmil"):  # chance is 0.25
        m = metrics[probe]
        assert m["balanced_accuracy"] >= 0.6 and m["macro_auroc"] >= 0.8, (probe, m)
        lo, hi = m["balanced_accuracy_ci"]
        assert lo <= m["balanced_accuracy"] <= hi and "macro_f1_ci" in m
    assert metrics["linear"]["C"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    assert metrics["abmil"]["best_epoch"] <= metrics["abmil"]["epochs"]
    assert metrics["retrieval"]["acc@5"] >= 0.8 and metrics["retrieval"]["map@5"] >= 0.4


def test_evaluate_slide_with_aligned_and_plain_encoders(slides, tmp_path, capsys):
    aligned = tiny_aligned()
    aligned.save_pretrained(tmp_path / "aligned")
    argv = ["evaluate", "slide", "--model", str(tmp_path / "aligned"), "--features", str(slides / "coarse"),
            "--labels", str(slides / "labels.csv"), "--probes", "linear,knn,retrieval,abmil", "--bootstrap", "20",
            "--templates", "a slide of {}.", "{}.", "--out", str(tmp_path / "a.json")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| zero_shot | 20 |" in printed and "slide_report_retrieval slide2report_R@1" in printed
    metrics = json.loads((tmp_path / "a.json").read_text())
    assert metrics["meta"]["embedding_dim"] == 32 and "abmil" in metrics
    tiny_encoder().save_pretrained(tmp_path / "plain")
    argv[3] = str(tmp_path / "plain")
    argv[9] = "linear,knn"
    assert main(argv[:12] + ["--out", str(tmp_path / "p.json")]) == 0
    assert set(json.loads((tmp_path / "p.json").read_text())) == {"linear", "knn", "meta"}
    assert main(["evaluate", "slide", "--model", str(tmp_path), "--features", str(slides / "fine"),
                 "--labels", str(slides / "labels.csv")]) == 2  # fmt: skip
    assert "neither a slide encoder" in capsys.readouterr().err


def test_probe_helpers_on_hand_made_examples():
    q, g = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.1], [0.9, 0.5], [0.0, 1.0], [1.0, -0.2]])
    m = label_retrieval_metrics(q, torch.tensor([0]), g, torch.tensor([1, 0, 2, 0]), ks=(1, 3))
    # ranking: items 0 (label 1), 3 (0), 1 (0); relevant = 2
    assert m["acc@1"] == 0.0 and m["acc@3"] == 1.0 and m["mv_acc@3"] == 1.0
    assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    probs = knn_predict_proba(g, torch.tensor([1, 0, 2, 0]), q, num_classes=3, k=3, weighting="majority")
    torch.testing.assert_close(probs, torch.tensor([[2 / 3, 1 / 3, 0.0]]))
    splits = make_splits([0] * 10 + [1] * 5, seed=0)
    assert splits.count("test") == 3 and splits.count("val") == 3 and splits[10:].count("test") == 1
    x = torch.cat([torch.randn(20, 4) + 3, torch.randn(20, 4) - 3])
    y = torch.tensor([0] * 20 + [1] * 20)
    model, c = select_logistic_regression(x[::2], y[::2], x[1::2], y[1::2], num_classes=2)
    assert (model.predict_proba(x[1::2]).argmax(-1) == y[1::2]).all() and c > 0


def test_evaluation_driver_carves_validation_and_refuses_bad_input():
    y = torch.tensor([0, 1] * 15)
    x = torch.randn(30, 8) + y[:, None] * 4.0
    splits = ["train"] * 20 + ["test"] * 10
    data = SlideEmbeddings([str(i) for i in range(30)], x, y, splits, ["a", "b"])
    out = evaluate_slide_embeddings(data, probes=("linear", "knn"), n_bootstrap=0)
    assert out["meta"]["splits"] == {"train": 16, "val": 4, "test": 10}
    assert out["linear"]["balanced_accuracy"] == 1.0 and "balanced_accuracy_ci" not in out["linear"]
    with pytest.raises(KeyError, match="slide probe"):
        evaluate_slide_embeddings(data, probes=("svm",))
    with pytest.raises(ValueError, match="patches"):
        evaluate_slide_embeddings(data, probes=("abmil",))
    with pytest.raises(ValueError, match="test"):
        evaluate_slide_embeddings(SlideEmbeddings(data.slide_ids, x, y, ["train"] * 30, ["a", "b"]), probes=("knn",))
