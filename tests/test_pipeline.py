"""The main job end to end on a tiny synthetic corpus (the demo's code path, small sizes)."""

import json

import numpy as np
import pytest
import reportkd.text  # noqa: F401  (registers MtCNN)
import torch
from reportkd.text.mtcnn.pipeline import (
    EnsembleDistillationSettings,
    format_table,
    labels_by_task,
    predict_probs,
    prepare_data,
    run_ensemble_distillation,
)
from transformers import AutoModel, AutoTokenizer

from reportkd.data import load_soft_labels
from reportkd.synthetic import generate_reports

TASKS = ("organ", "grade")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    records = generate_reports(240, seed=3)
    records[5]["text"] = "   "  # bad input is skipped and counted, not fatal
    settings = EnsembleDistillationSettings(
        tasks=TASKS, members=4, folds=2, epochs=2, embedding_dim=16, num_filters=8, max_length=128, seed=1
    )
    results = run_ensemble_distillation(records, settings, out)
    return records, settings, out, results


def test_results_cover_every_task_and_model(job):
    _, _, out, results = job
    assert results["data"]["skipped_empty"] == 1 and results["data"]["kept"] == 239
    for model in ("ensemble", "baseline", "student"):
        for task in TASKS:
            r = results["models"][model][task]
            assert 0 <= r["test"]["coverage"] <= 1 and 0 <= r["test"]["accuracy"] <= 1
            assert r["ltt"]["delta"] == 0.1
    table = format_table(results)
    assert all(f"| {t} |" in table for t in TASKS)
    assert json.loads((out / "results.json").read_text())["settings"]["members"] == 4


def test_saved_student_reloads_with_automodel_and_predicts_the_same(job):
    records, settings, out, results = job
    model = AutoModel.from_pretrained(out / "student")
    tok = AutoTokenizer.from_pretrained(out / "student")
    assert type(model).__name__ == "MtCNNForReportClassification"
    prepared = prepare_data(records, settings)  # same seed → same split and label maps
    assert model.config.task_labels == prepared.task_labels
    probs = predict_probs(model, prepared.test, pad_token_id=tok.pad_token_id)
    labels = labels_by_task(prepared.test, prepared.task_labels)
    for task in TASKS:
        keep = labels[task] != -100
        acc = float((probs[task].argmax(1)[keep] == labels[task][keep]).mean())
        assert acc == pytest.approx(results["models"]["student"][task]["test"]["accuracy"])
    thresholds = json.loads((out / "student" / "thresholds.json").read_text())
    assert set(thresholds["tasks"]) == set(TASKS) and thresholds["method"] == "ltt"


def test_soft_labels_are_stored_next_to_the_data(job):
    records, settings, out, _ = job
    prepared = prepare_data(records, settings)
    probs, meta = load_soft_labels(
        out / "soft_labels.safetensors", ids=prepared.train["id"], task_labels=prepared.task_labels
    )
    assert meta["members"] == 4 and meta["folds"] == 2
    for task, p in probs.items():
        assert p.shape == (len(prepared.train), len(prepared.task_labels[task]))
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="divide members"):
        EnsembleDistillationSettings(members=6, folds=4)
    with pytest.raises(ValueError, match="not found"):
        prepare_data([{"text": "a b c", "organ": "x"}], EnsembleDistillationSettings(tasks=("site",)))
