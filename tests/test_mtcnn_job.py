"""The MtCNN job takes the user's TrainingArguments through to every stage, and guards its output folder."""

import dataclasses
import json

import pytest
from transformers import TrainerCallback, TrainingArguments

from reportkd.cli import main as cli_main
from reportkd.synthetic import generate_reports, write_reports
from reportkd.text.mtcnn.arguments import MtCNNJobArguments
from reportkd.text.mtcnn.job import default_training_args, run_mtcnn_job
from reportkd.text.mtcnn.pipeline import stage_args
from reportkd.text.mtcnn.trainer import MtCNNDistillationConfig


def tiny_job(**kw) -> MtCNNJobArguments:
    values = dict(tasks=["organ", "grade"], members=2, folds=2, embedding_dim=8, num_filters=4, kernel_sizes=[2, 3],
                  max_length=64)  # fmt: skip
    return MtCNNJobArguments(**{**values, **kw})


pytestmark = pytest.mark.usefixtures("no_full_gc")


@pytest.fixture(scope="module")
def records():
    return generate_reports(100, seed=2)


class Spy(TrainerCallback):
    """Records, per stage trainer, the arguments it trained with and its last global step."""

    def __init__(self):
        self.seen = {}

    def on_train_end(self, args, state, control, **kwargs):
        self.seen[args.output_dir.rsplit("/", 1)[-1]] = (args, state.global_step)


def test_user_training_flags_reach_every_stage_including_the_teacher_ensemble(records, tmp_path):
    spy = Spy()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, gradient_accumulation_steps=2, per_device_train_batch_size=8,
        learning_rate=2e-3, weight_decay=0.01, max_grad_norm=0.5, seed=11, report_to="none", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    run_mtcnn_job(records, tiny_job(train_dac=True), args, callbacks=[spy])
    assert set(spy.seen) == {"teacher", "baseline", "student", "dac"}
    for stage, (seen, steps) in spy.seen.items():
        assert steps == 2, stage  # max_steps reached the stage's trainer
        assert (seen.gradient_accumulation_steps, seen.per_device_train_batch_size) == (2, 8), stage
        assert (seen.learning_rate, seen.weight_decay, seen.seed, seen.use_cpu) == (2e-3, 0.01, 11, True), stage
    teacher = spy.seen["teacher"][0]
    assert teacher.max_grad_norm == 0.0  # clipped per member instead, at the user's norm
    assert spy.seen["student"][0].max_grad_norm == 0.5
    assert spy.seen["student"][0].alpha == 1.0 and spy.seen["student"][0].teacher_outputs_type == "probs"


def test_stage_args_copy_every_shared_field_and_set_only_the_stage_fields(tmp_path):
    user = default_training_args(tmp_path, gradient_accumulation_steps=4, bf16=False, seed=9, logging_steps=7)
    stage = stage_args(user, tmp_path / "work" / "teacher", max_grad_norm=0.0, task_weights={"organ": 2.0})
    assert isinstance(stage, MtCNNDistillationConfig)
    changed = {"output_dir", "max_grad_norm", "remove_unused_columns"}
    for f in dataclasses.fields(TrainingArguments):
        if f.name not in changed:
            assert getattr(stage, f.name) == getattr(user, f.name), f.name
    assert stage.output_dir.endswith("teacher") and stage.task_weights == {"organ": 2.0}


def test_bad_job_settings_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="alpha must be in"):
        tiny_job(alpha=-0.1)
    code = cli_main(["demo", "--output-dir", str(tmp_path / "out"), "--temperature", "0", "--reports", "50"])
    assert code == 2 and not (tmp_path / "out").exists()


def test_output_equal_to_or_inside_the_input_file_is_refused(records, tmp_path):
    data = write_reports(tmp_path / "reports.jsonl", records)
    before = data.read_bytes()
    for out in (data, data / "sub"):
        with pytest.raises(ValueError, match="input file"):
            run_mtcnn_job(str(data), tiny_job(), default_training_args(out))
    assert data.read_bytes() == before


def test_an_output_folder_under_a_file_is_a_one_line_error(records, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run_mtcnn_job(records, tiny_job(), default_training_args(blocker / "out"))


def test_a_foreign_non_empty_folder_is_refused_unless_overwrite(records, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    args = default_training_args(tmp_path, max_steps=1, disable_tqdm=True)
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        run_mtcnn_job(records, tiny_job(), args)
    run_mtcnn_job(records, tiny_job(), args, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # --overwrite replaces only the job's own outputs
    assert (tmp_path / "student" / "thresholds.json").is_file()


def test_resume_without_a_run_to_resume_is_refused(records, tmp_path):
    with pytest.raises(ValueError, match="Nothing to resume"):
        run_mtcnn_job(records, tiny_job(), default_training_args(tmp_path), resume=True)
    with pytest.raises(FileNotFoundError, match="not found"):
        run_mtcnn_job(records, tiny_job(), default_training_args(tmp_path), resume=str(tmp_path / "checkpoint-9"))


def test_second_demo_into_the_same_folder_refuses_without_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    flags = ["demo", "--output-dir", str(out), "--reports", "120", "--members", "2", "--folds", "2", "--epochs", "1",
             "--embedding-dim", "8", "--num-filters", "4", "--max-length", "64", "--tasks", "organ,grade"]  # fmt: skip
    assert cli_main(flags) == 0
    first = json.loads((out / "results.json").read_text())
    assert (out / "student" / "thresholds.json").is_file() and (out / "baseline" / "thresholds.json").is_file()
    capsys.readouterr()
    assert cli_main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert json.loads((out / "results.json").read_text()) == first
    assert cli_main([*flags, "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["models"] == first["models"]  # same seed, same run


def test_a_killed_demo_resumes_when_rerun(tmp_path, monkeypatch, caplog):
    from reportkd.text.mtcnn import pipeline

    out = tmp_path / "demo"
    flags = ["demo", "--output-dir", str(out), "--reports", "120", "--members", "2", "--folds", "2", "--epochs", "1",
             "--embedding-dim", "8", "--num-filters", "4", "--max-length", "64", "--tasks", "organ"]  # fmt: skip
    calls = {"teacher": 0, "student": 0}
    real_teacher, real_single = pipeline.train_teacher_ensemble, pipeline.train_single

    def teacher(*args, **kwargs):
        calls["teacher"] += 1
        return real_teacher(*args, **kwargs)

    def killed_student(*args, **kwargs):
        if len(args) > 4 and args[4] is not None:
            calls["student"] += 1
            if calls["student"] == 1:
                raise KeyboardInterrupt  # Ctrl-C while the student trains
        return real_single(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_teacher_ensemble", teacher)
    monkeypatch.setattr(pipeline, "train_single", killed_student)
    assert cli_main(flags) == 130  # interrupted
    assert calls == {"teacher": 1, "student": 1} and not (out / "results.json").exists()
    assert cli_main(flags) == 0
    assert calls == {"teacher": 1, "student": 2}  # the teacher ensemble was reused, the student retrained
    assert "reusing the complete stages teacher, soft_labels, baseline" in caplog.text
    assert (out / "student" / "thresholds.json").is_file()


def test_consistent_teaching_labels_the_augmented_view_the_student_sees(records, tmp_path, monkeypatch):
    from reportkd.text.mtcnn.ensemble import MtCNNEnsembleForReportClassification
    from reportkd.text.mtcnn.modeling_mtcnn import MtCNNForReportClassification

    teacher_views, student_views = [], []
    soft_labels, forward = MtCNNEnsembleForReportClassification.soft_labels, MtCNNForReportClassification.forward

    def spy_teacher(self, input_ids, *a, **k):
        teacher_views.append(input_ids.clone())
        return soft_labels(self, input_ids, *a, **k)

    def spy_student(self, input_ids=None, *a, **k):
        if self.training:
            student_views.append(input_ids.clone())
        return forward(self, input_ids, *a, **k)

    monkeypatch.setattr(MtCNNEnsembleForReportClassification, "soft_labels", spy_teacher)
    monkeypatch.setattr(MtCNNForReportClassification, "forward", spy_student)
    args = default_training_args(tmp_path, max_steps=3, disable_tqdm=True, per_device_train_batch_size=8)
    results = run_mtcnn_job(records, tiny_job(consistent_teaching=True, alpha=1.0, train_baseline=False), args)
    assert len(teacher_views) == 3 and len(student_views) == 3  # one teacher pass per student step
    assert all(t.equal(s) for t, s in zip(teacher_views, student_views))
    plain = dataclasses.replace(tiny_job(alpha=1.0, train_baseline=False))
    from reportkd.text.mtcnn.pipeline import prepare_data

    originals = {tuple(r) for r in prepare_data(records, plain, 0).train["input_ids"]}
    views = {tuple(int(x) for x in row if x != 0) for row in student_views[0]}
    assert views - originals, "the student saw no augmented view"
    assert results["settings"]["job"]["consistent_teaching"] is True


def test_unlabelled_reports_and_counterfactuals_flow_through_the_job(records, tmp_path):
    extra = tmp_path / "backlog.jsonl"
    write_reports(extra, [{"id": f"u{i}", "text": r["text"]} for i, r in enumerate(generate_reports(30, seed=8))])
    args = default_training_args(tmp_path / "out", num_train_epochs=1, disable_tqdm=True)
    job = tiny_job(unlabelled=str(extra), counterfactuals="add", cod_max_edits=3, alpha=1.0)
    results = run_mtcnn_job(records, job, args)
    transfer = results["data"]["transfer"]
    assert transfer["unlabelled"] == 30
    assert transfer["cod_attempted"] == results["data"]["train"] and 0 < transfer["counterfactuals"] <= 60
    assert json.loads((tmp_path / "out" / "results.json").read_text())["data"]["transfer"] == transfer
    with pytest.raises(ValueError, match="other settings"):  # the transfer data is part of the student's settings
        run_mtcnn_job(records, tiny_job(unlabelled=str(extra), alpha=1.0), args, resume=True)


def test_transfer_options_are_validated():
    with pytest.raises(ValueError, match="counterfactuals"):
        tiny_job(counterfactuals="some")
    with pytest.raises(ValueError, match="not found"):
        tiny_job(unlabelled="/nonexistent/backlog.jsonl")
    with pytest.raises(ValueError, match="alpha > 0"):
        tiny_job(consistent_teaching=True, alpha=0.0)


def test_cod_equal_keeps_half_the_reports_and_adds_their_counterfactuals(records, tmp_path):
    args = default_training_args(tmp_path, max_steps=1, disable_tqdm=True)
    results = run_mtcnn_job(records, tiny_job(counterfactuals="equal", alpha=1.0, train_baseline=False), args)
    assert results["data"]["transfer"]["cod_attempted"] == results["data"]["train"] // 2


def test_demo_and_recipe_take_a_datasets_spec_like_the_file(tmp_path):
    from reportkd.text.mtcnn.recipe import load_source

    data = write_reports(tmp_path / "reports.jsonl", generate_reports(120, seed=3))
    source, origin = load_source(f"json:{data}")
    assert not isinstance(source, str) and len(source) == 120 and "json:" in origin  # loaded as a Dataset
    flags = ["--members", "1", "--epochs", "1", "--embedding-dim", "8", "--num-filters", "4", "--max-length", "64",
             "--tasks", "organ", "--folds", "1"]  # fmt: skip
    assert cli_main(["demo", "--output-dir", str(tmp_path / "file"), "--data", str(data), *flags]) == 0
    assert cli_main(["demo", "--output-dir", str(tmp_path / "spec"), "--data", f"json:{data}", *flags]) == 0
    by_file, by_spec = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("file", "spec"))
    assert by_spec["models"] == by_file["models"]  # same reports, same split, same models


def test_a_one_member_ensemble_predicts_like_its_member():
    import numpy as np
    from datasets import Dataset

    from reportkd.text.mtcnn.configuration_mtcnn import MtCNNConfig
    from reportkd.text.mtcnn.ensemble import MtCNNEnsembleForReportClassification
    from reportkd.text.mtcnn.predict import predict_member_probs, predict_probs

    config = MtCNNConfig(vocab_size=30, embedding_dim=8, num_filters=4, task_labels={"organ": ["a", "b", "c"]})
    ensemble = MtCNNEnsembleForReportClassification(config)  # num_members defaults to one
    assert ensemble.num_members == 1
    rows = Dataset.from_dict({"input_ids": [[i % 29 + 1] * (5 + i % 7) for i in range(9)]})
    members = predict_member_probs(ensemble, rows, batch_size=4)["organ"]
    assert members.shape == (1, 9, 3)  # three batches joined along the report axis
    probs = predict_probs(ensemble, rows, batch_size=4)["organ"]
    np.testing.assert_allclose(probs, predict_probs(ensemble.member(0), rows, batch_size=4)["organ"], atol=1e-6)
