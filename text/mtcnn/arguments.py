"""Settings of the MtCNN ensemble-distillation job that ``TrainingArguments`` does not hold (data, models, loss).

Training settings (epochs, batch size, learning rate, seed, precision, accumulation, ``max_steps``…) are the user's
``transformers.TrainingArguments`` and reach every stage unchanged; see :func:`reportkd.text.mtcnn.job.run_mtcnn_job`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .specs import (
    TeacherSpec,
    format_student_arch,
    format_teacher_archs,
    parse_student_arch,
    parse_teacher_archs,
)

TASKS = ["organ", "cancer_type", "histology", "grade", "t_stage", "laterality", "behavior"]


@dataclass
class MtCNNJobArguments:
    """Data, model, teacher-ensemble, distillation and abstention settings of the MtCNN job.

    Args:
        tasks: Label columns, one classification head each.
        text_column: Column with the report text.
        split: Train / calibration / test fractions.
        split_seed: Seed of the train / calibration / test split (None: the training seed); fix it to compare seeds.
        min_words: Reports with fewer words are skipped (and counted).
        min_class_count: Classes seen fewer times in the training split map to ``other``.
        unknown_as_missing: Treat label ``unknown`` as a missing label instead of a class.
        min_word_count: Words seen fewer times map to ``[UNK]``.
        max_length: Tokens kept per report.
        embedding_dim: Word embedding size (paper: 300).
        num_filters: Filters per convolution window (paper: 300).
        kernel_sizes: Convolution windows.
        dropout: Dropout before the heads.
        members: Teacher ensemble size (with ``teacher_archs``: set to the groups' total).
        teacher_archs: A mixed teacher instead of ``members`` MtCNNs: groups ``ARCH:MEMBERS`` separated by commas,
            each with optional settings, e.g. ``"mtcnn:4,hisan:4"`` or ``"mtcnn:4(kernel_sizes=2/3,dropout=0.3),
            hisan:4(dropout=0.2)"`` (see :mod:`reportkd.text.mtcnn.specs`); the soft labels average all members of
            all groups (out-of-fold with ``folds`` > 1, which must divide every group's members).
        member_sampling: ``"folds"`` (members split over ``folds`` folds, out-of-fold soft labels) or ``"bagging"``
            (each member trains on a random ``bag_fraction`` of the reports; out-of-bag soft labels).
        folds: Folds of ``member_sampling="folds"`` (1: every member trains on every report).
        bag_fraction: Share of the training reports each bagged member sees.
        teacher_epochs: Epochs of the teacher ensemble (None: ``num_train_epochs`` of the training arguments).
        student_epochs: Epochs of the distilled student (None: ``num_train_epochs``).
        consistent_teaching: The teacher ensemble labels a fresh augmented view of each report on the fly and the
            student matches it on that same view (Beyer et al., CVPR 2022); needs the ensemble in memory.
        augment_strength: Scales the augmentation rates of consistent teaching (1: word / span dropout 0.1,
            sentence shuffle 0.5, OCR noise 0.05; see :class:`reportkd.text.mtcnn.augment.AugmentPolicy`).
        unlabelled: A reports file with texts and no labels: extra transfer data (soft term only).
        counterfactuals: CoD transfer data: ``"none"``, ``"add"`` (one counterfactual per training report, added)
            or ``"equal"`` (half the training reports plus their counterfactuals, the same size).
        cod_max_edits: Most words deleted per counterfactual.
        student_arch: Architecture of the student and of the hard-label baseline: ``"mtcnn"`` (default) or
            ``"hisan"``, optionally with settings, e.g. ``"hisan(dropout=0.2)"``. The DAC stays an MtCNN.
        alpha: Weight of the soft labels in the student's loss (``1 - alpha`` weights the hard labels).
        temperature: Distillation temperature (> 0).
        task_weights: Optional task → loss weight (dict or JSON object) for ensemble, baseline and student.
        train_baseline: Also train the hard-label baseline (same architecture and budget as the student).
        train_dac: Also train a Deep Abstaining Classifier (FrESCO's DAC), saved as ``dac/``.
        dac_targets: Per-task DAC target accuracies (dict or JSON object; default: ``target_accuracy`` for all).
        target_accuracy: Accuracy the abstention thresholds are calibrated to.
        threshold_method: Thresholds saved with the models: ``"ltt"`` (Learn-then-Test) or ``"empirical"``.
        delta: LTT risk level: the target holds with probability at least ``1 - delta``.
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "Label columns, one head each."})
    text_column: str = field(default="text", metadata={"help": "Column with the report text."})
    split: list[float] = field(
        default_factory=lambda: [0.6, 0.2, 0.2], metadata={"help": "Train / calibration / test fractions."}
    )
    split_seed: int | None = field(default=None, metadata={"help": "Seed of the data split (None: the seed)."})
    min_words: int = field(default=1, metadata={"help": "Skip reports with fewer words (counted)."})
    min_class_count: int = field(default=5, metadata={"help": "Rarer classes become 'other'."})
    unknown_as_missing: bool = field(default=False, metadata={"help": "Treat label 'unknown' as missing."})
    min_word_count: int = field(default=2, metadata={"help": "Rarer words map to [UNK]."})
    max_length: int = field(default=512, metadata={"help": "Tokens kept per report."})
    embedding_dim: int = field(default=64, metadata={"help": "Word embedding size (paper: 300)."})
    num_filters: int = field(default=64, metadata={"help": "Filters per convolution window (paper: 300)."})
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 4, 5], metadata={"help": "Convolution windows."})
    dropout: float = field(default=0.5, metadata={"help": "Dropout before the heads, in [0, 1)."})
    members: int = field(default=8, metadata={"help": "Teacher ensemble size (with teacher_archs: their total)."})
    teacher_archs: str | None = field(
        default=None,
        metadata={
            "help": "Mixed teacher groups instead of `members` MtCNNs: ARCH:MEMBERS[(name=value,...)] separated by "
            "commas, e.g. 'mtcnn:4,hisan:4' or 'mtcnn:4(kernel_sizes=2/3,dropout=0.3),hisan:4(dropout=0.2)'. "
            "Settings: embedding_dim, dropout, kernel_sizes (3/4/5), num_filters, member_chunk_size (mtcnn); "
            "attention_heads, attention_dim_per_head, words_per_line (hisan); seed, epochs."
        },
    )
    member_sampling: str = field(default="folds", metadata={"help": "'folds' or 'bagging'."})
    folds: int = field(default=1, metadata={"help": "Out-of-fold soft labels over this many folds (1: off)."})
    bag_fraction: float = field(default=0.632, metadata={"help": "Share of reports per bagged member."})
    teacher_epochs: int | None = field(default=None, metadata={"help": "Teacher epochs (None: num_train_epochs)."})
    student_epochs: int | None = field(default=None, metadata={"help": "Student epochs (None: num_train_epochs)."})
    consistent_teaching: bool = field(
        default=False, metadata={"help": "Teacher labels augmented views on the fly; student matches the same view."}
    )
    augment_strength: float = field(default=1.0, metadata={"help": "Scale of the augmentation rates, >= 0."})
    unlabelled: str | None = field(default=None, metadata={"help": "Reports file, no labels: extra transfer data."})
    counterfactuals: str = field(default="none", metadata={"help": "CoD transfer data: 'none', 'add' or 'equal'."})
    cod_max_edits: int = field(default=4, metadata={"help": "Most words deleted per counterfactual, >= 1."})
    student_arch: str = field(
        default="mtcnn",
        metadata={"help": "Student and baseline architecture: 'mtcnn' or 'hisan', optionally 'hisan(dropout=0.2)'."},
    )
    alpha: float = field(default=1.0, metadata={"help": "Weight of the soft labels in the student loss, in [0, 1]."})
    temperature: float = field(default=1.0, metadata={"help": "Distillation temperature (> 0)."})
    task_weights: dict[str, float] | str | None = field(
        default=None, metadata={"help": 'Task loss weights as JSON, e.g. \'{"organ": 2, "grade": 1}\'.'}
    )
    train_baseline: bool = field(default=True, metadata={"help": "Also train the hard-label baseline."})
    train_dac: bool = field(default=False, metadata={"help": "Also train a Deep Abstaining Classifier (dac/)."})
    dac_targets: dict[str, float] | str | None = field(
        default=None, metadata={"help": "Per-task DAC target accuracies as JSON, e.g. '{\"organ\": 0.97}'."}
    )
    target_accuracy: float = field(default=0.97, metadata={"help": "Abstention target accuracy, in (0, 1)."})
    threshold_method: str = field(default="ltt", metadata={"help": "Saved thresholds: 'ltt' or 'empirical'."})
    delta: float = field(default=0.1, metadata={"help": "LTT risk level, in (0, 1)."})

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        self.tasks, self.kernel_sizes, self.split = list(self.tasks), list(self.kernel_sizes), list(self.split)
        if not self.tasks:
            raise ValueError("Give at least one task column (tasks).")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct, got {self.tasks}.")
        groups = parse_teacher_archs(self.teacher_archs)
        self.teacher_archs = None if groups is None else format_teacher_archs(groups)
        self.student_arch = format_student_arch(parse_student_arch(self.student_arch))
        if groups is not None:
            self.members = sum(g.members for g in groups)
            uneven = [g.members for g in groups if self.folds > 1 and g.members % self.folds]
            if uneven:
                raise ValueError(f"folds ({self.folds}) must divide the members of every teacher_archs group, got "
                                 f"{uneven}; change the group sizes or folds.")  # fmt: skip
        _check(self.members >= 1, "members", self.members, ">= 1")
        if self.folds < 1 or (self.folds > 1 and self.members % self.folds):
            raise ValueError(f"folds must be >= 1 and divide members ({self.members}), got {self.folds}.")
        for name in ("teacher_epochs", "student_epochs"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, value, ">= 1 or None")
        if self.member_sampling not in ("folds", "bagging"):
            raise ValueError(f"member_sampling must be 'folds' or 'bagging', got {self.member_sampling!r}.")
        _check(0.0 < self.bag_fraction < 1.0, "bag_fraction", self.bag_fraction, "in (0, 1)")
        _check(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "in [0, 1]")
        _check(0.0 <= self.augment_strength <= 5.0, "augment_strength", self.augment_strength, "in [0, 5]")
        if self.counterfactuals not in ("none", "add", "equal"):
            raise ValueError(f"counterfactuals must be 'none', 'add' or 'equal', got {self.counterfactuals!r}.")
        _check(self.cod_max_edits >= 1, "cod_max_edits", self.cod_max_edits, ">= 1")
        if self.counterfactuals != "none" and groups is not None:
            raise ValueError("counterfactuals need an MtCNN-only teacher (saliency through one embedding table); "
                             "drop teacher_archs or set counterfactuals='none'.")  # fmt: skip
        if self.unlabelled == "":
            self.unlabelled = None
        if self.unlabelled is not None and not os.path.isfile(self.unlabelled):
            raise ValueError(f"unlabelled file {self.unlabelled} not found; give an existing .jsonl/.csv file.")
        if (self.consistent_teaching or self.unlabelled or self.counterfactuals != "none") and self.alpha == 0:
            raise ValueError("consistent_teaching, unlabelled and counterfactuals need the soft term: set alpha > 0.")
        _check(self.temperature > 0, "temperature", self.temperature, "> 0")
        _check(0.0 < self.target_accuracy < 1.0, "target_accuracy", self.target_accuracy, "in (0, 1)")
        _check(0.0 < self.delta < 1.0, "delta", self.delta, "in (0, 1)")
        if self.threshold_method not in ("ltt", "empirical"):
            raise ValueError(f"threshold_method must be 'ltt' or 'empirical', got {self.threshold_method!r}.")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or not math.isclose(sum(self.split), 1.0):
            raise ValueError(f"split must be 3 non-negative fractions summing to 1 (train/cal/test), got {self.split}")
        for name in ("embedding_dim", "num_filters", "min_word_count", "min_class_count"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        _check(self.min_words >= 0, "min_words", self.min_words, ">= 0")
        _check(bool(self.kernel_sizes) and min(self.kernel_sizes) >= 1, "kernel_sizes", self.kernel_sizes, ">= 1")
        _check(self.max_length >= max(self.kernel_sizes), "max_length", self.max_length, ">= the widest kernel")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "in [0, 1)")
        self.task_weights = _task_mapping(self.task_weights, "task_weights", self.tasks, lambda w: w >= 0, ">= 0")
        if self.task_weights is not None and not any(w > 0 for w in self.task_weights.values()):
            raise ValueError(f"task_weights must give at least one task a weight above 0, got {self.task_weights}.")
        self.dac_targets = _task_mapping(self.dac_targets, "dac_targets", self.tasks, lambda t: 0 < t < 1, "in (0, 1)")

    @property
    def model_fields(self) -> dict[str, Any]:
        """The architecture settings (what shapes the weights)."""
        names = ("embedding_dim", "num_filters", "kernel_sizes", "dropout", "max_length")
        return {n: getattr(self, n) for n in names}

    @property
    def data_fields(self) -> dict[str, Any]:
        """The data settings (what shapes the splits, the tokenizer and the label maps)."""
        names = ("tasks", "text_column", "split", "split_seed", "min_words", "min_class_count", "unknown_as_missing")
        return {n: getattr(self, n) for n in (*names, "min_word_count", "max_length")}

    @property
    def teacher_fields(self) -> dict[str, Any]:
        """The teacher-ensemble settings."""
        names = ("members", "member_sampling", "folds", "bag_fraction", "teacher_epochs")
        out = {n: getattr(self, n) for n in names}
        if self.teacher_archs is not None:  # only when set: runs from before the option keep their hashes
            out["teacher_archs"] = self.teacher_archs
        return out

    @property
    def teacher_groups(self) -> list[TeacherSpec] | None:
        """The parsed ``teacher_archs`` (None: one MtCNN ensemble of ``members``)."""
        return parse_teacher_archs(self.teacher_archs)

    @property
    def student_spec(self) -> TeacherSpec:
        """The parsed ``student_arch``."""
        return parse_student_arch(self.student_arch)

    @property
    def transfer_fields(self) -> dict[str, Any]:
        """The student's transfer-data settings (consistent teaching, unlabelled reports, counterfactuals)."""
        names = ("consistent_teaching", "augment_strength", "unlabelled", "counterfactuals", "cod_max_edits")
        return {n: getattr(self, n) for n in names}


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def _task_mapping(value: Any, name: str, tasks: list[str], valid, allowed: str) -> dict[str, float] | None:
    """A task → number mapping from a dict or a JSON object string, checked against ``tasks``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} must be a JSON object such as '{{\"{tasks[0]}\": 1}}': {e}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must map task names to numbers, got {type(value).__name__}: {value!r}.")
    out = {}
    for task, number in value.items():
        if task not in tasks:
            raise ValueError(f"{name} names unknown task {task!r}; tasks: {', '.join(tasks)}.")
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not valid(number):
            raise ValueError(f"{name}[{task!r}] must be a number {allowed}, got {number!r}.")
        out[str(task)] = float(number)
    return out


__all__ = ["MtCNNJobArguments", "TASKS"]
