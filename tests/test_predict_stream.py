"""``reportkd predict`` streams: reads, predicts and writes ``--chunk-size`` reports at a time, same output."""

import json

import numpy as np
import pytest
from report_tiny import calibrated_student, write_jsonl

import reportkd.data
from reportkd.cli import main
from reportkd.commands import _classifier


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    pytest.importorskip("reportkd.text.mtcnn.tokenization")
    root = tmp_path_factory.mktemp("stream")
    s = calibrated_student(root, steps=20)
    records = [json.loads(line) for line in s["test"].read_text().splitlines()]
    records[3].pop("id")  # no id: the row number over the whole file, whatever the chunk
    records.insert(9, {"text": ""})  # empty text keeps its place
    records.insert(15, {"id": 7.0, "text": None})  # a CSV-style float id, no text
    s["records"] = records
    s["file"] = write_jsonl(root / "reports.jsonl", records)
    return s


def predict(capsys, model, data, out, *extra):
    rc = main(["predict", "--model", str(model), "--data", str(data), "--out", str(out), *map(str, extra)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return out.read_text(), captured.out


def test_output_is_identical_for_chunk_sizes_1_7_and_all(student, tmp_path, capsys):
    s = student
    outputs = {}
    for size in (1, 7, 10_000):  # one report per batch: the same padding whatever the chunk, so bit for bit
        text, summary = predict(
            capsys, s["model"], s["file"], tmp_path / f"out{size}.jsonl", "--chunk-size", size, "--batch-size", 1,
            "--save-probs", tmp_path / f"p{size}.npz",
        )  # fmt: skip
        outputs[size] = (text, summary.replace(f"out{size}", "OUT").replace(f"p{size}", "P"))
    assert outputs[1] == outputs[7] == outputs[10_000]
    lines = [json.loads(x) for x in outputs[1][0].splitlines()]
    assert len(lines) == len(s["records"])
    assert [x["id"] for x in lines[:4]] == [s["records"][0]["id"], s["records"][1]["id"], s["records"][2]["id"], "3"]
    assert lines[9] == {**lines[9], "id": "9", "skipped": "empty text", "auto_coded": False}
    assert lines[15]["id"] == "7" and lines[15]["skipped"] == "empty text"
    p1, p_all = np.load(tmp_path / "p1.npz"), np.load(tmp_path / "p10000.npz")
    assert set(p1.files) == set(p_all.files)
    for key in p1.files:
        assert np.array_equal(p1[key], p_all[key])
    # batched as usual (sorted by length within a chunk): the same lines up to float rounding of the padding
    batched, _ = predict(capsys, s["model"], s["file"], tmp_path / "batched.jsonl", "--chunk-size", 7)
    for a, b in zip(lines, map(json.loads, batched.splitlines()), strict=True):
        assert a["id"] == b["id"] and a.get("skipped") == b.get("skipped")
        for t, cell in a["tasks"].items():
            assert cell["prediction"] == b["tasks"][t]["prediction"]
            if cell["probability"] is not None:
                assert abs(cell["probability"] - b["tasks"][t]["probability"]) < 1e-5


def test_csv_and_a_datasets_spec_give_the_same_lines_as_jsonl(student, tmp_path, capsys):
    import pandas as pd

    s, one = student, ("--batch-size", 1)
    # CSV and datasets give a column one type: the float id 7.0 among string ids would read as "7.0"; leave it out
    records = [r for r in s["records"] if r.get("id") != 7.0]
    reference, _ = predict(
        capsys, s["model"], write_jsonl(tmp_path / "r.jsonl", records), tmp_path / "ref.jsonl", *one
    )
    pd.DataFrame(records).to_csv(tmp_path / "reports.csv.gz", index=False)
    csv_out, _ = predict(
        capsys, s["model"], tmp_path / "reports.csv.gz", tmp_path / "csv.jsonl", "--chunk-size", 5, *one
    )
    spec = f"json:{tmp_path / 'r.jsonl'}"
    spec_out, _ = predict(capsys, s["model"], spec, tmp_path / "spec.jsonl", "--chunk-size", 5, *one)
    assert csv_out == reference and spec_out == reference


def test_reading_is_lazy_and_rows_held_are_bounded_by_the_chunk(student, tmp_path, capsys, monkeypatch):
    s = student
    base = [r for r in s["records"] if isinstance(r.get("text"), str)]
    many = [{**base[i % len(base)], "id": f"r{i}"} for i in range(1300)]
    big = write_jsonl(tmp_path / "big.jsonl", many)
    read, calls = [0], []
    real_iter, real_run = reportkd.data.iter_records, _classifier._run_records

    def counting_iter(source, *, chunk_size=None):
        for chunk in real_iter(source, chunk_size=chunk_size):
            read[0] += len(chunk)
            yield chunk

    def spying_run(clf, records, tasks, args, **kw):
        calls.append((read[0], len(records), kw["offset"]))
        return real_run(clf, records, tasks, args, **kw)

    monkeypatch.setattr(reportkd.data, "iter_records", counting_iter)
    monkeypatch.setattr(_classifier, "_run_records", spying_run)
    predict(capsys, s["model"], big, tmp_path / "big_out.jsonl", "--chunk-size", 100)
    assert [n for _, n, _ in calls] == [100] * 13  # the model sees one chunk at a time
    assert [off for _, _, off in calls] == list(range(0, 1300, 100))
    assert calls[0][0] < 1300  # the first chunk is predicted before the file is read to the end
    for already_read, _, offset in calls:  # look-ahead: at most 1,000 records (the column check) plus one chunk
        assert already_read - offset <= 1000 + 100
    assert len((tmp_path / "big_out.jsonl").read_text().splitlines()) == 1300


def test_bad_chunk_size_and_an_offline_hub_spec_are_one_line_errors(student, tmp_path, capsys, monkeypatch):
    import datasets
    import huggingface_hub

    s = student
    rc = main(["predict", "--model", str(s["model"]), "--data", str(s["file"]), "--out", str(tmp_path / "o.jsonl"),
               "--chunk-size", "0"])  # fmt: skip
    assert rc == 2 and "--chunk-size must be >= 1" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    for command in ("predict", "calibrate"):
        rc = main([command, "--model", str(s["model"]), "--data", "hf:someorg/reports:test",
                   "--out", str(tmp_path / f"{command}.json")])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 1, err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and "someorg/reports" in errors[0] and "HF_HUB_OFFLINE=1" in errors[0]
        assert "Traceback" not in err
        assert not (tmp_path / f"{command}.json").exists()
