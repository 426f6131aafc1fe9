"""The main job end to end on a tiny synthetic corpus (the demo's code path, small sizes)."""

import json

import numpy as np
import pytest
from transformers import AutoModel, AutoTokenizer

from reportkd.abstention import weights_fingerprint
from reportkd.data import load_soft_labels
from reportkd.synthetic import generate_reports
from reportkd.text.mtcnn.arguments import MtCNNJobArguments
from reportkd.text.mtcnn.job import default_training_args, run_mtcnn_job
from reportkd.text.mtcnn.pipeline import prepare_data
from reportkd.text.mtcnn.predict import labels_by_task, predict_probs
from reportkd.text.mtcnn.results import format_table

TASKS = ["organ", "grade"]


def tiny_job(**kw):
    values = dict(tasks=TASKS, members=4, folds=2, embedding_dim=16, num_filters=8, max_length=128)
    return MtCNNJobArguments(**{**values, **kw})


pytestmark = pytest.mark.usefixtures("no_full_gc")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    records = generate_reports(240, seed=3)
    records[5]["text"] = "   "  # bad input is skipped and counted, not fatal
    settings = tiny_job()
    args = default_training_args(out, num_train_epochs=2, seed=1, disable_tqdm=True)
    results = run_mtcnn_job(records, settings, args)
    return records, settings, args, out, results


def test_results_cover_every_task_and_model(job):
    _, _, _, out, results = job
    assert results["data"]["skipped_empty"] == 1 and results["data"]["kept"] == 239
    for model in ("ensemble", "baseline", "student"):
        for task in TASKS:
            r = results["models"][model][task]
            assert 0 <= r["test"]["coverage"] <= 1 and 0 <= r["test"]["accuracy"] <= 1
            assert r["ltt"]["delta"] == 0.1
    table = format_table(results)
    assert all(f"| {t} |" in table for t in TASKS)
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["job"]["members"] == 4 and saved["settings"]["training"]["seed"] == 1
    assert (out / "table.md").read_text().strip() == table


def test_saved_student_reloads_with_automodel_and_predicts_the_same(job):
    records, settings, args, out, results = job
    model = AutoModel.from_pretrained(out / "student")
    tok = AutoTokenizer.from_pretrained(out / "student")
    assert type(model).__name__ == "MtCNNForReportClassification"
    prepared = prepare_data(records, settings, args.seed)  # same seed → same split and label maps
    assert model.config.task_labels == prepared.task_labels
    probs = predict_probs(model, prepared.test, pad_token_id=tok.pad_token_id)
    labels = labels_by_task(prepared.test, prepared.task_labels)
    for task in TASKS:
        keep = labels[task] != -100
        acc = float((probs[task].argmax(1)[keep] == labels[task][keep]).mean())
        assert acc == pytest.approx(results["models"]["student"][task]["test"]["accuracy"])


@pytest.mark.parametrize("name", ["student", "baseline"])
def test_student_and_baseline_are_saved_with_their_own_thresholds(job, name):
    _, _, _, out, results = job
    thresholds = json.loads((out / name / "thresholds.json").read_text())
    assert set(thresholds["tasks"]) == set(TASKS) and thresholds["method"] == "ltt"
    assert thresholds["model_sha256"] == weights_fingerprint(out / name)
    assert thresholds["provenance"] == {
        "calibrated_from": "model", "predictions_sha256": None, "model_sha256_from": "weights"
    }  # fmt: skip
    for task in TASKS:  # the thresholds of this model, not the other one's
        assert thresholds["tasks"][task]["threshold"] == pytest.approx(
            results["models"][name][task]["ltt"]["threshold"]
        )
    info = json.loads((out / name / "distillation.json").read_text())
    assert info["method"] == {"student": "ensemble_distillation", "baseline": "hard_label"}[name]
    assert ("alpha" in info["hyperparameters"]) == (name == "student")
    assert json.loads((out / name / "eval_results.json").read_text())["threshold_method"] == "ltt"


def test_soft_labels_are_stored_next_to_the_data(job):
    records, settings, args, out, _ = job
    prepared = prepare_data(records, settings, args.seed)
    probs, meta = load_soft_labels(
        out / "soft_labels.safetensors", ids=prepared.train["id"], task_labels=prepared.task_labels
    )
    assert meta["members"] == 4 and meta["folds"] == 2
    for task, p in probs.items():
        assert p.shape == (len(prepared.train), len(prepared.task_labels[task]))
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(members=6, folds=4), "divide members"),
        (dict(alpha=1.5), "alpha must be in"),
        (dict(temperature=0), "temperature must be > 0"),
        (dict(target_accuracy=1.0), "target_accuracy must be in"),
        (dict(split=[0.5, 0.5, 0.5]), "split must be"),
        (dict(task_weights='{"site": 1}'), "unknown task 'site'"),
        (dict(dac_targets={"organ": 2}), "dac_targets"),
        (dict(kernel_sizes=[3, 200]), "max_length"),
    ],
)
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_job(**kw)


def test_missing_task_column_is_refused():
    with pytest.raises(ValueError, match="not found"):
        prepare_data([{"text": "a b c", "organ": "x"}], MtCNNJobArguments(tasks=["site"]))
