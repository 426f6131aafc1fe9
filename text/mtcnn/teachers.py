"""Mixed teachers: one teacher ensemble made of groups of different architectures and hyperparameters.

A :class:`~reportkd.text.mtcnn.specs.TeacherSpec` describes one group (``"mtcnn"`` members trained together as one
vectorized ensemble, or ``"hisan"`` members trained one by one), with its own window sizes, embedding size, dropout,
member count and seed. :func:`train_teacher_groups` trains every group with the user's ``TrainingArguments`` (the
job's teacher stage settings: ``teacher_epochs``, per-member gradient clipping) on the out-of-fold / bagging masks of
:func:`reportkd.text.mtcnn.pipeline.member_training_mask`; :func:`mixed_soft_labels` gives each training report's soft
label: the mean softmax over all members, of all groups, that did not train on it (what the job's ``soft_labels``
stage returns for a single-architecture teacher). :class:`MixedTeacherEnsemble` holds the groups as one teacher
module (the job's ``ensemble/`` when ``teacher_archs`` is set): its probabilities are the mean over all members, it
labels transfer data and consistent-teaching views, and it saves / loads as a folder of groups.
:func:`train_mixed_teacher` and :func:`mixed_teacher_probs` are the functional API of the benchmarks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainingArguments

from reportkd.data import ReportCollator
from reportkd.utils import write_json

from .arguments import MtCNNJobArguments
from .ensemble import MemberGradClipCallback, MtCNNEnsembleForReportClassification, held_out_probability_sums
from .modeling_mtcnn import MtCNNOutput
from .pipeline import MemberMaskCollator, PreparedData, member_training_mask, stage_args, stage_config
from .predict import labels_by_task
from .specs import ARCHITECTURES, TeacherSpec, group_job, member_config
from .trainer import MtCNNDistillationTrainer

logger = logging.getLogger(__name__)
MANIFEST = "teacher.json"  # what a saved MixedTeacherEnsemble folder holds besides its groups


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


def train_teacher_group(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    spec: TeacherSpec,
    output_dir: str | os.PathLike,
    seed: int,
    *,
    callbacks: list | None = None,
) -> TeacherGroup:
    """Trains one group with the job's teacher-stage settings.

    Args:
        prepared: Data from :func:`reportkd.text.mtcnn.pipeline.prepare_data`.
        job: The job settings (the spec's sizes override its model fields).
        args: The user's training arguments (``seed`` is replaced by ``seed``).
        spec: The group.
        output_dir: The group's trainer output folder.
        seed: Initialisation and mask seed of the group.
        callbacks: Extra trainer callbacks.
    """
    g_job = group_job(job, spec)
    args = dataclasses.replace(args, seed=seed)
    trains_on = member_training_mask(g_job, len(prepared.train), seed)
    tok = prepared.tokenizer
    config = member_config(len(tok), tok.pad_token_id, prepared.task_labels, g_job, spec)
    pad = tok.pad_token_id
    started = time.perf_counter()
    models = []
    if spec.architecture == "mtcnn":
        torch.manual_seed(seed)
        ensemble = MtCNNEnsembleForReportClassification(config)
        train = prepared.train.add_column("member_in", trains_on.T.tolist())
        clip = [MemberGradClipCallback(args.max_grad_norm)] if args.max_grad_norm and args.max_grad_norm > 0 else []
        trainer = MtCNNDistillationTrainer(
            model=ensemble, args=stage_config("teacher", g_job, args, output_dir), train_dataset=train,
            data_collator=MemberMaskCollator(pad_token_id=pad, min_length=max(g_job.kernel_sizes)),
            callbacks=clip + (callbacks or []),
        )  # fmt: skip
        trainer.train()
        models.append(trainer.accelerator.unwrap_model(trainer.model).eval())
    else:
        from ..hisan import HiSANForReportClassification

        epochs = args.num_train_epochs if g_job.teacher_epochs is None else g_job.teacher_epochs
        for m in range(spec.members):
            torch.manual_seed(seed + m)
            model = HiSANForReportClassification(config)
            member_args = stage_args(args, Path(output_dir) / f"member-{m}", num_train_epochs=epochs,
                                     task_weights=g_job.task_weights, seed=seed + m)  # fmt: skip
            trainer = MtCNNDistillationTrainer(
                model=model, args=member_args, train_dataset=prepared.train.select(np.flatnonzero(trains_on[m])),
                data_collator=ReportCollator(pad_token_id=pad), callbacks=callbacks,
            )  # fmt: skip
            trainer.train()
            models.append(trainer.accelerator.unwrap_model(trainer.model).eval())
    wall = time.perf_counter() - started
    logger.info("teacher group %s x%d trained in %.1f s", spec.architecture, spec.members, wall)
    return TeacherGroup(spec=spec, models=models, trains_on=trains_on, seed=seed, wall_time_s=wall)


def group_seed(args_seed: int, index: int, spec: TeacherSpec) -> int:
    """The seed of group ``index``: the spec's, else the training seed + 1000 * index."""
    return args_seed + 1000 * index if spec.seed is None else spec.seed


def train_teacher_groups(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    specs: list[TeacherSpec | dict | str],
    output_dir: str | os.PathLike,
    *,
    callbacks: list | None = None,
) -> list[TeacherGroup]:
    """Trains every group (``output_dir/group-<i>-<arch>``), group ``i`` with :func:`group_seed`.

    Args:
        prepared: Data from :func:`reportkd.text.mtcnn.pipeline.prepare_data`.
        job: The job settings (folds / bagging, teacher epochs, default model sizes).
        args: The user's training arguments (every group gets them, with its own seed).
        specs: The groups, as :class:`TeacherSpec`, dicts or ``"arch:name=value,..."`` strings.
        output_dir: Folder of the groups' trainer outputs.
        callbacks: Extra trainer callbacks.
    """
    specs = [TeacherSpec.parse(s) for s in specs]
    if not specs:
        raise ValueError("A mixed teacher needs at least one TeacherSpec.")
    out = Path(output_dir)
    return [
        train_teacher_group(
            prepared,
            job,
            args,
            spec,
            out / f"group-{i}-{spec.architecture}",
            group_seed(args.seed, i, spec),
            callbacks=callbacks,
        )  # fmt: skip
        for i, spec in enumerate(specs)
    ]


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


def _accuracy(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for task, p in probs.items():
        present = labels[task] != -100
        out[task] = float((p[present].argmax(-1) == labels[task][present]).mean()) if present.any() else float("nan")
    return out


def mixed_soft_labels(
    groups: list[TeacherGroup], dataset, pad_token_id: int
) -> tuple[dict[str, np.ndarray], list[tuple[dict[str, np.ndarray], np.ndarray]]]:
    """Out-of-fold soft labels of the training reports over all members of all groups.

    A report's soft label is the mean softmax over the members (of every group) that did not train on it; when every
    member of every group trained on it (``folds == 1``), the mean over all members.

    Args:
        groups: The trained groups (their ``trains_on`` masks index ``dataset``'s rows).
        dataset: The training reports the groups trained on.
        pad_token_id: Padding id.

    Returns:
        Task -> (reports, classes) float32 soft labels, and per group its (sums, weights) (for per-group means).
    """
    group_sums = [group_probability_sums(g, dataset, (~g.trains_on).astype(np.float32), pad_token_id) for g in groups]
    none_held_out = sum(w for _, w in group_sums) == 0
    if none_held_out.any():  # reports no member of any group held out: every member of every group labels them
        for j, group in enumerate(groups):
            weights = (~group.trains_on).astype(np.float32)
            weights[:, none_held_out] = 1.0
            group_sums[j] = group_probability_sums(group, dataset, weights, pad_token_id)
    total_weight = sum(w for _, w in group_sums)
    soft = {task: sum(s[task] for s, _ in group_sums) / total_weight[:, None] for task in group_sums[0][0]}
    return {task: value.astype(np.float32) for task, value in soft.items()}, group_sums


def train_mixed_teacher(
    prepared: PreparedData,
    job: MtCNNJobArguments,
    args: TrainingArguments,
    specs: list[TeacherSpec | dict | str],
    output_dir: str | os.PathLike,
) -> MixedTeacher:
    """Trains every group of a mixed teacher and returns the training reports' out-of-fold soft labels.

    Args:
        prepared: Data from :func:`reportkd.text.mtcnn.pipeline.prepare_data`.
        job: The job settings (folds / bagging, teacher epochs, default model sizes).
        args: The user's training arguments (every group gets them, with its own seed).
        specs: The groups, as :class:`TeacherSpec`, dicts or ``"arch:name=value,..."`` strings.
        output_dir: Folder of the groups' trainer outputs (``group-<i>-<arch>``).
    """
    groups = train_teacher_groups(prepared, job, args, specs, output_dir)
    soft, group_sums = mixed_soft_labels(groups, prepared.train, prepared.tokenizer.pad_token_id)
    labels = labels_by_task(prepared.train, prepared.task_labels)
    group_accuracy = []
    for sums, weight in group_sums:
        mean = {task: value / np.maximum(weight, 1e-12)[:, None] for task, value in sums.items()}
        group_accuracy.append(_accuracy(mean, labels))
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


@dataclass
class MixedTeacherConfig:
    """What the trainers and prediction helpers read from a teacher's ``config`` (a :class:`MixedTeacherEnsemble`).

    Args:
        task_labels: Task -> class names (shared by every group).
        pad_token_id: Padding id.
        kernel_sizes: ``[widest window of any MtCNN group]`` (inputs are padded to it), else ``[1]``.
        members: Members over all groups.
    """

    task_labels: dict[str, list[str]]
    pad_token_id: int
    kernel_sizes: list[int]
    members: int

    @property
    def task_names(self) -> list[str]:
        return list(self.task_labels)

    @property
    def num_labels(self) -> dict[str, int]:
        return {t: len(v) for t, v in self.task_labels.items()}


class MixedTeacherEnsemble(nn.Module):
    """Teacher groups of several architectures as one frozen teacher: probabilities = mean over all members.

    ``forward`` returns, per task, the log of the mean member softmax as ``logits`` (so ``softmax(logits)`` is that
    mean and :func:`reportkd.text.mtcnn.predict.predict_probs` and the trainers use it like one model);
    :meth:`soft_labels` is what consistent teaching calls on each augmented batch.

    Args:
        groups: The trained groups (same tasks and label maps, same tokenizer).
    """

    def __init__(self, groups: list[TeacherGroup]) -> None:
        super().__init__()
        if not groups:
            raise ValueError("MixedTeacherEnsemble needs at least one group.")
        self.groups = groups
        self.members = nn.ModuleList(m for g in groups for m in g.models)
        first = groups[0].models[0].config
        widest = max([max(m.config.kernel_sizes) for m in self.members if hasattr(m.config, "kernel_sizes")] or [1])
        self.config = MixedTeacherConfig(
            task_labels={t: list(v) for t, v in first.task_labels.items()}, pad_token_id=first.pad_token_id,
            kernel_sizes=[widest], members=sum(g.spec.members for g in groups),
        )  # fmt: skip
        for m in self.members:
            if dict(m.config.task_labels) != self.config.task_labels:
                raise ValueError("Teacher groups disagree on the label maps; train every group on the same data.")

    def soft_labels(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, temperature: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """Mean over all members of all groups of softmax(logits / temperature), in eval mode, no gradients.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: Optional (B, L) mask.
            temperature: Softmax temperature (> 0).
        """
        was_training = self.training
        self.eval()
        pad = self.config.kernel_sizes[0] - input_ids.shape[1]
        if pad > 0:  # a group's windows may be wider than the job's (the collators pad to the job's)
            input_ids = F.pad(input_ids, (0, pad), value=self.config.pad_token_id)
            attention_mask = None if attention_mask is None else F.pad(attention_mask, (0, pad), value=0)
        sums: dict[str, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for model in self.members:
                    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
                    for task, value in logits.items():
                        probs = F.softmax(value.float() / temperature, -1)
                        probs = probs.sum(0) if probs.dim() == 3 else probs  # ensembles: (members, B, C)
                        sums[task] = sums.get(task, 0) + probs
        finally:
            self.train(was_training)
        return {task: value / self.config.members for task, value in sums.items()}

    predict_proba = soft_labels

    def forward(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> MtCNNOutput:
        """``logits``: per task, log of the mean member softmax (``(B, C)``).

        Args:
            input_ids: (B, L) token ids.
            attention_mask: Optional (B, L) mask.
            **kwargs: Ignored (labels are not used: the teacher is frozen).
        """
        probs = self.soft_labels(input_ids, attention_mask)
        return MtCNNOutput(logits={task: p.clamp_min(1e-30).log() for task, p in probs.items()})

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Saves each group under ``folder/group-<i>-<arch>`` (HiSAN members in ``member-<m>``) and ``teacher.json``.

        Args:
            folder: Target folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = []
        for i, group in enumerate(self.groups):
            name = f"group-{i}-{group.spec.architecture}"
            if group.spec.architecture == "mtcnn":
                group.models[0].save_pretrained(folder / name)
            else:
                for m, model in enumerate(group.models):
                    model.save_pretrained(folder / name / f"member-{m}")
            manifest.append({"folder": name, "spec": dataclasses.asdict(group.spec), "seed": group.seed,
                             "wall_time_s": group.wall_time_s})  # fmt: skip
        write_json(folder / MANIFEST, {"format": "reportkd-mixed-teacher", "groups": manifest})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, job: MtCNNJobArguments, n_train: int) -> MixedTeacherEnsemble:
        """Loads a saved mixed teacher; the groups' training masks are rebuilt from ``job`` and their seeds.

        Args:
            folder: A folder written by :meth:`save_pretrained`.
            job: The job settings the teacher was trained with.
            n_train: Training reports (rows of the masks).
        """
        from transformers import AutoModel

        from .. import hisan  # noqa: F401  (registers HiSAN with AutoModel)

        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise FileNotFoundError(f"{folder} holds no {MANIFEST}; it is not a saved mixed teacher.")
        groups = []
        for entry in json.loads((folder / MANIFEST).read_text())["groups"]:
            spec = TeacherSpec(**entry["spec"])
            path = folder / entry["folder"]
            if spec.architecture == "mtcnn":
                models = [AutoModel.from_pretrained(path, use_safetensors=True).eval()]
            else:
                models = [AutoModel.from_pretrained(path / f"member-{m}", use_safetensors=True).eval()
                          for m in range(spec.members)]  # fmt: skip
            trains_on = member_training_mask(group_job(job, spec), n_train, entry["seed"])
            groups.append(TeacherGroup(spec, models, trains_on, entry["seed"], entry.get("wall_time_s", float("nan"))))
        return cls(groups).eval()


def group_summaries(groups: list[TeacherGroup], prepared: PreparedData) -> list[dict[str, Any]]:
    """Per group: architecture, members, hyperparameters, seed, wall time, out-of-fold training and test accuracy.

    ``train_accuracy`` is the accuracy of the group's own soft labels on the training reports (the mean over the
    group's members that did not train on each report, all members where none was held out: out-of-fold with
    ``folds`` > 1, in-sample with ``folds == 1``); ``test_accuracy`` that of the mean over all its members on the
    test split.

    Args:
        groups: The trained groups.
        prepared: The job's data.
    """
    pad = prepared.tokenizer.pad_token_id
    train_y = labels_by_task(prepared.train, prepared.task_labels)
    test_y = labels_by_task(prepared.test, prepared.task_labels)
    out = []
    for group in groups:
        soft, _ = mixed_soft_labels([group], prepared.train, pad)
        test = mixed_teacher_probs([group], prepared.test, pad) if len(prepared.test) else None
        config = group.models[0].config
        hp = {k: v for k, v in group.spec.settings().items() if k not in ("architecture", "members", "seed")}
        for name in ("embedding_dim", "dropout", "kernel_sizes", "num_filters"):  # resolved from the job's
            if hasattr(config, name):
                hp[name] = getattr(config, name)
        out.append({
            "architecture": group.spec.architecture, "members": group.spec.members, "seed": group.seed,
            "hyperparameters": hp, "wall_time_s": round(float(group.wall_time_s), 1),
            "train_accuracy": _accuracy(soft, train_y),
            "test_accuracy": _accuracy(test, test_y) if test is not None else {},
        })  # fmt: skip
    return out


__all__ = [
    "ARCHITECTURES",
    "MixedTeacher",
    "MixedTeacherConfig",
    "MixedTeacherEnsemble",
    "TeacherGroup",
    "TeacherSpec",
    "group_probability_sums",
    "group_seed",
    "group_summaries",
    "mixed_soft_labels",
    "mixed_teacher_probs",
    "train_mixed_teacher",
    "train_teacher_group",
    "train_teacher_groups",
]
