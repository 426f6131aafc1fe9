"""``benchmarks/abstention_tcga.py``: the registry-backlog split (``--backlog``), its students and the transductive
diagnostic (the teacher's labels on the evaluation texts as transfer data).

The backlog is a held-back part of the training split: no model sees its labels, the backlog file holds texts only,
and students marked ``backlog`` get it as ``unlabelled`` transfer data, labelled by the teacher.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from reportkd.synthetic import generate_reports
from reportkd.text.mtcnn.arguments import MtCNNJobArguments
from reportkd.text.mtcnn.pipeline import prepare_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("abstention_bench", ROOT / "benchmarks" / "abstention_tcga.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_student_names_a_known_teacher_and_job_fields(bench):
    fields = set(MtCNNJobArguments.__dataclass_fields__)
    for name, spec in bench.STUDENTS.items():
        assert spec["teacher"] in bench.TEACHERS, name
        assert set(spec) - {"teacher", "backlog"} <= fields, name
    for name, spec in bench.TEACHERS.items():
        assert set(spec) <= fields, name


def test_hold_back_partitions_training_reports_and_hides_labels(bench, tmp_path):
    job = MtCNNJobArguments(tasks=["organ", "cancer_type"], max_length=64, split_seed=0)
    prepared = prepare_data(generate_reports(200, seed=0), job)
    texts = list(prepared.train[job.text_column])
    labelled, path = bench.hold_back(prepared, job, 0.25, tmp_path, seed=0)
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert all(set(r) == {job.text_column} for r in rows)  # texts only: no label leaves the held-back rows
    back = [r[job.text_column] for r in rows]
    kept = list(labelled.train[job.text_column])
    assert len(back) == round(0.25 * len(texts)) and len(kept) + len(back) == len(texts)
    assert sorted(kept + back) == sorted(texts)  # a partition of the training reports
    assert labelled.calibration is prepared.calibration and labelled.test is prepared.test
    assert labelled.tokenizer is prepared.tokenizer
    mtime = Path(path).stat().st_mtime_ns
    again, path2 = bench.hold_back(prepared, job, 0.25, tmp_path, seed=0)  # same split, file left as it was
    assert path2 == path and Path(path).stat().st_mtime_ns == mtime
    assert list(again.train[job.text_column]) == kept
    other, _ = bench.hold_back(prepared, job, 0.25, tmp_path / "s1", seed=1)
    assert list(other.train[job.text_column]) != kept


def test_backlog_student_trains_on_the_teacher_labelled_backlog(bench, tmp_path, capsys):
    out = bench.main(
        ["--synthetic", "240", "--quick", "--seeds", "0", "--backlog", "0.5", "--students",
         "backlog_soft,transductive_soft", "--halvings", "2", "--resamples", "0", "--cache-dir", str(tmp_path)]
    )  # fmt: skip
    log = capsys.readouterr().err
    assert out["settings"]["backlog"] == 0.5
    n_back, n_eval = (int(part.split(",")[0]) for part in log.split("transfer rows {'unlabelled': ")[1:])
    d = out["data"]
    assert n_back == d["train"]  # half held back: as many backlog rows as labelled ones
    assert n_eval == d["calibration"] + d["test"]  # the diagnostic's transfer data: the evaluation texts
    per_seed = out["per_seed"][0]
    assert {"baseline", "student-backlog_soft", "student-transductive_soft", "ensemble-insample8"} <= set(per_seed)
    acc = per_seed["student-backlog_soft"]["organ"]["accuracy"]
    assert 0 <= acc <= 1 and np.isfinite(acc)
    # --anchor-variant: a student recipe becomes the tables' anchor, so its own differences are zero
    paired = bench.main(
        ["--synthetic", "240", "--quick", "--seeds", "0", "--backlog", "0.5", "--students",
         "backlog_soft,transductive_soft", "--anchor-variant", "backlog_soft", "--cached-only", "--halvings", "2",
         "--resamples", "0", "--cache-dir", str(tmp_path)]
    )  # fmt: skip
    assert paired["per_seed"][0]["baseline"] == per_seed["student-backlog_soft"]
    assert "student-backlog_soft" not in paired["per_seed"][0]
    with pytest.raises(SystemExit, match="must be one of --students"):
        bench.main(["--synthetic", "240", "--quick", "--students", "backlog_soft", "--anchor-variant", "insample"])
    with pytest.raises(SystemExit, match="needs --backlog"):
        bench.main(["--synthetic", "240", "--quick", "--seeds", "0", "--students", "backlog_soft",
                    "--cache-dir", str(tmp_path / "none")])  # fmt: skip
