"""Shipped generation metrics: local evaluate modules (offline), field-level synoptic accuracy that never crashes."""

import math

import pytest

from reportkd.metrics import SHIPPED_METRICS, evaluate_generations, load_metric, metric_path
from reportkd.metrics.synoptic_accuracy.synoptic_accuracy import parse_synoptic, synoptic_accuracy

REF = "organ: kidney | histology: clear cell renal cell carcinoma | grade: G2 | t_stage: T1 | laterality: left | behavior: malignant"  # noqa: E501
FIELDS = ["organ", "histology", "grade", "t_stage", "laterality", "behavior"]


def test_parse_synoptic_is_tolerant():
    assert parse_synoptic(REF)["histology"] == "clear cell renal cell carcinoma"
    assert parse_synoptic("Organ :  Kidney|grade:G2|grade: G3|junk|: x") == {"organ": "kidney", "grade": "g2"}
    assert parse_synoptic(None) == {} and parse_synoptic("") == {} and parse_synoptic(123) == {}


def test_field_accuracy_scores_each_field_and_never_crashes():
    preds = [
        REF,  # all right
        REF.replace("G2", "G3").replace("left", "LEFT"),  # grade wrong, case ignored
        "organ: kidney | grade: G2",  # missing fields are wrong
        "<unk></s> ||| ::: organ",  # malformed
        None,  # nothing generated
    ]
    out = synoptic_accuracy(preds, [REF] * 5)
    assert out["accuracy_organ"] == pytest.approx(3 / 5)
    assert out["accuracy_grade"] == pytest.approx(2 / 5)
    assert out["accuracy_histology"] == pytest.approx(2 / 5)
    assert out["accuracy_laterality"] == pytest.approx(2 / 5)
    assert out["exact_match"] == pytest.approx(1 / 5) and out["parse_rate"] == pytest.approx(2 / 5)
    assert out["field_accuracy"] == pytest.approx(sum(out[f"accuracy_{f}"] for f in FIELDS) / 6)


def test_known_accuracy_leaves_out_unknown_references():
    ref = REF.replace("T1", "unknown")
    out = synoptic_accuracy([ref.replace("unknown", "T2")], [ref])
    assert out["accuracy_t_stage"] == 0.0 and "known_accuracy_t_stage" not in out
    assert synoptic_accuracy([REF], [REF], fields=["grade"]) == {
        "field_accuracy": 1.0, "exact_match": 1.0, "parse_rate": 1.0, "accuracy_grade": 1.0,
        "known_accuracy_grade": 1.0,
    }  # fmt: skip


def test_modules_load_offline_from_their_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    for name in SHIPPED_METRICS:
        assert metric_path(name).endswith(name)
    rouge = load_metric("rouge_l").compute(predictions=[REF, "organ: lung"], references=[REF, REF])
    assert rouge["rougeL"] < 1.0 and rouge["rougeL"] > 0.5
    bleu = load_metric("bleu").compute(predictions=[REF], references=[REF])
    assert bleu["bleu"] == pytest.approx(100.0)
    acc = load_metric("synoptic_accuracy").compute(predictions=["nonsense"], references=[REF])
    assert acc["field_accuracy"] == 0.0
    with pytest.raises(KeyError, match="Shipped metrics"):
        metric_path("rouge")


def test_evaluate_generations_reports_every_metric():
    out = evaluate_generations([REF, "organ: kidney"], [REF, REF])
    for key in ("rougeL", "bleu", "field_accuracy", "exact_match", "accuracy_organ", "n"):
        assert key in out and not math.isnan(out[key])
    assert out["accuracy_organ"] == 1.0 and out["exact_match"] == 0.5
    with pytest.raises(ValueError, match="one reference each"):
        evaluate_generations(["a"], [])
