"""The MtCNN ensemble-distillation job: one function that ``reportkd demo`` and the ``mtcnn_distill`` recipe call.

:func:`run_mtcnn_job` runs the stages of :mod:`reportkd.text.mtcnn.pipeline` with the user's ``TrainingArguments``
(every stage gets its own output folder and sets only what it must) and writes into ``output_dir``::

    student/  baseline/  dac/      model, tokenizer, thresholds.json, eval_results.json, distillation.json
    ensemble/                      the teacher ensemble (model, tokenizer); a mixed teacher (``teacher_archs``):
                                   teacher.json and a folder per group (``MixedTeacherEnsemble``)
    soft_labels.safetensors        the teacher's soft labels of the training reports
    results.json                   settings, data counts, per model and task the calibration and test metrics
    work/<stage>/                  trainer output folders (checkpoints when save_strategy asks for them)
    work/stages/<stage>.json       manifests: each stage's settings and hash, written atomically

The job is resumable stage by stage: a stage whose manifest says complete and whose settings match is reused (a
stage cut short continues from its newest trainer checkpoint, if any). A folder holding anything else, other
settings, or a finished run is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoModel, TrainingArguments

from reportkd.data import load_soft_labels, save_soft_labels
from reportkd.recipes import last_checkpoint
from reportkd.utils import write_json

from . import pipeline as stages
from .arguments import MtCNNJobArguments
from .results import job_results, save_results, teacher_summary

logger = logging.getLogger(__name__)

STAGES = ("teacher", "soft_labels", "baseline", "student", "dac", "calibration")
# files and folders the job writes into output_dir (the only ones --overwrite removes)
OUTPUTS = ("student", "baseline", "dac", "ensemble", "work", "soft_labels.safetensors", "results.json", "table.md")
# training arguments that do not change the weights (left out of the stage settings hashes)
_COSMETIC = {
    "output_dir", "run_name", "report_to", "disable_tqdm", "push_to_hub", "resume_from_checkpoint", "project",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "per_device_eval_batch_size", "skip_memory_metrics", "do_train", "do_eval", "do_predict", "local_rank",
    "include_num_input_tokens_seen", "enable_jit_checkpoint", "ddp_timeout", "remove_unused_columns",
}  # fmt: skip
_COSMETIC_PREFIXES = ("logging_", "log_", "save_", "hub_", "trackio_", "eval_")


def default_training_args(output_dir: str | os.PathLike, **kwargs: Any) -> TrainingArguments:
    """``reportkd demo``'s training arguments: constant learning rate, no warm-up or weight decay, no checkpoints.

    Args:
        output_dir: The job's output folder.
        **kwargs: Any ``TrainingArguments`` field (``num_train_epochs``, ``per_device_train_batch_size``…).
    """
    values = dict(
        output_dir=str(output_dir), num_train_epochs=8, per_device_train_batch_size=32, learning_rate=3e-3,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, seed=0, save_strategy="no",
        logging_strategy="epoch", report_to="none", dataloader_num_workers=0, disable_tqdm=False,
    )  # fmt: skip
    values.update(kwargs)
    return TrainingArguments(**values)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(source: Any) -> str:
    """A hash of the reports: a file's bytes, a ``Dataset``'s fingerprint, or a list of records' JSON.

    Args:
        source: A reports file, a ``Dataset`` or a list of records.
    """
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"Reports file {source} not found; give an existing .jsonl/.csv/.parquet file.")
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()[:16]
    fingerprint = getattr(source, "_fingerprint", None)
    return str(fingerprint) if fingerprint else _hash(list(source))


def training_fingerprint(args: TrainingArguments) -> dict[str, Any]:
    """The training arguments that shape the weights (logging, saving, hub and output fields left out).

    Args:
        args: The user's training arguments.
    """
    out = {}
    for f in dataclasses.fields(args):
        if f.name in _COSMETIC or f.name.startswith(_COSMETIC_PREFIXES):
            continue
        value = getattr(args, f.name)
        out[f.name] = value if isinstance(value, (bool, int, float, str, list, dict, type(None))) else str(value)
    out["world_size"] = getattr(args, "world_size", 1)
    return out


def check_output_dir(output_dir: Path, source: Any) -> None:
    """Refuses an output folder that is (or would swallow) the input file, lies under a file, or is not writable.

    Args:
        output_dir: The job's output folder (created when missing).
        source: The reports (a path is checked against ``output_dir``).
    """
    if isinstance(source, (str, os.PathLike)):
        data, out = Path(source).resolve(), output_dir.resolve()
        if out == data or data in out.parents:
            raise ValueError(f"The output folder {output_dir} is the input file {source}; choose another folder.")
        if any(data == out / name or (out / name) in data.parents for name in OUTPUTS):
            raise ValueError(f"The input file {source} lies where the job writes its outputs; move it or the output.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"Cannot create the output folder {output_dir}: it or a parent is a file.") from None
    except PermissionError:
        raise ValueError(f"Cannot create the output folder {output_dir}: permission denied.") from None
    if not output_dir.is_dir():
        raise ValueError(f"The output folder {output_dir} is a file; give a folder.")
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ValueError(f"The output folder {output_dir} is not writable; choose another folder.")


class JobState:
    """The stage manifests in ``output_dir/work/stages``: which stages are complete, with which settings.

    Args:
        output_dir: The job's output folder.
        settings: Stage → the settings it depends on (:func:`stage_settings`).
        is_main: Whether this process writes the manifests (the main process of a distributed run).
    """

    def __init__(self, output_dir: Path, settings: dict[str, dict[str, Any]], *, is_main: bool = True) -> None:
        self.dir = output_dir / "work" / "stages"
        self.settings = settings
        self.hashes = {stage: _hash(s) for stage, s in settings.items()}
        self.is_main = is_main

    def manifest(self, stage: str) -> dict[str, Any] | None:
        path = self.dir / f"{stage}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def recorded(self) -> dict[str, dict[str, Any]]:
        return {s: m for s in STAGES if (m := self.manifest(s)) is not None}

    def check(self) -> None:
        """Raises when a recorded stage ran with other settings than this run's."""
        for stage, manifest in self.recorded().items():
            if stage in self.hashes and manifest.get("settings_hash") == self.hashes[stage]:
                continue
            old, new = manifest.get("settings", {}), self.settings.get(stage, {})
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["(stage not in this run)"]
            raise ValueError(
                f"{self.dir.parent.parent} holds a run of this job with other settings (stage {stage!r}: "
                f"{', '.join(differ)[:200]}); pass --overwrite to replace it or choose a new output folder."
            )

    def complete(self, stage: str) -> bool:
        manifest = self.manifest(stage)
        return manifest is not None and manifest.get("status") == "complete"

    def mark(self, stage: str, status: str) -> None:
        if self.is_main:
            write_json(
                self.dir / f"{stage}.json",
                {"stage": stage, "status": status, "settings_hash": self.hashes[stage],
                 "settings": self.settings[stage]},
            )  # fmt: skip


def stage_settings(
    job: MtCNNJobArguments, args: TrainingArguments, data_hash: str, stages_run: list[str]
) -> dict[str, dict[str, Any]]:
    """The settings each stage depends on (upstream stages by their hashes).

    Args:
        job: The job settings.
        args: The user's training arguments.
        data_hash: :func:`data_fingerprint` of the reports.
        stages_run: The stages this run trains (baseline and DAC are optional).
    """
    common = {"data": data_hash, **job.data_fields, **job.model_fields, "split_seed": job.split_seed,
              "training": training_fingerprint(args), "task_weights": job.task_weights}  # fmt: skip
    s: dict[str, dict[str, Any]] = {"teacher": {**common, **job.teacher_fields}}
    s["soft_labels"] = {"teacher": _hash(s["teacher"])}
    if job.student_arch != "mtcnn":  # only when set: runs from before the option keep their hashes
        common["student_arch"] = job.student_arch
    s["baseline"] = dict(common)
    transfer = {**job.transfer_fields, "unlabelled": job.unlabelled and data_fingerprint(job.unlabelled)}
    s["student"] = {**common, "soft_labels": _hash(s["soft_labels"]), "alpha": job.alpha,
                    "temperature": job.temperature, "student_epochs": job.student_epochs, **transfer}  # fmt: skip
    s["dac"] = {**common, "target_accuracy": job.target_accuracy, "dac_targets": job.dac_targets}
    s = {k: v for k, v in s.items() if k in stages_run}
    s["calibration"] = {
        "models": {k: _hash(v) for k, v in s.items()},
        **{k: getattr(job, k) for k in ("target_accuracy", "threshold_method", "delta")},
    }
    return s


def _check_folder(out: Path, state: JobState, *, overwrite: bool, resume: bool | None) -> None:
    """Applies the overwrite / resume rules to ``out`` (raises before anything is read or trained)."""
    if overwrite:
        return
    recorded = state.recorded()
    if resume and not recorded:
        raise ValueError(f"Nothing to resume in {out}: it holds no run of this job; drop the resume option.")
    if not any(out.iterdir()):
        return
    if not recorded or resume is False:
        raise ValueError(f"The output folder {out} is not empty; pass --overwrite to replace it or choose a new one.")
    state.check()
    if resume is None and state.complete("calibration"):
        raise ValueError(f"{out} already holds a finished run of this job; pass --overwrite to redo it.")


def _remove_outputs(out: Path) -> None:
    """Removes what an earlier run of the job wrote into ``out`` (nothing else)."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def run_mtcnn_job(
    source: Any,
    job: MtCNNJobArguments,
    training_args: TrainingArguments,
    *,
    overwrite: bool = False,
    resume: bool | str | None = None,
    data_description: str | None = None,
    command: str | None = None,
    callbacks: list | None = None,
    on_stage_end: Callable[[str], None] | None = None,
    overwrite_flag: str = "--overwrite",
) -> dict[str, Any]:
    """Runs (or resumes) the whole job into ``training_args.output_dir``; returns the results (``results.json``).

    Args:
        source: A reports file, a ``datasets.Dataset`` or a list of records.
        job: Data, model, distillation and abstention settings (validated before anything is trained).
        training_args: The user's training arguments, passed through to the teacher ensemble, baseline, student
            and DAC (seed, epochs, batch size, learning rate, precision, accumulation, ``max_steps``…).
        overwrite: Replace the job's outputs in a non-empty output folder.
        resume: None: continue an interrupted run of this job with the same settings, refuse anything else;
            True: the folder must hold such a run (a finished one is reported again); False: never resume;
            a path: a ``checkpoint-N`` folder of one of the stages to continue from.
        data_description: How the provenance files describe the data (default: the file name).
        command: The command line recorded in the provenance files.
        callbacks: Extra ``TrainerCallback`` objects for every training stage.
        on_stage_end: Called with each stage's name once it is complete (hooks, tests).
        overwrite_flag: How the caller's command line spells ``overwrite`` (named in the errors).
    """
    from accelerate import PartialState

    out = Path(training_args.output_dir)
    check_output_dir(out, source)
    seed = training_args.seed
    run = ["teacher", "soft_labels", *(["baseline"] if job.train_baseline else []), "student"]
    run += ["dac"] if job.train_dac else []
    for name in ("teacher", "baseline", "student", "dac"):  # every stage's arguments checked before any training
        if name in run:
            stages.stage_config(name, job, training_args, out / "work" / name)
    process = PartialState()
    state = JobState(out, stage_settings(job, training_args, data_fingerprint(source), run),
                     is_main=process.is_main_process)  # fmt: skip
    checkpoint = None
    if isinstance(resume, (str, os.PathLike)) and str(resume).strip().lower() in ("last", "true"):
        resume = True
    elif isinstance(resume, (str, os.PathLike)):
        checkpoint, resume = _checkpoint_stage(out, resume), True
    try:
        _check_folder(out, state, overwrite=overwrite, resume=resume)
    except ValueError as e:
        raise ValueError(str(e).replace("--overwrite", overwrite_flag)) from None
    prepared = stages.prepare_data(source, job, seed)  # validates the reports before anything is removed
    done = [] if overwrite else [name for name in state.settings if state.complete(name)]
    if done and process.is_main_process:
        logger.warning("Resuming the run in %s: reusing the complete stages %s.", out, ", ".join(done))
    if overwrite and process.is_main_process:
        _remove_outputs(out)
    process.wait_for_everyone()

    def stage(name: str, build: Callable[[str | None], Any], load: Callable[[], Any]) -> Any:
        if state.complete(name):
            return load()
        resume_from = checkpoint[1] if checkpoint and checkpoint[0] == name else None
        if resume_from is None and state.manifest(name):  # cut short: continue from its newest checkpoint
            resume_from = last_checkpoint(out / "work" / name)
        state.mark(name, "started")
        result = build(None if resume_from is None else str(resume_from))
        process.wait_for_everyone()
        state.mark(name, "complete")
        if on_stage_end is not None:
            on_stage_end(name)
        return result

    def model_stage(name: str, folder: str, train: Callable[[Path, str | None], Any]) -> Any:
        def build(resume_from):
            model = train(out / "work" / name, resume_from)
            if process.is_main_process:
                model.save_pretrained(out / folder)
                prepared.tokenizer.save_pretrained(out / folder)
            return model

        return stage(name, build, lambda: AutoModel.from_pretrained(out / folder).eval())

    kw = {"callbacks": callbacks}
    models: dict[str, Any] = {}
    timing_path = out / "work" / "teacher_time.json"

    def train_teacher(d, r):
        started = time.perf_counter()
        if job.teacher_archs is None:
            model = stages.train_teacher_ensemble(prepared, job, training_args, d, resume_from_checkpoint=r, **kw)
        else:  # a stage cut short retrains its groups (they keep no checkpoints)
            from .teachers import MixedTeacherEnsemble, train_teacher_groups

            model = MixedTeacherEnsemble(train_teacher_groups(prepared, job, training_args, job.teacher_groups, d,
                                                              **kw))  # fmt: skip
        if process.is_main_process:
            write_json(timing_path, {"wall_time_s": time.perf_counter() - started})
        return model

    if job.teacher_archs is None:
        models["ensemble"] = model_stage("teacher", "ensemble", train_teacher)
    else:
        from .teachers import MixedTeacherEnsemble

        def build_mixed(resume_from):
            model = train_teacher(out / "work" / "teacher", resume_from)
            if process.is_main_process:
                model.save_pretrained(out / "ensemble")
                prepared.tokenizer.save_pretrained(out / "ensemble")
            return model

        models["ensemble"] = stage("teacher", build_mixed, lambda: MixedTeacherEnsemble.from_pretrained(
            out / "ensemble", job, len(prepared.train)))  # fmt: skip
    soft_path = out / "soft_labels.safetensors"

    def build_soft(_):
        if job.teacher_archs is None:
            soft = stages.soft_labels(models["ensemble"], prepared, job, seed)
        else:
            from .teachers import mixed_soft_labels

            soft = mixed_soft_labels(models["ensemble"].groups, prepared.train, prepared.tokenizer.pad_token_id)[0]
        if process.is_main_process:
            meta = {"members": job.members, "folds": job.folds, "member_sampling": job.member_sampling}
            meta.update({"teacher_archs": job.teacher_archs} if job.teacher_archs else {})
            save_soft_labels(soft_path, prepared.train["id"], soft, prepared.task_labels, meta)
        return soft

    def load_soft():
        return load_soft_labels(soft_path, ids=prepared.train["id"], task_labels=prepared.task_labels)[0]

    soft = stage("soft_labels", build_soft, load_soft)
    if job.train_baseline:
        models["baseline"] = model_stage("baseline", "baseline", lambda d, r: stages.train_single(
            prepared, job, training_args, d, resume_from_checkpoint=r, **kw))  # fmt: skip
    counts_path = out / "work" / "transfer.json"

    def train_student(d, r):
        transfer, counts = stages.transfer_set(prepared, job, models["ensemble"], seed)
        if process.is_main_process:
            write_json(counts_path, counts)
        return stages.train_single(prepared, job, training_args, d, soft, teacher=models["ensemble"],
                                   transfer=transfer, resume_from_checkpoint=r, **kw)  # fmt: skip

    models["student"] = model_stage("student", "student", train_student)
    if job.train_dac:
        models["dac"] = model_stage("dac", "dac", lambda d, r: stages.train_dac(
            prepared, job, training_args, d, resume_from_checkpoint=r, **kw))  # fmt: skip

    def build_calibration(_):
        results, calibrations = job_results(models, prepared, job, training_args, source, data_description)
        wall = json.loads(timing_path.read_text())["wall_time_s"] if timing_path.is_file() else None
        results["teacher"] = teacher_summary(models["ensemble"], prepared, job, seed, wall)
        if counts_path.is_file():  # transfer data the student saw besides the training reports
            results["data"]["transfer"] = json.loads(counts_path.read_text())
        if process.is_main_process:
            save_results(out, results, calibrations, models, prepared, job, command=command)
        return results

    results = stage("calibration", build_calibration, lambda: json.loads((out / "results.json").read_text()))
    return results


def _checkpoint_stage(out: Path, checkpoint: str | os.PathLike) -> tuple[str, Path]:
    """``(stage, folder)`` of a ``checkpoint-N`` folder of one of the job's stages."""
    path = Path(checkpoint).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"Checkpoint {checkpoint} not found; give a checkpoint-N folder of this job or last.")
    for name in STAGES:
        if path.parent == (out / "work" / name).resolve():
            return name, path
    raise ValueError(f"Checkpoint {checkpoint} is not one of this job's ({out / 'work'}/<stage>/checkpoint-N).")
