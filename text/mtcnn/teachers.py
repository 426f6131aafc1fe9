"""Mixed teachers: one teacher ensemble made of groups of different architectures and hyperparameters.

A :class:`TeacherSpec` describes one group (``"mtcnn"`` members trained together as one vectorized ensemble, or
``"hisan"`` members trained one by one), with its own window sizes, embedding size, dropout, member count and seed.
:func:`train_mixed_teacher` trains every group with the user's ``TrainingArguments`` (the job's teacher stage
settings: ``teacher_epochs``, per-member gradient clipping) on the out-of-fold / bagging masks of
:func:`reportkd.text.mtcnn.pipeline.member_training_mask`, and returns each training report's soft label: the mean
softmax over all members, of all groups, that did not train on it (what the job's ``soft_labels`` stage returns for
a single-architecture teacher). :func:`mixed_teacher_probs` gives the teacher's probabilities on other reports.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainingArguments

from reportkd.data import ReportCollator

from .arguments import MtCNNJobArguments
from .configuration_mtcnn import MtCNNConfig
from .ensemble import MemberGradClipCallback, MtCNNEnsembleForReportClassification, held_out_probability_sums
from .pipeline import MemberMaskCollator, PreparedData, member_training_mask, stage_args, stage_config
from .predict import labels_by_task
from .trainer import MtCNNDistillationTrainer

logger = logging.getLogger(__name__)

ARCHITECTURES = ("mtcnn", "hisan")


@dataclass
class TeacherSpec:
    """One group of a mixed teacher: architecture, size and hyperparameters of its members.

    Unset model sizes fall back to the job's (``embedding_dim``, ``kernel_sizes``, ``num_filters``; ``dropout`` too
    for MtCNN, while HiSAN keeps its own default of 0.1: the job's 0.5 on every attention level over-regularises it).

    Args:
        architecture: ``"mtcnn"`` (trained as one vectorized ensemble) or ``"hisan"`` (trained member by member).
        members: Members in this group.
        seed: Initialisation seed of the group (None: the training seed + 1000 * group index). The group's
            out-of-fold masks use the same seed.
        embedding_dim: Word embedding size.
        dropout: Dropout of the members.
        kernel_sizes: MtCNN convolution windows.
        num_filters: MtCNN filters per window.
        member_chunk_size: MtCNN members run together (bounded memory, see ``ensemble.py``; None: all).
        attention_heads: HiSAN attention heads.
        attention_dim_per_head: HiSAN size of one head.
        words_per_line: HiSAN words per line.
        epochs: Training epochs of this group (None: the job's ``teacher_epochs``, else ``num_train_epochs``).
    """

    architecture: str = field(default="mtcnn", metadata={"help": "'mtcnn' or 'hisan'."})
    members: int = field(default=8, metadata={"help": "Members in this group."})
    seed: int | None = field(default=None, metadata={"help": "Seed (None: training seed + 1000 * group index)."})
    embedding_dim: int | None = field(default=None, metadata={"help": "Word embedding size (None: the job's)."})
    dropout: float | None = field(default=None, metadata={"help": "Dropout (None: the job's; HiSAN: 0.1)."})
    kernel_sizes: list[int] | None = field(default=None, metadata={"help": "MtCNN windows (None: the job's)."})
    num_filters: int | None = field(default=None, metadata={"help": "MtCNN filters per window (None: the job's)."})
    member_chunk_size: int | None = field(default=None, metadata={"help": "MtCNN members run together."})
    attention_heads: int = field(default=4, metadata={"help": "HiSAN attention heads."})
    attention_dim_per_head: int = field(default=16, metadata={"help": "HiSAN size of one head."})
    words_per_line: int = field(default=15, metadata={"help": "HiSAN words per line."})
    epochs: float | None = field(default=None, metadata={"help": "Epochs (None: the job's teacher epochs)."})

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"TeacherSpec.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 1:
            raise ValueError(f"TeacherSpec.members must be an integer >= 1, got {self.members!r}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TeacherSpec.dropout must be in [0, 1), got {self.dropout!r}.")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"TeacherSpec.epochs must be > 0, got {self.epochs!r}.")
        if self.kernel_sizes is not None:
            self.kernel_sizes = [int(k) for k in self.kernel_sizes]
        if self.architecture == "hisan" and (self.kernel_sizes is not None or self.num_filters is not None):
            raise ValueError("kernel_sizes / num_filters are MtCNN settings; a 'hisan' group uses attention_heads, "
                             "attention_dim_per_head and words_per_line.")  # fmt: skip

    @classmethod
    def parse(cls, value: str | dict[str, Any] | TeacherSpec) -> TeacherSpec:
        """A spec from a dict, or a string ``"hisan:members=8,embedding_dim=64"`` (command lines, YAML).

        Args:
            value: The spec.
        """
        if isinstance(value, TeacherSpec):
            return value
        if isinstance(value, dict):
            return cls(**value)
        arch, _, rest = str(value).partition(":")
        kwargs: dict[str, Any] = {"architecture": arch.strip()}
        names = {f.name: f for f in dataclasses.fields(cls)}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise ValueError(f"Teacher spec item {item!r} is not name=value with a name of {sorted(names)}.")
            if key == "kernel_sizes":
                kwargs[key] = [int(k) for k in raw.split("/")]
            elif key in ("dropout", "epochs"):
                kwargs[key] = float(raw)
            else:
                kwargs[key] = int(raw)
        return cls(**kwargs)


@dataclass
class TeacherGroup:
    """A trained group: its spec, its models (one ensemble, or one model per HiSAN member) and training mask."""

    spec: TeacherSpec
    models: list[torch.nn.Module]
    trains_on: np.ndarray  # (members, training reports) bool
    seed: int
    wall_time_s: float


@dataclass
class MixedTeacher:
    """What :func:`train_mixed_teacher` returns.

    Args:
        soft_labels: Task -> (training reports, classes): mean softmax over the members (all groups) that did not
            train on each report (all members where none was held out), as the job's ``soft_labels`` stage.
        group_accuracy: Per group, task -> out-of-fold accuracy of the group's held-out mean on the training reports.
        accuracy: Task -> the same for the whole mixed teacher.
        groups: The trained groups (models, masks, wall time).
    """

    soft_labels: dict[str, np.ndarray]
    group_accuracy: list[dict[str, float]]
    accuracy: dict[str, float]
    groups: list[TeacherGroup]


def _group_job(job: MtCNNJobArguments, spec: TeacherSpec) -> MtCNNJobArguments:
    changes: dict[str, Any] = {"members": spec.members}
    for name in ("embedding_dim", "dropout", "kernel_sizes", "num_filters"):
        if getattr(spec, name) is not None:
            changes[name] = getattr(spec, name)
    if spec.epochs is not None:
        changes["teacher_epochs"] = spec.epochs
    return dataclasses.replace(job, **changes)


def _member_config(prepared: PreparedData, job: MtCNNJobArguments, spec: TeacherSpec):
    dropout = job.dropout
    if spec.architecture == "hisan" and spec.dropout is None:
        from ..hisan import HiSANConfig

        dropout = HiSANConfig.dropout
    common = dict(
        vocab_size=len(prepared.tokenizer), embedding_dim=job.embedding_dim, dropout=dropout,
        max_length=job.max_length, pad_token_id=prepared.tokenizer.pad_token_id, task_labels=prepared.task_labels,
    )  # fmt: skip
    if spec.architecture == "hisan":
        from ..hisan import HiSANConfig

        return HiSANConfig(
            **common,
            attention_heads=spec.attention_heads,
            attention_dim_per_head=spec.attention_dim_per_head,
            words_per_line=spec.words_per_line,
        )
    return MtCNNConfig(
        **common,
        num_filters=job.num_filters,
        kernel_sizes=list(job.kernel_sizes),
        num_members=spec.members,
        member_chunk_size=spec.member_chunk_size,
    )


def train_teacher_group(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    spec: TeacherSpec,
    output_dir: str | os.PathLike,
    seed: int,
) -> TeacherGroup:
    """Trains one group with the job's teacher-stage settings.

    Args:
        prepared: Data from :func:`reportkd.text.mtcnn.pipeline.prepare_data`.
        job: The job settings (the spec's sizes override its model fields).
        args: The user's training arguments (``seed`` is replaced by ``seed``).
        spec: The group.
        output_dir: The group's trainer output folder.
        seed: Initialisation and mask seed of the group.
    """
    group_job = _group_job(job, spec)
    args = dataclasses.replace(args, seed=seed)
    trains_on = member_training_mask(group_job, len(prepared.train), seed)
    config = _member_config(prepared, group_job, spec)
    pad = prepared.tokenizer.pad_token_id
    started = time.perf_counter()
    models = []
    if spec.architecture == "mtcnn":
        torch.manual_seed(seed)
        ensemble = MtCNNEnsembleForReportClassification(config)
        train = prepared.train.add_column("member_in", trains_on.T.tolist())
        clip = [MemberGradClipCallback(args.max_grad_norm)] if args.max_grad_norm and args.max_grad_norm > 0 else []
        trainer = MtCNNDistillationTrainer(
            model=ensemble, args=stage_config("teacher", group_job, args, output_dir), train_dataset=train,
            data_collator=MemberMaskCollator(pad_token_id=pad, min_length=max(group_job.kernel_sizes)), callbacks=clip,
        )  # fmt: skip
        trainer.train()
        models.append(trainer.accelerator.unwrap_model(trainer.model).eval())
    else:
        from ..hisan import HiSANForReportClassification

        epochs = args.num_train_epochs if group_job.teacher_epochs is None else group_job.teacher_epochs
        for m in range(spec.members):
            torch.manual_seed(seed + m)
            model = HiSANForReportClassification(config)
            member_args = stage_args(args, Path(output_dir) / f"member-{m}", num_train_epochs=epochs,
                                     task_weights=group_job.task_weights, seed=seed + m)  # fmt: skip
            trainer = MtCNNDistillationTrainer(
                model=model, args=member_args, train_dataset=prepared.train.select(np.flatnonzero(trains_on[m])),
                data_collator=ReportCollator(pad_token_id=pad),
            )  # fmt: skip
            trainer.train()
            models.append(trainer.accelerator.unwrap_model(trainer.model).eval())
    wall = time.perf_counter() - started
    logger.info("teacher group %s x%d trained in %.1f s", spec.architecture, spec.members, wall)
    return TeacherGroup(spec=spec, models=models, trains_on=trains_on, seed=seed, wall_time_s=wall)


def group_probability_sums(
    group: TeacherGroup, dataset, weights: np.ndarray | None, pad_token_id: int, batch_size: int = 128
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weighted probability sums and weight totals of a group's members (see ``held_out_probability_sums``).

    Args:
        group: A trained group.
        dataset: Rows with ``input_ids``.
        weights: (group members, reports) weights, or None (all ones).
        pad_token_id: Padding id.
        batch_size: Reports per forward pass.
    """
    if len(group.models) == 1:
        return held_out_probability_sums(group.models[0], dataset, weights, pad_token_id=pad_token_id,
                                         batch_size=batch_size)  # fmt: skip
    total_sums: dict[str, np.ndarray] = {}
    total_weight = np.zeros(len(dataset))
    for m, model in enumerate(group.models):
        w = None if weights is None else weights[m : m + 1]
        sums, weight = held_out_probability_sums(model, dataset, w, pad_token_id=pad_token_id, batch_size=batch_size)
        for task, value in sums.items():
            total_sums[task] = total_sums.get(task, 0) + value
        total_weight += weight
    return total_sums, total_weight


def _held_out(trains_on: np.ndarray) -> np.ndarray:
    held_out = ~trains_on
    held_out[:, held_out.sum(0) == 0] = True  # no held-out member: use all of them (as pipeline.soft_labels)
    return held_out


def _accuracy(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for task, p in probs.items():
        present = labels[task] != -100
        out[task] = float((p[present].argmax(-1) == labels[task][present]).mean()) if present.any() else float("nan")
    return out


def train_mixed_teacher(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    specs: list[TeacherSpec | dict | str],
    output_dir: str | os.PathLike,
) -> MixedTeacher:
    """Trains every group of a mixed teacher and returns the training reports' out-of-fold soft labels.

    A report's soft label is the mean softmax over all members of all groups that did not train on it; when every
    member of every group trained on it (``folds == 1``), the mean over all members.

    Args:
        prepared: Data from :func:`reportkd.text.mtcnn.pipeline.prepare_data`.
        job: The job settings (folds / bagging, teacher epochs, default model sizes).
        args: The user's training arguments (every group gets them, with its own seed).
        specs: The groups, as :class:`TeacherSpec`, dicts or ``"arch:name=value,..."`` strings.
        output_dir: Folder of the groups' trainer outputs (``group-<i>-<arch>``).
    """
    specs = [TeacherSpec.parse(s) for s in specs]
    if not specs:
        raise ValueError("train_mixed_teacher needs at least one TeacherSpec.")
    pad = prepared.tokenizer.pad_token_id
    labels = labels_by_task(prepared.train, prepared.task_labels)
    groups, group_sums = [], []
    for i, spec in enumerate(specs):
        seed = args.seed + 1000 * i if spec.seed is None else spec.seed
        group = train_teacher_group(prepared, job, args, spec, Path(output_dir) / f"group-{i}-{spec.architecture}",
                                    seed)  # fmt: skip
        groups.append(group)
        group_sums.append(group_probability_sums(group, prepared.train, (~group.trains_on).astype(np.float32), pad))
    # reports no member of any group held out: every member of every group labels them
    none_held_out = sum(w for _, w in group_sums) == 0
    if none_held_out.any():
        for j, group in enumerate(groups):
            weights = (~group.trains_on).astype(np.float32)
            weights[:, none_held_out] = 1.0
            group_sums[j] = group_probability_sums(group, prepared.train, weights, pad)
    total_weight = sum(w for _, w in group_sums)
    soft = {task: sum(s[task] for s, _ in group_sums) / total_weight[:, None] for task in prepared.task_labels}
    group_accuracy = []
    for sums, weight in group_sums:
        mean = {task: value / np.maximum(weight, 1e-12)[:, None] for task, value in sums.items()}
        group_accuracy.append(_accuracy(mean, labels))
    soft = {task: value.astype(np.float32) for task, value in soft.items()}
    return MixedTeacher(soft_labels=soft, group_accuracy=group_accuracy, accuracy=_accuracy(soft, labels),
                        groups=groups)  # fmt: skip


def mixed_teacher_probs(
    teacher: MixedTeacher | list[TeacherGroup], dataset, pad_token_id: int, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """The mixed teacher's probabilities on other reports (calibration, test): mean over all members of all groups.

    Args:
        teacher: A :class:`MixedTeacher` or its groups.
        dataset: Rows with ``input_ids``.
        pad_token_id: Padding id.
        batch_size: Reports per forward pass.
    """
    groups = teacher.groups if isinstance(teacher, MixedTeacher) else teacher
    sums = [group_probability_sums(g, dataset, None, pad_token_id, batch_size) for g in groups]
    total = sum(w for _, w in sums)
    return {task: (sum(s[task] for s, _ in sums) / total[:, None]).astype(np.float32) for task in sums[0][0]}


__all__ = [
    "ARCHITECTURES",
    "MixedTeacher",
    "TeacherGroup",
    "TeacherSpec",
    "group_probability_sums",
    "mixed_teacher_probs",
    "train_mixed_teacher",
    "train_teacher_group",
]
