"""``pipeline("report-classification")`` on a tiny calibrated MtCNN: the same labels, abstentions and probabilities
as ``reportkd predict``, top-k, batching, thresholds options."""

import json

import pytest
from report_tiny import calibrated_student
from transformers import pipeline

import reportkd.text  # noqa: F401  (registers the pipeline)
from reportkd.cli import main


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return calibrated_student(tmp_path_factory.mktemp("pipe"))


def test_pipeline_matches_reportkd_predict(student, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    assert main(["predict", "--model", str(student["model"]), "--data", str(student["test"]), "--out", str(out)]) == 0
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    coder = pipeline("report-classification", model=str(student["model"]), batch_size=4)
    got = coder(student["texts"])
    assert len(got) == len(expected)
    abstained = accepted = 0
    for g, e in zip(got, expected):
        assert g["auto_coded"] == e["auto_coded"] and g.get("skipped") == e.get("skipped")
        for task, want in e["tasks"].items():
            have = g["tasks"][task]
            assert have["label"] == want["label"] and have["prediction"] == want["prediction"]
            assert have["probability"] == pytest.approx(want["probability"], abs=2e-6)
            abstained += want["label"] == "abstain"
            accepted += want["label"] != "abstain"
    assert abstained and accepted  # the thresholds matter on these reports


def test_top_k_is_sorted_and_sums_below_one(student):
    coder = pipeline("report-classification", model=str(student["model"]))
    result = coder(student["texts"][0], top_k=2)
    for task, entry in result["tasks"].items():
        scores = [c["score"] for c in entry["top_k"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
        assert entry["top_k"][0]["label"] == entry["prediction"] and scores[0] == entry["probability"]
        assert {c["label"] for c in entry["top_k"]} <= set(student["labels"][task])
    with pytest.raises(ValueError, match="top_k"):
        coder("x", top_k=0)


def test_without_thresholds_every_prediction_is_accepted(student):
    coder = pipeline("report-classification", model=str(student["model"]), thresholds=None)
    result = coder(student["texts"][:5])
    assert all(r["auto_coded"] for r in result)
    assert all(t["label"] == t["prediction"] for r in result for t in r["tasks"].values())
