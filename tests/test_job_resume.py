"""Fault injection: the MtCNN job killed at every stage boundary (and inside every stage) resumes when rerun.

A rerun reuses every complete stage (counted calls: nothing before the kill is retrained) and ends with exactly the
student weights and results of an uninterrupted run with the same seed.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from reportkd.synthetic import generate_reports
from reportkd.text.mtcnn import job as job_module
from reportkd.text.mtcnn import pipeline
from reportkd.text.mtcnn.arguments import MtCNNJobArguments
from reportkd.text.mtcnn.job import default_training_args, run_mtcnn_job

STAGES = ["teacher", "soft_labels", "baseline", "student", "dac", "calibration"]


class Killed(Exception):
    """Stands for the process being killed."""


def tiny_job() -> MtCNNJobArguments:
    return MtCNNJobArguments(
        tasks=["organ", "grade"], members=2, folds=2, embedding_dim=8, num_filters=4, kernel_sizes=[2, 3],
        max_length=64, train_dac=True, target_accuracy=0.9,
    )  # fmt: skip


def tiny_args(out, **kw):
    return default_training_args(out, num_train_epochs=2, per_device_train_batch_size=16, seed=3, disable_tqdm=True,
                                 logging_strategy="no", **kw)  # fmt: skip


pytestmark = pytest.mark.usefixtures("no_full_gc")


@pytest.fixture(scope="module")
def records():
    return generate_reports(120, seed=5)


@pytest.fixture(scope="module")
def reference(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    results = run_mtcnn_job(records, tiny_job(), tiny_args(out))
    return load_file(out / "student" / "model.safetensors"), results


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of each stage function (the job calls them through the modules, so wrapping works)."""
    counts = {s: 0 for s in STAGES}
    kill_inside = {"stage": None}

    def wrap(module, name, stage_of):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            stage = stage_of(args, kwargs)
            counts[stage] += 1
            result = original(*args, **kwargs)
            if kill_inside["stage"] == stage:  # killed after the work, before the stage is marked complete
                raise Killed(stage)
            return result

        monkeypatch.setattr(module, name, wrapper)

    wrap(pipeline, "train_teacher_ensemble", lambda a, k: "teacher")
    wrap(pipeline, "soft_labels", lambda a, k: "soft_labels")
    wrap(pipeline, "train_single", lambda a, k: "student" if len(a) > 4 and a[4] is not None else "baseline")
    wrap(pipeline, "train_dac", lambda a, k: "dac")
    wrap(job_module, "job_results", lambda a, k: "calibration")
    return counts, kill_inside


def assert_same_as_reference(out, reference):
    weights, results = reference
    resumed = load_file(out / "student" / "model.safetensors")
    assert resumed.keys() == weights.keys()
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)
    assert json.loads((out / "results.json").read_text())["models"] == json.loads(json.dumps(results["models"]))


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_killed_after_a_stage_resumes_from_the_next(stage, records, reference, calls, tmp_path):
    counts, _ = calls

    def kill(name):
        if name == stage:
            raise Killed(name)

    with pytest.raises(Killed):
        run_mtcnn_job(records, tiny_job(), tiny_args(tmp_path), on_stage_end=kill)
    done = STAGES[: STAGES.index(stage) + 1]
    assert all(counts[s] == (s in done) for s in STAGES)
    for s in STAGES:
        counts[s] = 0
    run_mtcnn_job(records, tiny_job(), tiny_args(tmp_path))
    assert {s: counts[s] for s in STAGES} == {s: int(s not in done) for s in STAGES}
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.parametrize("stage", STAGES)
def test_killed_inside_a_stage_redoes_only_that_stage_and_later(stage, records, reference, calls, tmp_path):
    counts, kill_inside = calls
    kill_inside["stage"] = stage
    with pytest.raises(Killed):
        run_mtcnn_job(records, tiny_job(), tiny_args(tmp_path))
    kill_inside["stage"] = None
    for s in STAGES:
        counts[s] = 0
    run_mtcnn_job(records, tiny_job(), tiny_args(tmp_path))
    before = STAGES[: STAGES.index(stage)]
    assert {s: counts[s] for s in STAGES} == {s: int(s not in before) for s in STAGES}
    assert_same_as_reference(tmp_path, reference)


class KillAtStep(TrainerCallback):
    """Kills the student's training at a given optimizer step (after the checkpoint of that step is saved)."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if args.output_dir.endswith("student") and state.global_step == self.step:
            raise Killed(f"student at step {self.step}")


def test_a_stage_killed_mid_training_continues_from_its_checkpoint(records, reference, tmp_path):
    args = tiny_args(tmp_path, save_strategy="steps", save_steps=3)
    with pytest.raises(Killed):
        run_mtcnn_job(records, tiny_job(), args, callbacks=[KillAtStep(3)])
    assert (tmp_path / "work" / "student" / "checkpoint-3").is_dir()
    steps = []

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if args.output_dir.endswith("student") and not steps:
                steps.append(state.global_step)

    run_mtcnn_job(records, tiny_job(), args, callbacks=[FirstStep()])
    assert steps == [4]  # continued after step 3, not from scratch
    assert_same_as_reference(tmp_path, reference)


def test_rerun_with_other_settings_is_refused_with_the_way_out(records, tmp_path):
    def kill(name):
        raise Killed(name)

    with pytest.raises(Killed):
        run_mtcnn_job(records, tiny_job(), tiny_args(tmp_path), on_stage_end=kill)
    other = tiny_job()
    other.members, other.folds = 4, 2
    with pytest.raises(ValueError, match=r"stage 'teacher': members.*--overwrite"):
        run_mtcnn_job(records, other, tiny_args(tmp_path))
    with pytest.raises(ValueError, match="stage 'teacher': training"):
        run_mtcnn_job(records, tiny_job(), tiny_args(tmp_path, learning_rate=1e-4))
