"""Calibration, results, saved thresholds and provenance of the MtCNN job (its last stage), and the demo's table."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from reportkd.abstention import weights_fingerprint, write_thresholds
from reportkd.utils import write_json

from .arguments import MtCNNJobArguments
from .pipeline import PreparedData, abstention_report
from .predict import labels_by_task, predict_probs

SAVED = ("student", "baseline", "dac")  # the models saved with thresholds (the ensemble is saved without)
_TRAINING_HP = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "seed",
                "bf16", "fp16")  # fmt: skip


def training_summary(args: TrainingArguments) -> dict[str, Any]:
    """The training arguments worth reporting (JSON-able).

    Args:
        args: The user's training arguments.
    """
    out = {}
    for name in _TRAINING_HP:
        value = getattr(args, name, None)
        if name == "max_steps" and (value or 0) <= 0 or name == "num_train_epochs" and args.max_steps > 0:
            continue
        if name in ("bf16", "fp16") and not value:
            continue
        out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    out["global_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return out


def describe_source(source: Any) -> str:
    """The data as the provenance files name it.

    Args:
        source: A reports file, a ``Dataset`` or a list of records.
    """
    if isinstance(source, (str, os.PathLike)):
        return f"pathology reports from `{Path(source).name}`"
    return "in-memory reports (e.g. reportkd.synthetic)"


def job_results(
    models: dict[str, Any],
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    source: Any,
    data_description: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per model and task: empirical and LTT thresholds from the calibration split, metrics on the test split.

    Args:
        models: Name → trained model (``ensemble``, ``baseline``, ``student``, ``dac``).
        prepared: The job's data.
        job: The job settings (target accuracy, LTT delta, threshold method).
        args: The user's training arguments (reported in the settings).
        source: The reports (described in the data section).
        data_description: How to describe them (default: from ``source``).

    Returns:
        The results (JSON-able) and, per model, the calibration of ``job.threshold_method`` (to save).
    """
    pad = prepared.tokenizer.pad_token_id
    cal_y = labels_by_task(prepared.calibration, prepared.task_labels)
    test_y = labels_by_task(prepared.test, prepared.task_labels)
    results: dict[str, Any] = {
        "settings": {"job": dataclasses.asdict(job), "training": training_summary(args)},
        "data": {
            "source": data_description or describe_source(source),
            **dataclasses.asdict(prepared.stats),
            "train": len(prepared.train),
            "calibration": len(prepared.calibration),
            "test": len(prepared.test),
        },
        "models": {},
    }
    calibrations: dict[str, Any] = {}
    for name, model in models.items():
        cal_p = predict_probs(model, prepared.calibration, pad_token_id=pad)
        test_p = predict_probs(model, prepared.test, pad_token_id=pad)
        report, by_method = abstention_report(cal_p, test_p, cal_y, test_y, job.target_accuracy, delta=job.delta)
        results["models"][name] = report
        calibrations[name] = by_method[job.threshold_method]
    return results, calibrations


def teacher_summary(
    teacher: Any, prepared: PreparedData, job: MtCNNJobArguments, seed: int, wall_time_s: float | None = None
) -> dict[str, Any]:
    """``results["teacher"]``: the teacher's spec, size and wall time, and per group its hyperparameters, wall time,
    out-of-fold training accuracy and test accuracy (:func:`reportkd.text.mtcnn.teachers.group_summaries`).

    Args:
        teacher: The job's teacher (an MtCNN ensemble or a ``MixedTeacherEnsemble``).
        prepared: The job's data.
        job: The job settings.
        seed: The training seed (the MtCNN-only teacher's masks).
        wall_time_s: Wall time of the teacher stage (None: unknown, e.g. a run resumed from an older version).
    """
    from .pipeline import member_training_mask
    from .specs import TeacherSpec
    from .teachers import MixedTeacherEnsemble, TeacherGroup, group_summaries

    if isinstance(teacher, MixedTeacherEnsemble):
        groups = teacher.groups
    else:
        spec = TeacherSpec("mtcnn", members=job.members)
        trains_on = member_training_mask(job, len(prepared.train), seed)
        groups = [TeacherGroup(spec, [teacher], trains_on, seed, wall_time_s or float("nan"))]
    summaries = group_summaries(groups, prepared)
    for g in summaries:
        g["wall_time_s"] = None if g["wall_time_s"] != g["wall_time_s"] else g["wall_time_s"]  # NaN: not JSON
    return {
        "teacher_archs": job.teacher_archs or f"mtcnn:{job.members}",
        "members": job.members,
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1),
        "groups": summaries,
    }


def save_results(
    out: Path,
    results: dict[str, Any],
    calibrations: dict[str, Any],
    models: dict[str, Any],
    prepared: PreparedData,
    job: MtCNNJobArguments,
    *,
    command: str | None = None,
) -> None:
    """Writes thresholds, ``eval_results.json`` and ``distillation.json`` beside each saved model, and the results.

    Args:
        out: The job's output folder (models already saved in ``student/``, ``baseline/``, ``dac/``).
        results: From :func:`job_results`.
        calibrations: Model name → its calibration (from :func:`job_results`), saved as ``thresholds.json``.
        models: Name → trained model.
        prepared: The job's data.
        job: The job settings.
        command: The command line for the provenance files.
    """
    method = job.threshold_method
    for name in SAVED:
        if name not in models:
            continue
        folder = out / name
        write_thresholds(
            folder / "thresholds.json", calibrations[name], models[name].config.task_labels, model_id=str(folder),
            model_sha256=weights_fingerprint(folder),
            provenance={"calibrated_from": "model", "predictions_sha256": None, "model_sha256_from": "weights"},
        )  # fmt: skip
        report = results["models"][name]
        tests = {t: (r["ltt"]["test"] if method == "ltt" else r["test"]) for t, r in report.items()}
        write_json(folder / "eval_results.json", {"split": f"test, {len(prepared.test)} reports",
                                                  "threshold_method": method, "tasks": tests})  # fmt: skip
        provenance(name, job, results, command).save(folder)
    write_json(out / "results.json", results)
    (out / "table.md").write_text(format_table(results) + "\n")


def provenance(name: str, job: MtCNNJobArguments, results: dict[str, Any], command: str | None = None):
    """``distillation.json`` content of a saved model (for its model card).

    Args:
        name: ``student``, ``baseline`` or ``dac``.
        job: The job settings.
        results: The job's results (data counts and settings).
        command: The command line that produced the model.
    """
    from reportkd.hub import DistillationInfo

    data, settings = results["data"], results["settings"]
    hp = {**settings["training"], **{k: v for k, v in settings["job"].items() if k in _REPORTED_JOB}}
    teachers = []
    if name == "student":
        if job.member_sampling == "bagging":
            how = f"bagged on {job.bag_fraction:.0%} of the reports each, out-of-bag soft labels"
        elif job.folds > 1:
            how = f"{job.folds}-fold out-of-fold soft labels"
        else:
            how = "soft labels averaged over all members"
        if job.teacher_archs is None:
            teachers = [f"ensemble of {job.members} MtCNNs ({how})"]
        else:
            groups = ", ".join(f"{g.members} {'MtCNN' if g.architecture == 'mtcnn' else 'HiSAN'}s"
                               for g in job.teacher_groups)  # fmt: skip
            teachers = [f"mixed ensemble of {job.members} members: {groups} ({how}; teacher_archs "
                        f"{job.teacher_archs})"]  # fmt: skip
    else:
        hp = {k: v for k, v in hp.items() if k not in _STUDENT_ONLY}
    if name != "dac":
        hp.pop("dac_targets", None)
    else:
        hp.pop("student_arch", None)  # the DAC is an MtCNN whatever the student is
    method = {"student": "ensemble_distillation", "dac": "deep_abstaining_classifier"}.get(name, "hard_label")
    return DistillationInfo(
        method=method, teachers=teachers, training_data=f"{data['train']} reports: {data['source']}",
        eval_data=f"{data['calibration']} calibration and {data['test']} test reports held out",
        hyperparameters=hp, command=command,
    )  # fmt: skip


_STUDENT_ONLY = ("alpha", "temperature", "members", "teacher_archs", "member_sampling", "folds", "bag_fraction",
                 "teacher_epochs", "student_epochs")  # fmt: skip
_REPORTED_JOB = (*_STUDENT_ONLY, "student_arch", "embedding_dim", "num_filters", "kernel_sizes", "dropout",
                 "max_length", "min_word_count", "min_class_count", "unknown_as_missing", "task_weights",
                 "dac_targets", "target_accuracy", "threshold_method", "delta", "split", "split_seed")  # fmt: skip


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: per task, test accuracy and coverage at the target, baseline vs student (and ensemble).

    Args:
        results: The job's results (``results.json``).
    """
    target = results["settings"]["job"]["target_accuracy"]
    models = results["models"]
    head = (
        f"| task | acc baseline | acc student | acc ensemble | coverage@{target:.0%} baseline | student | "
        "Δ student−baseline | ensemble | sel. acc student |"
    )
    lines = [head, "|" + "---|" * 9]
    for task in models["student"]:
        s, e = models["student"][task]["test"], models["ensemble"][task]["test"]
        b = models["baseline"][task]["test"] if "baseline" in models else None  # train_baseline=False
        sel = s["selective_accuracy"]
        cells = [
            "—" if b is None else f"{b['accuracy']:.3f}", f"{s['accuracy']:.3f}", f"{e['accuracy']:.3f}",
            "—" if b is None else f"{b['coverage']:.3f}", f"{s['coverage']:.3f}",
            "—" if b is None else f"{s['coverage'] - b['coverage']:+.3f}", f"{e['coverage']:.3f}",
            "—" if sel is None else f"{sel:.3f}",
        ]  # fmt: skip
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "describe_source",
    "format_table",
    "job_results",
    "provenance",
    "save_results",
    "teacher_summary",
    "training_summary",
]
