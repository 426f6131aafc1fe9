"""``--data`` as a file or a ``datasets`` spec, read through one function (``reportkd.data.iter_records``)."""

import gzip
import json
import types
from pathlib import Path

import pytest

from reportkd.data import (
    DatasetSpec,
    iter_records,
    load_reports,
    parse_data_spec,
    read_records,
    report_source,
)
from reportkd.errors import RuntimeFailure, UsageError, describe_error

RECORDS = [
    {"id": f"r{i}", "text": f"report number {i} kidney carcinoma", "organ": "kidney" if i % 2 else "lung"}
    for i in range(10)
]


def write_jsonl(path, records, *, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


@pytest.mark.parametrize(
    "text,expected",
    [
        ("hf:org/reports", DatasetSpec("hf", "org/reports", None, "train")),
        ("hf:org/reports:test", DatasetSpec("hf", "org/reports", None, "test")),
        ("hf:org/reports/tcga:validation[:10%]", DatasetSpec("hf", "org/reports", "tcga", "validation[:10%]")),
        ("hf:imdb", DatasetSpec("hf", "imdb", None, "train")),
        ("json:data/*.jsonl", DatasetSpec("json", "data/*.jsonl", None, "train")),
        ("csv:a/b.csv:test[:5]", DatasetSpec("csv", "a/b.csv", None, "test[:5]")),
        ("parquet:x/*.parquet", DatasetSpec("parquet", "x/*.parquet", None, "train")),
        ("reports.jsonl", None),
        ("synthetic:n=10", None),  # not a datasets scheme: left to the caller
    ],
)
def test_parse_data_spec(text, expected):
    assert parse_data_spec(text) == expected


def test_an_existing_file_is_a_file_even_if_it_looks_like_a_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "hf:org.jsonl", RECORDS[:2])
    assert parse_data_spec("hf:org.jsonl") is None
    assert read_records("hf:org.jsonl") == RECORDS[:2]
    assert parse_data_spec(Path("json:missing/*.jsonl")) == DatasetSpec("json", "missing/*.jsonl")  # Path(spec) too


@pytest.mark.parametrize("bad", ["hf:", "hf:a/b/c/d", "json:", "hf:org/name:"])
def test_malformed_specs_name_the_syntax(bad):
    with pytest.raises(ValueError, match=r"Bad --data spec .*hf:ORG/NAME\[/CONFIG\]\[:SPLIT\]"):
        parse_data_spec(bad)


def test_iter_records_is_a_lazy_generator_of_bounded_chunks(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl.gz", RECORDS, gz=True)
    with open(tmp_path / "broken.jsonl", "w") as f:  # a bad line after the first chunk: only reached later
        f.writelines(json.dumps(r) + "\n" for r in RECORDS[:4])
        f.write("{not json\n")
    chunks = iter_records(path, chunk_size=3)
    assert isinstance(chunks, types.GeneratorType)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [r for c in iter_records(path, chunk_size=3) for r in c] == RECORDS == read_records(path)
    lazy = iter_records(tmp_path / "broken.jsonl", chunk_size=2)
    assert len(next(lazy)) == 2 and len(next(lazy)) == 2
    with pytest.raises(ValueError, match="line 5 is not valid JSON"):
        next(lazy)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet"])
def test_csv_tsv_parquet_stream_in_chunks_with_the_same_records(tmp_path, suffix):
    import pandas as pd

    path = tmp_path / f"r{suffix}"
    frame = pd.DataFrame(RECORDS)
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    chunks = list(iter_records(path, chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert [r for c in chunks for r in c] == RECORDS == read_records(path)


def test_local_files_through_a_datasets_spec_load_like_the_file(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", RECORDS[:6])
    write_jsonl(tmp_path / "b.jsonl", RECORDS[6:])
    spec = f"json:{tmp_path}/*.jsonl"
    assert read_records(spec) == RECORDS
    ds, stats = load_reports(spec, task_columns=["organ"])
    assert ds["id"] == [r["id"] for r in RECORDS] and stats.kept == 10
    assert [len(c) for c in iter_records(spec, chunk_size=4)] == [4, 4, 2]  # streamed (streaming=True)
    assert read_records(f"json:{tmp_path}/a.jsonl:train[:2]") == RECORDS[:2]  # split slicing
    assert len(report_source(spec)) == 10 and report_source(tmp_path / "a.jsonl") == tmp_path / "a.jsonl"


def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, also for the libraries that read it when imported."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_spec_errors_are_one_line_naming_the_source_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"No file matches .*nothing-\*\.jsonl"):
        read_records(f"json:{tmp_path}/nothing-*.jsonl")
    write_jsonl(tmp_path / "a.jsonl", RECORDS)
    with pytest.raises(UsageError, match=r"split 'tset'.*Fix the spec") as e:
        read_records(f"json:{tmp_path}/a.jsonl:tset")
    assert describe_error(e.value)[0] == 2 and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"does not exist.*hf:ORG/NAME"):
        read_records(tmp_path / "missing.jsonl")
    offline(monkeypatch)
    with pytest.raises(RuntimeFailure, match=r"hub dataset 'someorg/reports'.*HF_HUB_OFFLINE=1.*--data FILE") as e:
        load_reports("hf:someorg/reports:test", task_columns=["organ"])
    code, message = describe_error(e.value)
    assert code == 1 and "\n" not in message
