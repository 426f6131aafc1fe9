"""Safe by default (issue 12) for calibrate / predict / evaluate / evaluate-abstention and the slide loader.

No code from a model folder without ``--trust-remote-code`` (even with ``y`` on stdin), no pickle weights without
``--allow-pickle``, one-line errors for broken model folders, thresholds bound to what was calibrated, validated
probabilities and thresholds, outputs that never replace an input or an existing file, and the minor fixes
(all-missing labels, duplicate ids, input order).
"""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reportkd.abstention import ABSTAIN_ALL, Predictions, load_predictions, read_thresholds, save_predictions
from reportkd.abstention import weights_fingerprint as sha_of
from reportkd.cli import main

TASKS = ("organ", "behavior")
EVIL = """
from pathlib import Path
Path({marker!r}).write_text("foreign code ran")
from transformers import PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "reportkd-evil"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def tiny_classifier(out_dir, records, task_labels, seed=0):
    """An untrained tiny MtCNN saved by save_classifier (its probabilities are valid, which is all we need)."""
    import torch

    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
    from reportkd.text.mtcnn.pipeline import save_classifier

    torch.manual_seed(seed)
    tok = train_word_tokenizer([r["text"] for r in records], min_count=1, max_length=64)
    config = MtCNNConfig(
        vocab_size=len(tok), embedding_dim=8, num_filters=4, kernel_sizes=[2], dropout=0.0, max_length=64,
        pad_token_id=tok.pad_token_id, task_labels=task_labels,
    )  # fmt: skip
    return save_classifier(MtCNNForReportClassification(config).eval(), tok, out_dir, None)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pytest.importorskip("reportkd.text.mtcnn.tokenization")
    from reportkd.data import build_label_maps
    from reportkd.synthetic import generate_reports

    root = tmp_path_factory.mktemp("safety")
    records = [{k: r[k] for k in ("id", "text", *TASKS)} for r in generate_reports(60, seed=5)]
    labels = build_label_maps({t: [r[t] for r in records] for t in TASKS}, TASKS, min_class_count=1)
    return {
        "root": root,
        "labels": labels,
        "records": records,
        "model": tiny_classifier(root / "model", records, labels),
        "other": tiny_classifier(root / "other", records, labels, seed=1),  # same label maps, other weights
        "data": write_jsonl(root / "data.jsonl", records),
    }


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def copy_model(env, tmp_path, name="m"):
    return Path(shutil.copytree(env["model"], tmp_path / name))


def plant_code(model_dir, marker, where="config.json"):
    """A model folder whose config points at a module that writes ``marker`` when imported."""
    (model_dir / "evil.py").write_text(EVIL.format(marker=str(marker)))
    path = model_dir / where
    cfg = json.loads(path.read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    if where == "config.json":
        cfg["model_type"] = "reportkd-evil"  # not registered: only the planted code could load it
    path.write_text(json.dumps(cfg))
    return model_dir


# ------------------------------------------------------------------------------------------- foreign code, pickle


@pytest.mark.parametrize("command", ["predict", "calibrate", "evaluate", "evaluate-abstention"])
def test_auto_map_is_refused_even_with_yes_on_stdin(env, tmp_path, capsys, monkeypatch, command):
    marker = tmp_path / "marker"
    model = plant_code(copy_model(env, tmp_path), marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 5))
    out = tmp_path / "out.json"
    argv = {
        "predict": ["predict", "--model", model, "--data", env["data"], "--out", out],
        "calibrate": ["calibrate", "--model", model, "--data", env["data"], "--out", out],
        "evaluate": ["evaluate", "classifier", "--model", model, "--data", env["data"], "--out", out],
        "evaluate-abstention": ["evaluate-abstention", "--model", model, "--data", env["data"], "--out-dir", out],
    }[command]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and "auto_map" in err and "--trust-remote-code" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not marker.exists() and not out.exists()


def test_auto_map_in_the_tokenizer_config_is_refused(env, tmp_path, capsys):
    marker = tmp_path / "marker"
    model = plant_code(copy_model(env, tmp_path), marker, where="tokenizer_config.json")
    rc, _, err = run_cli(capsys, "predict", "--model", model, "--data", env["data"], "--out", tmp_path / "o.jsonl")
    assert rc == 2 and "tokenizer_config.json has auto_map" in err and not marker.exists()


def test_auto_map_refused_from_a_real_shell_with_yes_piped_in(env, tmp_path):
    """`echo y | reportkd predict …`: the prompt transformers would show is never reached."""
    marker = tmp_path / "marker"
    model = plant_code(copy_model(env, tmp_path), marker)
    out = tmp_path / "o.jsonl"
    child_env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "reportkd.cli", "predict", "--model", str(model), "--data", str(env["data"]),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, input="y\ny\n", capture_output=True, text=True, env=child_env, timeout=300)
    assert proc.returncode == 2 and "--trust-remote-code" in proc.stderr, proc.stderr
    assert not marker.exists() and not out.exists()
    # the flag is passed through: with it, transformers imports the planted module (which then fails to load)
    proc = subprocess.run([*cmd, "--trust-remote-code"], input="", capture_output=True, text=True, env=child_env,
                          timeout=300)  # fmt: skip
    assert marker.exists()


def test_slide_loader_passes_trust_remote_code_false(tmp_path, monkeypatch):
    pytest.importorskip("reportkd.vlm.slide")
    from reportkd.vlm.slide.alignment import load_slide_model

    marker = tmp_path / "marker"
    folder = tmp_path / "slide"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "reportkd-evil"}))
    plant_code(folder, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 5))
    with pytest.raises(ValueError, match="custom code|trust_remote_code"):
        load_slide_model(folder)
    assert not marker.exists()


def test_pickle_weights_need_allow_pickle(env, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    model = copy_model(env, tmp_path)
    state = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    torch.save(state, model / "pytorch_model.bin")
    out = tmp_path / "o.jsonl"
    rc, _, err = run_cli(capsys, "predict", "--model", model, "--data", env["data"], "--out", out)
    assert rc == 2 and "pytorch_model.bin" in err and "--allow-pickle" in err and not out.exists()
    rc, _, err = run_cli(capsys, "predict", "--model", model, "--data", env["data"], "--out", out, "--allow-pickle")
    assert rc == 0, err
    assert len(out.read_text().splitlines()) == len(env["records"])


@pytest.mark.parametrize(
    "damage, named, code",
    [
        ("truncate", "model.safetensors is truncated", 1),  # runtime failure: the file is damaged
        ("delete", "no weights file", 2),  # usage error: a missing input
        ("config", "config.json is not valid JSON", 1),
    ],
)
def test_broken_model_folders_give_one_line(env, tmp_path, capsys, damage, named, code):
    model = copy_model(env, tmp_path)
    weights = model / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "delete":
        weights.unlink()
    else:
        (model / "config.json").write_text('{"model_type": "mtcnn", ')
    out = tmp_path / "o.jsonl"
    rc, _, err = run_cli(capsys, "predict", "--model", model, "--data", env["data"], "--out", out)
    assert rc == code and named in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# ------------------------------------------------------------------------------------------------- provenance


def saved_probs(env, capsys, tmp_path, model="model", name="p.npz"):
    path = tmp_path / name
    rc, _, err = run_cli(capsys, "predict", "--model", env[model], "--data", env["data"], "--out",
                         tmp_path / f"{name}.jsonl", "--save-probs", path)  # fmt: skip
    assert rc == 0, err
    return path


def test_thresholds_record_what_was_calibrated(env, tmp_path, capsys):
    probs = saved_probs(env, capsys, tmp_path)
    assert load_predictions(probs).model_sha256 == sha_of(env["model"])
    rc, _, err = run_cli(
        capsys, "calibrate", "--predictions", probs, "--method", "empirical", "--out", tmp_path / "t.json"
    )
    assert rc == 0, err
    raw = json.loads((tmp_path / "t.json").read_text())
    assert raw["model_sha256"] == sha_of(env["model"])
    assert raw["provenance"] == {
        "calibrated_from": "predictions",
        "predictions_sha256": load_predictions(probs).fingerprint(),
        "model_sha256_from": "predictions",
    }
    # the same predictions as .jsonl: the same fingerprint
    assert (
        load_predictions(saved_probs(env, capsys, tmp_path, name="p.jsonl")).fingerprint()
        == raw["provenance"]["predictions_sha256"]
    )
    # from --model: the weights that ran
    rc, _, err = run_cli(capsys, "calibrate", "--model", env["model"], "--data", env["data"], "--method", "empirical",
                         "--out", tmp_path / "m.json")  # fmt: skip
    raw = json.loads((tmp_path / "m.json").read_text())
    assert (
        rc == 0 and raw["model_sha256"] == sha_of(env["model"]) and raw["provenance"]["model_sha256_from"] == "weights"
    )
    # thresholds from A's predictions are refused for B (same label maps, other weights)
    rc, _, err = run_cli(capsys, "predict", "--model", env["other"], "--data", env["data"], "--thresholds",
                         tmp_path / "t.json", "--out", tmp_path / "x.jsonl")  # fmt: skip
    assert rc == 2 and "other weights" in err and not (tmp_path / "x.jsonl").exists()


def test_calibrate_refuses_predictions_of_another_model(env, tmp_path, capsys):
    probs_a = saved_probs(env, capsys, tmp_path)
    out = tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "calibrate", "--model", env["other"], "--predictions", probs_a, "--out", out)
    assert rc == 2 and "other weights" in err and not out.exists()
    # predictions that record no model: refused with --model unless the user vouches for them
    p = load_predictions(probs_a)
    p.model_sha256 = None
    unbound = save_predictions(tmp_path / "unbound.npz", p)
    rc, _, err = run_cli(capsys, "calibrate", "--model", env["model"], "--predictions", unbound, "--out", out)
    assert rc == 2 and "--assume-same-model" in err and not out.exists()
    rc, _, err = run_cli(capsys, "calibrate", "--model", env["model"], "--predictions", unbound, "--out", out,
                         "--assume-same-model", "--method", "empirical")  # fmt: skip
    raw = json.loads(out.read_text())
    assert (
        rc == 0
        and raw["model_sha256"] == sha_of(env["model"])
        and raw["provenance"]["model_sha256_from"] == "asserted"
    )


def test_unbound_thresholds_are_refused_for_a_model(env, tmp_path, capsys):
    p = load_predictions(saved_probs(env, capsys, tmp_path))
    p.model_sha256 = None
    unbound = save_predictions(tmp_path / "unbound.npz", p)
    th = tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "calibrate", "--predictions", unbound, "--method", "empirical", "--out", th)
    assert rc == 0 and "bound to no model" in err and json.loads(th.read_text())["model_sha256"] is None
    out = tmp_path / "x.jsonl"
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", env["data"], "--thresholds", th,
                         "--out", out)  # fmt: skip
    assert rc == 2 and "not bound to any weights" in err and not out.exists()
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", env["data"], "--thresholds", th,
                         "--out", out, "--allow-other-weights")  # fmt: skip
    assert rc == 0, err


# ------------------------------------------------------------------------------------------------- validation


def grade_predictions(n=60, scale=1.0):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.3, n) * scale
    labels = probs.argmax(1).copy()
    labels[::7] = (labels[::7] + 1) % 3
    return Predictions([f"r{i}" for i in range(n)], {"grade": probs}, {"grade": ["G1", "G2", "G3"]}, {"grade": labels})


@pytest.mark.parametrize("scale, problem", [(50.0, "outside [0, 1]"), (0.9, "do not sum to 1")])
def test_invalid_probabilities_are_refused(tmp_path, capsys, scale, problem):
    path = save_predictions(tmp_path / "p.jsonl", grade_predictions(scale=scale))
    before = path.read_bytes()
    out = tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "calibrate", "--predictions", path, "--out", out)
    assert rc == 2 and problem in err and "task 'grade'" in err and "0 (id r0)" in err, err
    assert not out.exists() and path.read_bytes() == before


def test_library_check_probs_refuses_scaled_and_unnormalised_rows():
    from reportkd.abstention import calibrate, check_probs

    p = grade_predictions()
    check_probs(p.probs["grade"])  # valid
    with pytest.raises(ValueError, match=r"outside \[0, 1\] in rows \[0, 1"):
        calibrate({"grade": p.probs["grade"] * 50}, p.labels)
    bad = p.probs["grade"].copy()
    bad[4] *= 0.5
    with pytest.raises(ValueError, match=r"do not sum to 1 .* rows \[4\]"):
        check_probs(bad, name="grade")


def test_integer_valued_float_labels_are_class_ids(tmp_path):
    p = grade_predictions(10)
    path = save_predictions(tmp_path / "p.jsonl", p)
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in lines[1:]]
    for r, y in zip(rows, p.labels["grade"]):
        r["labels"]["grade"] = float(y)  # 2.0, as pandas writes an integer column with gaps
    write_jsonl(path, [json.loads(lines[0]), *rows])
    np.testing.assert_array_equal(load_predictions(path).labels["grade"], p.labels["grade"])
    rows[3]["labels"]["grade"] = 1.5
    write_jsonl(path, [json.loads(lines[0]), *rows])
    with pytest.raises(ValueError, match="line 5"):
        load_predictions(path)
    # .npz with float labels: integer values accepted, others refused
    arrays = {"ids": np.asarray(p.ids), "meta": np.asarray(json.dumps({"format": "reportkd.predictions.v1",
              "task_labels": p.task_labels})), "probs.grade": p.probs["grade"]}  # fmt: skip
    np.savez(tmp_path / "f.npz", **arrays, **{"labels.grade": p.labels["grade"].astype(float)})
    np.testing.assert_array_equal(load_predictions(tmp_path / "f.npz").labels["grade"], p.labels["grade"])
    np.savez(tmp_path / "g.npz", **arrays, **{"labels.grade": p.labels["grade"] + 0.5})
    with pytest.raises(ValueError, match="non-integer class ids"):
        load_predictions(tmp_path / "g.npz")


@pytest.mark.parametrize("value", [-0.2, 5.39, 1.5])
def test_thresholds_outside_0_1_are_refused(env, tmp_path, capsys, value):
    th = tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "calibrate", "--model", env["model"], "--data", env["data"], "--method", "empirical",
                         "--target-accuracy", 0.3, "--out", th)  # fmt: skip
    assert rc == 0, err
    raw = json.loads(th.read_text())
    raw["tasks"]["organ"]["threshold"] = ABSTAIN_ALL  # the documented "unreachable" value still loads
    th.write_text(json.dumps(raw))
    assert read_thresholds(th).thresholds["organ"] == ABSTAIN_ALL
    raw["tasks"]["organ"]["threshold"] = value  # a hand edit
    th.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        read_thresholds(th)
    out = tmp_path / "x.jsonl"
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", env["data"], "--thresholds", th,
                         "--out", out)  # fmt: skip
    assert rc == 2 and "task 'organ'" in err and "outside [0, 1]" in err and not out.exists()


# ----------------------------------------------------------------------------------------------------- outputs


def test_out_equal_to_an_input_is_refused_before_anything_runs(env, tmp_path, capsys):
    data = Path(shutil.copy(env["data"], tmp_path / "reports.jsonl"))
    before = data.read_bytes()
    for argv in (
        ["predict", "--model", env["model"], "--data", data, "--out", data, "--overwrite"],
        ["predict", "--model", env["model"], "--data", data, "--out", tmp_path / "o.jsonl", "--save-probs", data],
        ["calibrate", "--model", env["model"], "--data", data, "--out", data, "--overwrite"],
        ["evaluate", "classifier", "--model", env["model"], "--data", data, "--out", data, "--overwrite"],
    ):
        rc, _, err = run_cli(capsys, *argv)
        assert rc == 2 and "--data input" in err, (argv, err)
        assert data.read_bytes() == before
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", data, "--out",
                         env["model"] / "config.json", "--overwrite")  # fmt: skip
    assert rc == 2 and "a file of --model" in err
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", data, "--out", tmp_path / "a.jsonl",
                         "--save-probs", tmp_path / "a.jsonl")  # fmt: skip
    assert rc == 2 and "the same file" in err


def test_existing_outputs_need_overwrite(env, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text("keep me\n")
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", env["data"], "--out", out)
    assert rc == 2 and "--overwrite" in err and out.read_text() == "keep me\n"
    rc, _, err = run_cli(
        capsys, "predict", "--model", env["model"], "--data", env["data"], "--out", out, "--overwrite"
    )
    assert rc == 0 and len(out.read_text().splitlines()) == len(env["records"])
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "metrics.json").write_text("{}")
    rc, _, err = run_cli(
        capsys, "evaluate-abstention", "--model", env["model"], "--data", env["data"], "--out-dir", ev
    )
    assert rc == 2 and "metrics.json already exists" in err and (ev / "metrics.json").read_text() == "{}"


def test_unwritable_out_is_refused_before_the_model_loads(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # the model folder does not exist: an --out error first shows the output is checked before any loading
    rc, _, err = run_cli(capsys, "predict", "--model", tmp_path / "nope", "--data", tmp_path / "nope.jsonl",
                         "--out", blocker / "o.jsonl")  # fmt: skip
    assert rc == 2 and "--out" in err and "is a file, not a folder" in err, err
    rc, _, err = run_cli(capsys, "calibrate", "--predictions", tmp_path / "nope.npz", "--out", tmp_path)
    assert rc == 2 and "is a directory" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            rc, _, err = run_cli(capsys, "calibrate", "--predictions", tmp_path / "nope.npz", "--out", ro / "t.json")
            assert rc == 2 and "not writable" in err
        finally:
            ro.chmod(0o700)


# ------------------------------------------------------------------------------------------------------- minor


def test_every_label_missing_is_an_error(env, tmp_path, capsys):
    records = [{**r, "behavior": None} for r in env["records"]]
    data = write_jsonl(tmp_path / "cal.jsonl", records)
    out = tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "calibrate", "--model", env["model"], "--data", data, "--out", out)
    assert rc == 2 and "Every label of task(s) ['behavior'] is missing" in err and not out.exists()


def test_predict_keeps_input_order_marks_skipped_rows_and_warns_on_duplicate_ids(env, tmp_path, capsys):
    records = [dict(r) for r in env["records"][:8]]
    records.insert(3, {"id": "blank", "text": "   ", "organ": None, "behavior": None})
    records[5]["id"] = records[6]["id"] = records[7]["id"] = "dup"
    data = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "o.jsonl"
    rc, _, err = run_cli(capsys, "predict", "--model", env["model"], "--data", data, "--out", out)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(r["id"]) for r in records]
    assert rows[3]["skipped"] == "empty text" and all(v["label"] == "abstain" for v in rows[3]["tasks"].values())
    assert all("skipped" not in r for i, r in enumerate(rows) if i != 3)
    assert err.count("repeat an id") == 1 and "2 report(s) repeat" in err
