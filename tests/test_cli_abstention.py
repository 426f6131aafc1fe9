"""``reportkd calibrate`` → ``predict`` → ``evaluate-abstention`` end to end on a tiny MtCNN, and bad inputs."""

import json

import numpy as np
import pytest
from report_tiny import TASKS, build_classifier, write_jsonl

from reportkd.abstention import (
    Predictions,
    load_predictions,
    read_thresholds,
    save_predictions,
    thresholds_from_dict,
    weights_fingerprint,
)
from reportkd.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("reportkd.text.mtcnn.tokenization")
    from reportkd.data import build_label_maps
    from reportkd.synthetic import generate_reports

    root = tmp_path_factory.mktemp("cli")
    records = [{k: r[k] for k in ("id", "text", *TASKS)} for r in generate_reports(240, seed=3)]
    train, cal, test = records[:120], records[120:200], records[200:]
    cal[0]["behavior"] = None  # a missing label: left out of calibration and counted
    test.append({"id": "empty-1", "text": "  ", **{t: None for t in TASKS}})  # empty text: skipped, abstains
    labels = build_label_maps({t: [r[t] for r in train] for t in TASKS}, TASKS, min_class_count=1)
    model = build_classifier(root / "model", train, labels)
    return {
        "root": root,
        "model": model,
        "labels": labels,
        "cal": write_jsonl(root / "cal.jsonl", cal),
        "test": write_jsonl(root / "test.jsonl", test),
        "test_unlabelled": write_jsonl(root / "unlabelled.jsonl", [{"id": r["id"], "text": r["text"]} for r in test]),
        "n_test": len(test),
    }


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_calibrate_predict_evaluate_end_to_end(setup, capsys):
    s, root = setup, setup["root"]
    th_path = s["model"] / "thresholds.json"
    rc, out, err = run_cli(
        capsys, "calibrate", "--model", s["model"], "--data", s["cal"], "--target-accuracy", 0.8,
        "--method", "ltt", "--delta", 0.2, "--out", th_path,
    )  # fmt: skip
    assert rc == 0, err
    assert "Thresholds →" in out
    th = read_thresholds(th_path, task_labels=s["labels"], model_sha256=weights_fingerprint(s["model"]))
    raw = json.loads(th_path.read_text())
    assert raw["format"] == "reportkd.thresholds.v1" and raw["method"] == "ltt" and raw["delta"] == 0.2
    assert raw["model_id"] == str(s["model"]) and raw["model_sha256"] and raw["mode"] == "per-task"
    assert raw["calibration_size"] == 80 and raw["tasks"]["behavior"]["n_missing"] == 1
    assert raw["tasks"]["behavior"]["n"] == 79 and raw["target_accuracy"] == 0.8
    assert thresholds_from_dict(th.to_dict()).to_dict() == th.to_dict()  # round trip
    for entry in raw["tasks"].values():
        if not entry["reached"]:
            assert entry["coverage"] == 0 and entry["threshold"] > 1 and "target unreachable" in out

    # predict with the thresholds stored in the model directory, on data without labels plus an empty report
    pred_path, probs_path = root / "pred.jsonl", root / "probs.npz"
    rc, out, err = run_cli(
        capsys, "predict", "--model", s["model"], "--data", s["test_unlabelled"], "--out", pred_path,
        "--save-probs", probs_path,
    )  # fmt: skip
    assert rc == 0, err
    assert "reports auto-coded" in out
    rows = [json.loads(line) for line in pred_path.read_text().splitlines()]
    assert len(rows) == s["n_test"] and rows[-1]["skipped"] == "empty text"
    for row in rows[:-1]:
        for task, v in row["tasks"].items():
            accepted = v["probability"] >= th.thresholds[task] - 1e-6
            assert v["label"] == (v["prediction"] if accepted else "abstain")
            assert v["prediction"] in s["labels"][task]
        assert row["auto_coded"] == all(v["label"] != "abstain" for v in row["tasks"].values())
    assert all(v["label"] == "abstain" for v in rows[-1]["tasks"].values())
    saved = load_predictions(probs_path)
    assert len(saved) == s["n_test"] - 1 and saved.labels is None and saved.task_labels == s["labels"]

    # evaluate on labelled data, with a baseline given as saved predictions
    rc, out, err = run_cli(capsys, "predict", "--model", s["model"], "--data", s["test"], "--out", root / "p2.jsonl",
                           "--save-probs", root / "baseline.jsonl")  # fmt: skip
    assert rc == 0, err
    eval_dir = root / "eval"
    rc, out, err = run_cli(
        capsys, "evaluate-abstention", "--model", s["model"], "--data", s["test"],
        "--baseline-predictions", root / "baseline.jsonl", "--baseline-thresholds", th_path, "--out-dir", eval_dir,
    )  # fmt: skip
    assert rc == 0, err
    assert "selective" not in err and "(joint)" in out
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    student, baseline = metrics["models"]["student"], metrics["models"]["baseline"]
    for task in TASKS:
        for key, value in student["tasks"][task].items():  # the same model: the same metrics
            other = baseline["tasks"][task][key]
            assert other == value if value is None else other == pytest.approx(value, rel=1e-4, abs=1e-5)
        assert {"accuracy", "coverage", "selective_accuracy", "aurc", "ece"} <= set(student["tasks"][task])
    for name in ("risk_coverage.png", "reliability.png"):
        assert (eval_dir / name).read_bytes()[:4] == b"\x89PNG"

    # --predictions calibration (any model), joint mode, written next to the others
    rc, out, err = run_cli(
        capsys, "calibrate", "--predictions", root / "baseline.jsonl", "--mode", "joint", "--method", "empirical",
        "--target-accuracy", 0.5, "--out", root / "joint.json",
    )  # fmt: skip
    assert rc == 0, err
    joint = json.loads((root / "joint.json").read_text())
    assert (
        joint["mode"] == "joint"
        and joint["joint"]["n"] <= 40
        and len({v["threshold"] for v in joint["tasks"].values()}) == 1
    )


def test_mismatched_thresholds_are_refused_and_nothing_is_written(setup, capsys, tmp_path):
    s = setup
    th_path = tmp_path / "th.json"
    assert run_cli(capsys, "calibrate", "--model", s["model"], "--data", s["cal"], "--out", th_path)[0] == 0
    # another model with other label maps
    from reportkd.synthetic import generate_reports

    other_labels = {**s["labels"], "organ": [*s["labels"]["organ"], "extra-organ"]}
    records = [{k: r[k] for k in ("id", "text", *TASKS)} for r in generate_reports(40, seed=9)]
    other = build_classifier(tmp_path / "other", records, other_labels, steps=1)
    out_path = tmp_path / "pred.jsonl"
    rc, _, err = run_cli(capsys, "predict", "--model", other, "--thresholds", th_path, "--data", s["test"],
                         "--out", out_path)  # fmt: skip
    assert rc == 2 and "calibrated for another model" in err and "'organ'" in err
    assert not out_path.exists()
    # same label maps, other weights (e.g. the baseline's thresholds used with the student)
    same_maps = build_classifier(tmp_path / "same", records, s["labels"], steps=1, seed=1)
    rc, _, err = run_cli(capsys, "predict", "--model", same_maps, "--thresholds", th_path, "--data", s["test"],
                         "--out", out_path)  # fmt: skip
    assert rc == 2 and "other weights" in err and not out_path.exists()
    rc, _, err = run_cli(capsys, "predict", "--model", same_maps, "--thresholds", th_path, "--data", s["test"],
                         "--out", out_path, "--allow-other-weights")  # fmt: skip
    assert rc == 0 and out_path.exists()
    rc, _, err = run_cli(capsys, "evaluate-abstention", "--model", other, "--thresholds", th_path, "--data", s["test"],
                         "--out-dir", tmp_path / "ev")  # fmt: skip
    assert rc == 2 and not (tmp_path / "ev").exists()


def synthetic_predictions(n=400, seed=0):
    rng = np.random.default_rng(seed)
    conf = rng.beta(20, 1, n)
    correct = rng.uniform(size=n) < conf
    probs = np.stack([conf, (1 - conf) / 2, (1 - conf) / 2], 1)
    labels = np.where(correct, 0, 1)
    labels[:7] = -100
    return Predictions([f"r{i}" for i in range(n)], {"grade": probs}, {"grade": ["G1", "G2", "G3"]},
                       {"grade": labels}, "some-model")  # fmt: skip


def test_predictions_files_round_trip(tmp_path):
    p = synthetic_predictions(50)
    for name in ("p.npz", "p.jsonl", "p.jsonl.gz"):
        back = load_predictions(save_predictions(tmp_path / name, p))
        assert back.ids == p.ids and back.task_labels == p.task_labels and back.model_id == "some-model"
        np.testing.assert_allclose(back.probs["grade"], p.probs["grade"], rtol=1e-6)
        np.testing.assert_array_equal(back.labels["grade"], p.labels["grade"])
    with pytest.raises(ValueError, match="reportkd predictions file"):
        load_predictions(write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "probs": {}}]))


def test_bad_inputs_on_saved_predictions(tmp_path, capsys):
    p = synthetic_predictions()
    path = save_predictions(tmp_path / "p.npz", p)
    out = tmp_path / "th.json"
    rc, stdout, err = run_cli(capsys, "calibrate", "--predictions", path, "--out", out, "--delta", 0.1)
    assert rc == 0, err
    th = json.loads(out.read_text())["tasks"]["grade"]
    assert th["n_missing"] == 7 and th["n"] == 393 and th["method"] == "ltt"
    # unreachable target: coverage 0, said so
    rc, stdout, err = run_cli(capsys, "calibrate", "--predictions", path, "--out", tmp_path / "u.json",
                              "--target-accuracy", 1.0)  # fmt: skip
    assert rc == 0 and "target unreachable" in stdout
    assert json.loads((tmp_path / "u.json").read_text())["tasks"]["grade"]["coverage"] == 0
    # NaN / inf probabilities: an error naming the rows, nothing written
    p.probs["grade"][[5, 11]] = np.nan
    bad = save_predictions(tmp_path / "bad.jsonl", p)
    rc, _, err = run_cli(capsys, "calibrate", "--predictions", bad, "--out", tmp_path / "nan.json")
    assert rc == 2 and "rows 5 (id r5), 11 (id r11)" in err and not (tmp_path / "nan.json").exists()
    # evaluation with thresholds made for other label maps is refused before anything is written
    other = Predictions(p.ids, {"grade": np.full((len(p), 2), 0.5)}, {"grade": ["G1", "G2"]},
                        {"grade": np.zeros(len(p), int)})  # fmt: skip
    other_path = save_predictions(tmp_path / "other.npz", other)
    rc, _, err = run_cli(capsys, "evaluate-abstention", "--predictions", other_path, "--thresholds", out,
                         "--out-dir", tmp_path / "ev")  # fmt: skip
    assert rc == 2 and "calibrated for another model" in err and not (tmp_path / "ev").exists()
    rc, _, err = run_cli(capsys, "calibrate", "--out", tmp_path / "x.json")
    assert rc == 2 and "--predictions" in err


def test_thresholds_written_by_older_save_classifier_still_load(tmp_path):
    old = {
        "format": "reportkd.thresholds.v1", "fingerprint": "abc", "method": "empirical", "target_accuracy": 0.97,
        "calibration_size": 10,
        "tasks": {"grade": {"threshold": 0.9, "coverage": 0.5, "accuracy": 0.98, "n": 10, "target_accuracy": 0.97}},
    }  # fmt: skip
    path = write_jsonl(tmp_path / "t.json", [old])
    th = read_thresholds(path)
    assert th.mode == "per-task" and th.thresholds == {"grade": 0.9} and th.task_labels is None
    with pytest.raises(ValueError, match="calibrated for another model"):
        th.check({"grade": ["G1", "G2"]})
