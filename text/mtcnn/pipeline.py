"""The stages of the MtCNN ensemble-distillation job (De Angeli et al., JAMIA Open 2022), each a plain function.

data → teacher ensemble (vectorized, optionally out-of-fold) → soft labels → hard-label baseline and distilled
student with the same architecture and budget (and optionally a Deep Abstaining Classifier) → per-task abstention
thresholds at a target accuracy. :func:`reportkd.text.mtcnn.job.run_mtcnn_job` runs them in order, stage by stage
resumable; benchmarks call them one by one. Every training stage takes the user's ``TrainingArguments`` and sets
only what the stage must (its output folder, the ensemble's per-member clipping, the student's loss settings).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainingArguments

from reportkd.abstention import Calibration, calibrate, selective_metrics, weights_fingerprint, write_thresholds
from reportkd.data import (
    IGNORE_INDEX,
    LoadStats,
    ReportCollator,
    attach_teacher_outputs,
    build_label_maps,
    encode_reports,
    load_reports,
    split_indices,
)

from .arguments import MtCNNJobArguments
from .configuration_mtcnn import MtCNNConfig
from .ensemble import MemberGradClipCallback, MtCNNEnsembleForReportClassification, fold_member_mask
from .modeling_mtcnn import MtCNNForReportClassification
from .predict import labels_by_task, predict_member_probs, predict_probs
from .specs import group_job, member_config
from .tokenization import train_word_tokenizer
from .trainer import MtCNNDistillationConfig, MtCNNDistillationTrainer

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenised splits, tokenizer and label maps."""

    train: Dataset
    calibration: Dataset
    test: Dataset
    tokenizer: Any
    task_labels: dict[str, list[str]]
    stats: LoadStats


def prepare_data(source: Any, job: MtCNNJobArguments, seed: int = 0) -> PreparedData:
    """Loads and validates reports, splits them, builds the tokenizer and label maps from the training split.

    Args:
        source: A reports file, a ``datasets.Dataset`` or a list of records.
        job: The job settings (tasks, text column, split, vocabulary and label-map settings).
        seed: The training seed; the split uses ``job.split_seed`` when it is set.
    """
    ds, stats = load_reports(source, text_column=job.text_column, task_columns=job.tasks, min_words=job.min_words)
    split_seed = seed if job.split_seed is None else job.split_seed
    tr, ca, te = split_indices(len(ds), job.split, seed=split_seed)
    train, cal, test = ds.select(tr), ds.select(ca), ds.select(te)
    tokenizer = train_word_tokenizer(train[job.text_column], min_count=job.min_word_count, max_length=job.max_length)
    task_labels = build_label_maps(
        train, job.tasks, min_class_count=job.min_class_count, unknown_as_missing=job.unknown_as_missing
    )
    enc = {
        name: encode_reports(
            split,
            tokenizer,
            task_labels,
            text_column=job.text_column,
            max_length=job.max_length,
            unknown_as_missing=job.unknown_as_missing,
        )
        for name, split in (("train", train), ("calibration", cal), ("test", test))
    }
    return PreparedData(enc["train"], enc["calibration"], enc["test"], tokenizer, task_labels, stats)


def model_config(prepared: PreparedData, job: MtCNNJobArguments, members: int = 1) -> MtCNNConfig:
    """The MtCNN config shared by teacher members, baseline, student and DAC."""
    return MtCNNConfig(
        vocab_size=len(prepared.tokenizer),
        embedding_dim=job.embedding_dim,
        num_filters=job.num_filters,
        kernel_sizes=list(job.kernel_sizes),
        dropout=job.dropout,
        max_length=job.max_length,
        pad_token_id=prepared.tokenizer.pad_token_id,
        task_labels=prepared.task_labels,
        num_members=members,
    )


def student_config(prepared: PreparedData, job: MtCNNJobArguments):
    """The config of the student and the hard-label baseline: ``job.student_arch`` (MtCNN or HiSAN) with its sizes.

    Args:
        prepared: Data from :func:`prepare_data`.
        job: The job settings.
    """
    spec = job.student_spec
    tok = prepared.tokenizer
    return member_config(len(tok), tok.pad_token_id, prepared.task_labels, group_job(job, spec, student=True), spec)


def build_classifier(config) -> torch.nn.Module:
    """A fresh report classifier for ``config`` (``MtCNNConfig`` or ``HiSANConfig``)."""
    if getattr(config, "model_type", None) == "hisan":
        from ..hisan import HiSANForReportClassification

        return HiSANForReportClassification(config)
    return MtCNNForReportClassification(config)


def stage_args(
    args: TrainingArguments,
    output_dir: str | os.PathLike,
    config_class: type[TrainingArguments] = MtCNNDistillationConfig,
    **overrides: Any,
) -> TrainingArguments:
    """The user's training arguments as ``config_class`` for one stage: every shared field copied unchanged.

    Args:
        args: The user's ``TrainingArguments`` (or a subclass).
        output_dir: The stage's own output folder.
        config_class: The stage trainer's config class.
        **overrides: The fields this stage must set.
    """
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in names}
    # stages never push (the caller pushes the saved folder) and keep the columns their collators need
    values.update(push_to_hub=False, remove_unused_columns=False, resume_from_checkpoint=None)
    if "teacher_model_name_or_path" in values:
        values["teacher_model_name_or_path"] = None  # the job's teacher is its own ensemble
    values.update(output_dir=str(output_dir), **overrides)
    return config_class(**values)


def _epochs(args: TrainingArguments, epochs: int | None) -> float:
    return args.num_train_epochs if epochs is None else epochs


def stage_config(
    stage: str, job: MtCNNJobArguments, args: TrainingArguments, output_dir: str | os.PathLike
) -> TrainingArguments:
    """The training arguments of one stage (``teacher``, ``baseline``, ``student`` or ``dac``).

    Args:
        stage: The stage.
        job: The job settings.
        args: The user's training arguments.
        output_dir: The stage's trainer output folder.
    """
    common = {"task_weights": job.task_weights}
    if stage == "teacher":  # each member's gradient clipped on its own (MemberGradClipCallback), not jointly
        return stage_args(args, output_dir, max_grad_norm=0.0, num_train_epochs=_epochs(args, job.teacher_epochs),
                          **common)  # fmt: skip
    if stage == "baseline":
        return stage_args(args, output_dir, **common)
    if stage == "student":
        return stage_args(args, output_dir, alpha=job.alpha, temperature=job.temperature, teacher_outputs_type="probs",
                          num_train_epochs=_epochs(args, job.student_epochs), **common)  # fmt: skip
    if stage == "dac":
        from .dac import DACConfig

        return stage_args(args, output_dir, DACConfig, dac_target_accuracy=job.target_accuracy,
                          dac_task_targets=job.dac_targets, **common)  # fmt: skip
    raise ValueError(f"Unknown training stage {stage!r}; stages: teacher, baseline, student, dac.")


class MemberMaskCollator(ReportCollator):
    """Adds ``member_mask`` (members × batch) from each row's ``member_in`` list: which members train on it."""

    def __call__(self, features):
        batch = super().__call__(features)
        batch["member_mask"] = torch.tensor([f["member_in"] for f in features], dtype=torch.bool).T
        return batch


def member_training_mask(job: MtCNNJobArguments, n_rows: int, seed: int) -> np.ndarray:
    """``(members, reports)`` bool: which reports each member trains on (folds or bagging, see the job settings)."""
    rng = np.random.default_rng(seed + 1)
    if job.member_sampling == "bagging":
        return rng.random((job.members, n_rows)) < job.bag_fraction
    if job.folds == 1:
        return np.ones((job.members, n_rows), dtype=bool)
    fold_of_row = torch.from_numpy(rng.integers(0, job.folds, n_rows))
    return fold_member_mask(fold_of_row, job.members, job.folds).numpy()


def _train(trainer, resume_from_checkpoint: str | None):
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer.accelerator.unwrap_model(trainer.model).eval()


def train_teacher_ensemble(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    output_dir: str | os.PathLike,
    *,
    resume_from_checkpoint: str | None = None,
    callbacks: list | None = None,
) -> MtCNNEnsembleForReportClassification:
    """Trains the vectorized teacher ensemble (each member on its folds or bag, see :func:`member_training_mask`).

    Args:
        prepared: Data from :func:`prepare_data`.
        job: The job settings.
        args: The user's training arguments; the stage sets ``max_grad_norm=0`` and clips each member's gradient
            at the user's ``max_grad_norm`` instead (a shared clip factor would couple the members).
        output_dir: The trainer's output folder (checkpoints).
        resume_from_checkpoint: A checkpoint of this stage to continue from.
        callbacks: Extra trainer callbacks.
    """
    torch.manual_seed(args.seed)
    ensemble = MtCNNEnsembleForReportClassification(model_config(prepared, job, members=job.members))
    trains_on = member_training_mask(job, len(prepared.train), args.seed)
    train = prepared.train.add_column("member_in", trains_on.T.tolist())
    collator = MemberMaskCollator(pad_token_id=prepared.tokenizer.pad_token_id, min_length=max(job.kernel_sizes))
    config = stage_config("teacher", job, args, output_dir)
    clip = [MemberGradClipCallback(args.max_grad_norm)] if args.max_grad_norm and args.max_grad_norm > 0 else []
    trainer = MtCNNDistillationTrainer(
        model=ensemble, args=config, train_dataset=train, data_collator=collator, callbacks=clip + (callbacks or [])
    )
    return _train(trainer, resume_from_checkpoint)


def soft_labels(
    ensemble: MtCNNEnsembleForReportClassification, prepared: PreparedData, job: MtCNNJobArguments, seed: int
) -> dict[str, np.ndarray]:
    """Soft labels of the training reports: the mean softmax of the members that never trained on each report.

    Out-of-fold / out-of-bag; with ``folds == 1`` (or a report every bagged member saw) the mean over all members.
    """
    trains_on = member_training_mask(job, len(prepared.train), seed)
    member_probs = predict_member_probs(ensemble, prepared.train, pad_token_id=prepared.tokenizer.pad_token_id)
    held_out = ~trains_on
    held_out[:, held_out.sum(0) == 0] = True  # no held-out member: use all of them
    return {task: (p * held_out[..., None]).sum(0) / held_out.sum(0)[:, None] for task, p in member_probs.items()}


_TRANSFER_COLUMNS = ("id", "input_ids", "labels")


def transfer_set(
    prepared: PreparedData, job: MtCNNJobArguments, ensemble: MtCNNEnsembleForReportClassification | None, seed: int
) -> tuple[Dataset | None, dict[str, int]]:
    """The student's extra transfer data: unlabelled reports and CoD counterfactuals (no hard labels).

    Rows have ``id``, ``input_ids``, ``labels`` (all missing) and the text column (the words of ``input_ids`` for
    counterfactuals); the teacher labels them (:func:`train_single`).

    Args:
        prepared: Data from :func:`prepare_data`.
        job: The job settings (``unlabelled``, ``counterfactuals``, ``cod_max_edits``).
        ensemble: The teacher (needed for counterfactuals).
        seed: Seed of the half kept by ``counterfactuals="equal"``.

    Returns:
        The rows (None when there are none) and the counts ``{"unlabelled", "counterfactuals", "cod_attempted"}``.
    """
    from datasets import concatenate_datasets

    parts, counts = [], {"unlabelled": 0, "counterfactuals": 0, "cod_attempted": 0}
    n_tasks, text = len(job.tasks), job.text_column
    if job.unlabelled:
        ds, _ = load_reports(job.unlabelled, text_column=text, task_columns=(), min_words=job.min_words)
        ds = encode_reports(ds, prepared.tokenizer, None, text_column=text, max_length=job.max_length)
        ds = ds.add_column("labels", [[IGNORE_INDEX] * n_tasks] * len(ds))
        parts.append(ds.select_columns([*_TRANSFER_COLUMNS, text]))
        counts["unlabelled"] = len(ds)
    if job.counterfactuals != "none":
        if ensemble is None:
            raise ValueError("counterfactuals need the teacher ensemble.")
        from .counterfactual import counterfactual_transfer_set

        rows = cod_rows(job, len(prepared.train), seed)
        tok = prepared.tokenizer
        cf = counterfactual_transfer_set(
            ensemble, prepared.train, job.tasks, max_edits=job.cod_max_edits, pad_token_id=tok.pad_token_id,
            min_length=max(job.kernel_sizes), protected=[tok.unk_token_id], rows=rows,
        )  # fmt: skip
        words = [" ".join(tok.convert_ids_to_tokens(ids)) for ids in cf["input_ids"]]
        ds = Dataset.from_dict(
            {
                "id": cf["id"],
                "input_ids": cf["input_ids"],
                "labels": [[IGNORE_INDEX] * n_tasks] * len(words),
                text: words,
            }  # fmt: skip
        )
        parts.append(ds)
        counts["counterfactuals"], counts["cod_attempted"] = len(ds), len(rows)
    if not parts:
        return None, counts
    parts = [p.cast(parts[0].features) for p in parts]
    return concatenate_datasets(parts), counts


def cod_rows(job: MtCNNJobArguments, n_train: int, seed: int) -> np.ndarray:
    """Training rows whose counterfactuals are made: all (``"add"``) or a seeded half (``"equal"``)."""
    if job.counterfactuals == "equal":
        return np.sort(np.random.default_rng(seed + 11).permutation(n_train)[: n_train // 2])
    return np.arange(n_train)


def train_single(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    output_dir: str | os.PathLike,
    soft_labels: dict[str, np.ndarray] | None = None,
    *,
    teacher: Any = None,
    transfer: Dataset | None = None,
    resume_from_checkpoint: str | None = None,
    callbacks: list | None = None,
) -> MtCNNForReportClassification:
    """Trains one classifier (``job.student_arch``): the distilled student when ``soft_labels`` are given, else the
    hard-label baseline (same architecture and budget).

    Args:
        prepared: Data from :func:`prepare_data`.
        job: The job settings (``alpha``, ``temperature``, ``student_epochs``, ``consistent_teaching``,
            ``counterfactuals`` shape the student).
        args: The user's training arguments.
        output_dir: The trainer's output folder (checkpoints).
        soft_labels: Task → ``(N_train, C)`` teacher probabilities, or None for the baseline.
        teacher: The teacher (an MtCNN ensemble or a mixed teacher): labels ``transfer`` rows, and every batch on the
            fly with ``job.consistent_teaching`` (then ``soft_labels`` are not used).
        transfer: Extra rows without hard labels (:func:`transfer_set`).
        resume_from_checkpoint: A checkpoint of this stage to continue from.
        callbacks: Extra trainer callbacks.
    """
    torch.manual_seed(args.seed + 7)
    model = build_classifier(student_config(prepared, job))
    train = prepared.train
    student = soft_labels is not None
    consistent = student and job.consistent_teaching
    if student and job.counterfactuals == "equal":
        train = train.select(cod_rows(job, len(train), args.seed))
    if transfer is not None:
        columns = [*_TRANSFER_COLUMNS, job.text_column]
        train = concatenate_datasets_like(train.select_columns(columns), transfer.select_columns(columns))
    if student and not consistent:
        keep = cod_rows(job, len(prepared.train), args.seed) if job.counterfactuals == "equal" else None
        probs = {t: p if keep is None else p[keep] for t, p in soft_labels.items()}
        if transfer is not None:
            if teacher is None:
                raise ValueError("transfer rows need the teacher to label them.")
            extra = predict_member_probs(teacher, transfer, pad_token_id=prepared.tokenizer.pad_token_id)
            probs = {t: np.concatenate([p, extra[t].mean(0) if extra[t].ndim == 3 else extra[t]]) for t, p in
                     probs.items()}  # fmt: skip
        train = attach_teacher_outputs(train, probs)
    config = stage_config("student" if student else "baseline", job, args, output_dir)
    pad, widest = prepared.tokenizer.pad_token_id, max(getattr(model.config, "kernel_sizes", job.kernel_sizes))
    if consistent:
        from .augment import AugmentingCollator, AugmentPolicy

        collator = AugmentingCollator(
            prepared.tokenizer, AugmentPolicy.scaled(job.augment_strength), args.seed,
            text_column=job.text_column, max_length=job.max_length, pad_token_id=pad, min_length=widest,
        )  # fmt: skip
    else:
        collator = ReportCollator(pad_token_id=pad, min_length=widest)
    if not consistent:
        teacher = None  # precomputed soft labels travel with the data
    trainer = MtCNNDistillationTrainer(
        model=model, teacher_model=teacher, args=config, train_dataset=train, data_collator=collator,
        callbacks=callbacks,
    )  # fmt: skip
    return _train(trainer, resume_from_checkpoint)


def concatenate_datasets_like(first: Dataset, second: Dataset) -> Dataset:
    """``first`` then ``second`` (cast to ``first``'s features)."""
    from datasets import concatenate_datasets

    return concatenate_datasets([first, second.cast(first.features)])


def train_dac(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    output_dir: str | os.PathLike,
    *,
    validation_fraction: float = 0.1,
    alpha: float = 1.0,
    resume_from_checkpoint: str | None = None,
    callbacks: list | None = None,
) -> MtCNNForReportClassification:
    """Trains a Deep Abstaining Classifier MtCNN with hard labels (FrESCO's DAC), same budget as the baseline.

    A random ``validation_fraction`` of the training reports is held out to tune the abstention penalties toward
    ``job.dac_targets`` (default ``job.target_accuracy``); the calibration split stays untouched.

    Args:
        prepared: Data from :func:`prepare_data`.
        job: The job settings.
        args: The user's training arguments.
        output_dir: The trainer's output folder (checkpoints).
        validation_fraction: Share of the training reports used to tune the penalties.
        alpha: Initial abstention penalty.
        resume_from_checkpoint: A checkpoint of this stage to continue from.
        callbacks: Extra trainer callbacks.
    """
    from .dac import DACTrainer

    torch.manual_seed(args.seed + 7)
    config = model_config(prepared, job)
    config.abstain_class, config.dac_alpha = True, float(alpha)
    model = MtCNNForReportClassification(config)
    order = np.random.default_rng(args.seed + 3).permutation(len(prepared.train))
    n_val = max(1, int(round(validation_fraction * len(order))))
    dac_args = stage_config("dac", job, args, output_dir)
    collator = ReportCollator(pad_token_id=prepared.tokenizer.pad_token_id, min_length=max(job.kernel_sizes))
    trainer = DACTrainer(
        model=model,
        args=dac_args,
        train_dataset=prepared.train.select(np.sort(order[n_val:])),
        eval_dataset=prepared.train.select(np.sort(order[:n_val])),
        data_collator=collator,
        callbacks=callbacks,
    )
    return _train(trainer, resume_from_checkpoint)


def abstention_report(
    cal_probs: dict[str, np.ndarray],
    test_probs: dict[str, np.ndarray],
    cal_labels: dict[str, np.ndarray],
    test_labels: dict[str, np.ndarray],
    target_accuracy: float,
    delta: float = 0.1,
) -> tuple[dict[str, dict[str, Any]], dict[str, Calibration]]:
    """Per task: empirical (the paper's) and Learn-then-Test thresholds from the calibration split, on the test split.

    Returns:
        Task → ``{"threshold", "calibration", "test", "ltt": {...}}``, and the calibrations by method.
    """
    calibrations = {
        "empirical": calibrate(cal_probs, cal_labels, target_accuracy, method="empirical"),
        "ltt": calibrate(cal_probs, cal_labels, target_accuracy, method="ltt", delta=delta),
    }
    out = {}
    for task in test_probs:
        emp, ltt = calibrations["empirical"].tasks[task], calibrations["ltt"].tasks[task]
        out[task] = {
            "threshold": emp.threshold,
            "calibration": emp.to_dict(),
            "test": selective_metrics(test_probs[task], test_labels[task], emp.threshold),
            "ltt": {
                "threshold": ltt.threshold,
                "delta": delta,
                "test": selective_metrics(test_probs[task], test_labels[task], ltt.threshold),
            },
        }
    return out, calibrations


def save_classifier(
    model, tokenizer, output_dir: str | os.PathLike, calibration: Calibration | None = None, **metadata
) -> Path:
    """Saves model (safetensors), tokenizer and, when given, the thresholds file into one directory.

    Args:
        model: An MtCNN.
        tokenizer: Its tokenizer.
        output_dir: Target directory.
        calibration: Thresholds to store as ``thresholds.json`` (see :func:`reportkd.abstention.write_thresholds`).
        **metadata: Extra fields of the thresholds file.
    """
    out = Path(output_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if calibration is not None:
        write_thresholds(
            out / "thresholds.json", calibration, model.config.task_labels, model_id=str(out),
            model_sha256=weights_fingerprint(out),
            provenance={"calibrated_from": "model", "predictions_sha256": None, "model_sha256_from": "weights"},
            **metadata,
        )  # fmt: skip
    return out


__all__ = [
    "IGNORE_INDEX",
    "MemberMaskCollator",
    "PreparedData",
    "abstention_report",
    "build_classifier",
    "labels_by_task",
    "member_training_mask",
    "model_config",
    "predict_member_probs",
    "predict_probs",
    "prepare_data",
    "save_classifier",
    "soft_labels",
    "stage_args",
    "stage_config",
    "student_config",
    "train_dac",
    "train_single",
    "train_teacher_ensemble",
    "transfer_set",
]
