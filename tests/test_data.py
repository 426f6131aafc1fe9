import gzip
import json
import logging

import numpy as np
import pytest
from datasets import Dataset

from reportkd.data import (
    IGNORE_INDEX,
    ReportCollator,
    attach_teacher_outputs,
    build_label_maps,
    encode_labels,
    load_reports,
    load_soft_labels,
    save_soft_labels,
    split_indices,
)

RECORDS = [
    {"id": "a", "text": "invasive ductal carcinoma of the left breast", "organ": "breast", "grade": "G2"},
    {"id": "b", "text": "   ", "organ": "breast", "grade": "G1"},
    {"id": "c", "text": "clear cell renal cell carcinoma", "organ": "kidney", "grade": None},
    {"id": "d", "text": "", "organ": "kidney", "grade": "G3"},
    {"id": "e", "text": "benign prostatic tissue", "organ": "prostate", "grade": float("nan")},
]


def test_load_reports_skips_and_counts_empty_text(caplog):
    with caplog.at_level(logging.WARNING):
        ds, stats = load_reports(RECORDS, task_columns=["organ", "grade"])
    assert ds["id"] == ["a", "c", "e"]
    assert stats.total == 5 and stats.kept == 3 and stats.skipped_empty == 2
    assert stats.missing_labels == {"organ": 0, "grade": 2}
    assert ds["grade"] == ["G2", None, None]
    assert "Skipped 2 of 5" in caplog.text


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".csv", ".parquet"])
def test_load_reports_from_files(tmp_path, suffix):
    path = tmp_path / f"reports{suffix}"
    if suffix.startswith(".jsonl"):
        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    else:
        import pandas as pd

        df = pd.DataFrame(RECORDS)
        df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    ds, stats = load_reports(path, task_columns=["organ"])
    assert stats.kept == 3 and ds["organ"] == ["breast", "kidney", "prostate"]


def test_integer_class_ids_in_a_csv_with_gaps_stay_integers(tmp_path):
    """pandas writes an integer column with a missing value as floats (3.0); the labels must still read as "3"."""
    import pandas as pd

    path = tmp_path / "reports.csv"
    pd.DataFrame(
        {"id": [10, 11, 12], "text": ["tumour grade three", "tumour grade one", "no grade"], "grade": [3, 1, None]}
    ).to_csv(path, index=False)
    assert "3.0" in path.read_text()
    ds, stats = load_reports(path, task_columns=["grade"], id_column="id")
    assert ds["grade"] == ["3", "1", None] and stats.missing_labels == {"grade": 1}
    assert ds["id"] == ["10", "11", "12"]
    assert encode_labels(ds["grade"], ["1", "3", "other"]) == [1, 0, IGNORE_INDEX]
    ds, _ = load_reports([{"text": "a b", "grade": 2.5}], task_columns=["grade"])
    assert ds["grade"] == ["2.5"]  # a real fraction stays as written


def test_unknown_column_error_lists_available_columns():
    with pytest.raises(ValueError, match=r"Column\(s\) \['site'\] not found.*Available columns: \['grade', 'id'"):
        load_reports(RECORDS, task_columns=["site"])
    with pytest.raises(ValueError, match="empty text"):
        load_reports([{"text": " ", "organ": "x"}], task_columns=["organ"])
    with pytest.raises(FileNotFoundError):
        load_reports("/nonexistent/reports.jsonl")
    with pytest.raises(ValueError, match="Unsupported"):
        load_reports(__file__)


def test_label_maps_bucket_rare_classes_into_other():
    data = {"t": ["a"] * 5 + ["b"] * 3 + ["c"] * 1 + [None, "unknown", "unknown"]}
    maps = build_label_maps(data, ["t"], min_class_count=3)
    assert maps["t"] == ["a", "b", "other"]  # unknown (2) and c (1) are rare
    assert build_label_maps(data, ["t"], min_class_count=2)["t"] == ["a", "b", "unknown", "other"]
    assert build_label_maps(data, ["t"], min_class_count=2, unknown_as_missing=True)["t"] == ["a", "b", "other"]
    ids = encode_labels(["a", "c", None, "zzz", "unknown"], ["a", "b", "other"], unknown_as_missing=True)
    assert ids == [0, 2, IGNORE_INDEX, 2, IGNORE_INDEX]
    with pytest.raises(ValueError, match="no labels"):
        build_label_maps({"t": [None, ""]}, ["t"])


def test_collator_pads_and_stacks():
    feats = [
        {"input_ids": [5, 6, 7], "labels": [0, -100], "teacher_probs": {"x": [0.2, 0.8]}},
        {"input_ids": [8], "labels": [1, 2], "teacher_probs": {"x": [0.5, 0.5]}},
    ]
    batch = ReportCollator(pad_token_id=0, min_length=5)(feats)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1]
    assert batch["labels"].tolist() == [[0, -100], [1, 2]]
    assert batch["teacher_probs"]["x"].shape == (2, 2)


def test_soft_labels_round_trip_and_refusals(tmp_path):
    maps = {"organ": ["breast", "kidney", "other"]}
    probs = {"organ": np.random.default_rng(0).dirichlet(np.ones(3), size=4).astype(np.float32)}
    path = save_soft_labels(tmp_path / "soft.safetensors", ["a", "b", "c", "d"], probs, maps, {"members": 8})
    loaded, meta = load_soft_labels(path, ids=["a", "b", "c", "d"], task_labels=maps)
    np.testing.assert_array_equal(loaded["organ"], probs["organ"])
    assert meta["members"] == 8 and meta["task_labels"] == maps
    with pytest.raises(ValueError, match="other reports"):
        load_soft_labels(path, ids=["a", "b", "c", "x"])
    with pytest.raises(ValueError, match="label maps"):
        load_soft_labels(path, task_labels={"organ": ["kidney", "breast", "other"]})
    with pytest.raises(ValueError, match="shape"):
        save_soft_labels(tmp_path / "bad.safetensors", ["a"], probs, maps)
    assert not (tmp_path / "bad.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["soft.safetensors"]  # no temp files left behind


def test_attach_teacher_outputs_and_split():
    ds = Dataset.from_dict({"input_ids": [[1], [2], [3]]})
    ds = attach_teacher_outputs(ds, {"t": np.eye(3)})
    assert ds[1]["teacher_probs"] == {"t": [0.0, 1.0, 0.0]}
    parts = split_indices(10, (0.6, 0.2, 0.2), seed=1)
    assert [len(p) for p in parts] == [6, 2, 2]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_indices(10, (0.6, 0.2, 0.2), seed=1)))
    with pytest.raises(ValueError):
        split_indices(10, (0.5, 0.2))
