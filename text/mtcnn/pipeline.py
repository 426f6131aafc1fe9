"""Ensemble distillation of multitask report classifiers, end to end (De Angeli et al., JAMIA Open 2022).

teacher ensemble (vectorized, optionally out-of-fold) → soft labels stored with the data → student distilled on
them through the shared :class:`~reportkd.trainer.DistillationTrainer`, next to a hard-label baseline with the
same architecture and budget → per-task abstention thresholds at a target accuracy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from reportkd.abstention import Calibration, calibrate, selective_metrics, weights_fingerprint, write_thresholds
from reportkd.data import (
    IGNORE_INDEX,
    LoadStats,
    ReportCollator,
    attach_teacher_outputs,
    build_label_maps,
    encode_reports,
    load_reports,
    save_soft_labels,
    split_indices,
)
from reportkd.trainer import DistillationConfig, DistillationTrainer
from reportkd.utils import write_json

from .configuration_mtcnn import MtCNNConfig
from .ensemble import MemberGradClipCallback, MtCNNEnsembleForReportClassification, fold_member_mask
from .modeling_mtcnn import MtCNNForReportClassification
from .tokenization import train_word_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class EnsembleDistillationSettings:
    """Settings of the ensemble-distillation job (the ``reportkd demo`` options).

    Args:
        tasks: Label columns, one classification head each.
        text_column: Column with the report text.
        members: Teacher ensemble size.
        folds: Out-of-fold soft labels: members are split over ``folds`` folds and each report's soft label comes
            from the members that did not train on it. ``1`` = every member trains on everything.
        epochs: Epochs for teacher members, baseline and student alike (unless overridden below).
        teacher_epochs: Epochs of the teacher members (None = ``epochs``); fewer epochs = early-stopped members.
        student_epochs: Epochs of the distilled student (None = ``epochs``).
        member_sampling: ``"folds"`` (members split over ``folds`` folds, out-of-fold soft labels) or
            ``"bagging"`` (each member trains on a random ``bag_fraction`` of the reports; a report's soft label
            is the mean of the members that left it out, or of all members when none did).
        bag_fraction: Fraction of the training reports each member sees with ``member_sampling="bagging"``.
        batch_size: Per-device batch size.
        learning_rate: Adam learning rate.
        embedding_dim: Word embedding size.
        num_filters: Filters per convolution window.
        kernel_sizes: Convolution windows.
        dropout: Dropout before the heads.
        max_length: Tokens kept per report.
        min_word_count: Words seen fewer times map to ``[UNK]``.
        min_class_count: Classes seen fewer times map to ``other``.
        unknown_as_missing: Treat label ``unknown`` as a missing label instead of a class.
        alpha: Weight of the soft labels in the student's loss (``1 - alpha`` weights hard labels).
        temperature: Distillation temperature.
        target_accuracy: Accuracy the abstention thresholds are calibrated to.
        split: Train / calibration / test fractions.
        seed: Seed for initialisation and data order (and the split unless ``split_seed`` is given).
        split_seed: Seed of the train / calibration / test split (None = ``seed``); fix it to compare seeds.
        min_words: Reports with fewer words are skipped (and counted).
    """

    tasks: tuple[str, ...] = ("organ", "cancer_type", "histology", "grade", "t_stage", "laterality", "behavior")
    text_column: str = "text"
    members: int = 8
    folds: int = 4
    epochs: int = 8
    teacher_epochs: int | None = None
    student_epochs: int | None = None
    member_sampling: str = "folds"
    bag_fraction: float = 0.632
    batch_size: int = 32
    learning_rate: float = 3e-3
    embedding_dim: int = 64
    num_filters: int = 64
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    dropout: float = 0.5
    max_length: int = 512
    min_word_count: int = 2
    min_class_count: int = 5
    unknown_as_missing: bool = False
    alpha: float = 0.5
    temperature: float = 1.0
    target_accuracy: float = 0.97
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    split_seed: int | None = None
    min_words: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}.")
        if self.folds < 1 or (self.folds > 1 and self.members % self.folds):
            raise ValueError(f"folds must be >= 1 and divide members ({self.members}), got {self.folds}.")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if not self.tasks:
            raise ValueError("Give at least one task column.")
        for name in ("teacher_epochs", "student_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}.")
        if self.member_sampling not in ("folds", "bagging"):
            raise ValueError(f"member_sampling must be 'folds' or 'bagging', got {self.member_sampling!r}.")
        if not 0.0 < self.bag_fraction < 1.0:
            raise ValueError(f"bag_fraction must be in (0, 1), got {self.bag_fraction}.")


@dataclass
class PreparedData:
    """Tokenised splits, tokenizer and label maps."""

    train: Dataset
    calibration: Dataset
    test: Dataset
    tokenizer: Any
    task_labels: dict[str, list[str]]
    stats: LoadStats


def prepare_data(source: Any, settings: EnsembleDistillationSettings) -> PreparedData:
    """Loads and validates reports, splits them, builds the tokenizer and label maps from the training split."""
    ds, stats = load_reports(
        source, text_column=settings.text_column, task_columns=settings.tasks, min_words=settings.min_words
    )
    split_seed = settings.seed if settings.split_seed is None else settings.split_seed
    tr, ca, te = split_indices(len(ds), settings.split, seed=split_seed)
    train, cal, test = ds.select(tr), ds.select(ca), ds.select(te)
    tokenizer = train_word_tokenizer(
        train[settings.text_column], min_count=settings.min_word_count, max_length=settings.max_length
    )
    task_labels = build_label_maps(
        train,
        settings.tasks,
        min_class_count=settings.min_class_count,
        unknown_as_missing=settings.unknown_as_missing,
    )
    enc = {
        name: encode_reports(
            split,
            tokenizer,
            task_labels,
            text_column=settings.text_column,
            max_length=settings.max_length,
            unknown_as_missing=settings.unknown_as_missing,
        )
        for name, split in (("train", train), ("calibration", cal), ("test", test))
    }
    return PreparedData(enc["train"], enc["calibration"], enc["test"], tokenizer, task_labels, stats)


def model_config(prepared: PreparedData, settings: EnsembleDistillationSettings, members: int = 1) -> MtCNNConfig:
    """The MtCNN config shared by teacher members, baseline and student."""
    return MtCNNConfig(
        vocab_size=len(prepared.tokenizer),
        embedding_dim=settings.embedding_dim,
        num_filters=settings.num_filters,
        kernel_sizes=list(settings.kernel_sizes),
        dropout=settings.dropout,
        max_length=settings.max_length,
        pad_token_id=prepared.tokenizer.pad_token_id,
        task_labels=prepared.task_labels,
        num_members=members,
    )


def training_args(
    output_dir: str | os.PathLike,
    settings: EnsembleDistillationSettings,
    config_class: type[DistillationConfig] = DistillationConfig,
    **kw,
) -> DistillationConfig:
    """One set of Trainer arguments for every model of the job (same budget for all)."""
    args = dict(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        seed=settings.seed,
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    args.update(kw)
    return config_class(**args)


class MemberMaskCollator(ReportCollator):
    """Adds ``member_mask`` (members × batch) from each row's ``member_in`` list: which members train on it."""

    def __call__(self, features):
        batch = super().__call__(features)
        batch["member_mask"] = torch.tensor([f["member_in"] for f in features], dtype=torch.bool).T
        return batch


def member_training_mask(settings: EnsembleDistillationSettings, n_rows: int) -> np.ndarray:
    """``(members, reports)`` bool: which reports each member trains on (folds or bagging, see the settings)."""
    rng = np.random.default_rng(settings.seed + 1)
    if settings.member_sampling == "bagging":
        return rng.random((settings.members, n_rows)) < settings.bag_fraction
    if settings.folds == 1:
        return np.ones((settings.members, n_rows), dtype=bool)
    fold_of_row = torch.from_numpy(rng.integers(0, settings.folds, n_rows))
    return fold_member_mask(fold_of_row, settings.members, settings.folds).numpy()


def train_teacher_ensemble(
    prepared: PreparedData, settings: EnsembleDistillationSettings, output_dir: str | os.PathLike
) -> tuple[MtCNNEnsembleForReportClassification, dict[str, np.ndarray]]:
    """Trains the vectorized teacher ensemble and returns it with the soft labels of the training reports.

    A report's soft label is the mean softmax of the members that never trained on it (out-of-fold / out-of-bag);
    with ``folds == 1`` (or a report every bagged member saw) it is the mean over all members.
    """
    torch.manual_seed(settings.seed)
    ensemble = MtCNNEnsembleForReportClassification(model_config(prepared, settings, members=settings.members))
    trains_on = member_training_mask(settings, len(prepared.train))
    train = prepared.train.add_column("member_in", trains_on.T.tolist())
    collator = MemberMaskCollator(pad_token_id=prepared.tokenizer.pad_token_id, min_length=max(settings.kernel_sizes))
    # clip each member's gradient on its own (a shared clip factor would couple the members)
    trainer = DistillationTrainer(
        model=ensemble,
        args=training_args(
            Path(output_dir) / "teacher",
            settings,
            max_grad_norm=0.0,
            num_train_epochs=settings.teacher_epochs or settings.epochs,
        ),
        train_dataset=train,
        data_collator=collator,
        callbacks=[MemberGradClipCallback(1.0)],
    )
    trainer.train()
    ensemble.eval()
    member_probs = predict_member_probs(ensemble, prepared.train, pad_token_id=prepared.tokenizer.pad_token_id)
    held_out = ~trains_on
    held_out[:, held_out.sum(0) == 0] = True  # no held-out member: use all of them
    soft = {task: (p * held_out[..., None]).sum(0) / held_out.sum(0)[:, None] for task, p in member_probs.items()}
    return ensemble, soft


@torch.no_grad()
def predict_member_probs(
    model,
    dataset: Dataset,
    *,
    pad_token_id: int = 0,
    batch_size: int = 128,
    temperature: float = 1.0,
    with_abstain: bool = False,
) -> dict[str, np.ndarray]:
    """Softmax per task: ``(M, N, C)`` per member for an ensemble, ``(N, C)`` for a single model.

    Args:
        model: An MtCNN or MtCNN ensemble.
        dataset: Rows with ``input_ids``.
        pad_token_id: Padding id of the tokenizer.
        batch_size: Prediction batch size.
        temperature: Softmax temperature (1 = the model's probabilities).
        with_abstain: DAC models: ``C + 1`` probabilities with the abstain class last (default: the real classes,
            renormalised).
    """
    model.eval()
    min_length = max(getattr(model.config, "kernel_sizes", [1]))
    loader = DataLoader(
        dataset.select_columns(["input_ids"]),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=ReportCollator(pad_token_id=pad_token_id, min_length=min_length),
    )
    device = next(model.parameters()).device
    cut = -1 if getattr(model.config, "abstain_class", False) and not with_abstain else None
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in tqdm(loader, desc="Predicting", leave=False):
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        for task, logits in out.logits.items():
            chunks.setdefault(task, []).append(torch.softmax(logits[..., :cut].float() / temperature, -1).cpu())
    dim = 1 if getattr(model.config, "num_members", 1) > 1 else 0
    return {t: torch.cat(c, dim=dim).numpy() for t, c in chunks.items()}


def predict_probs(model, dataset: Dataset, **kwargs) -> dict[str, np.ndarray]:
    """``(N, C)`` probabilities per task; an ensemble's are the mean of its members' softmax.

    Args:
        model: An MtCNN or MtCNN ensemble.
        dataset: Rows with ``input_ids``.
        **kwargs: ``pad_token_id``, ``batch_size``, ``temperature``, ``with_abstain`` (see
            :func:`predict_member_probs`).
    """
    probs = predict_member_probs(model, dataset, **kwargs)
    if getattr(model.config, "num_members", 1) > 1:
        probs = {t: p.mean(0) for t, p in probs.items()}
    return probs


def train_single(
    prepared: PreparedData,
    settings: EnsembleDistillationSettings,
    output_dir: str | os.PathLike,
    soft_labels: dict[str, np.ndarray] | None = None,
) -> MtCNNForReportClassification:
    """Trains one MtCNN: the distilled student when ``soft_labels`` are given, else the hard-label baseline."""
    torch.manual_seed(settings.seed + 7)
    model = MtCNNForReportClassification(model_config(prepared, settings))
    train = prepared.train
    if soft_labels is not None:
        train = attach_teacher_outputs(train, soft_labels)
    epochs = settings.student_epochs if soft_labels is not None and settings.student_epochs else settings.epochs
    args = training_args(
        output_dir,
        settings,
        alpha=settings.alpha,
        temperature=settings.temperature,
        teacher_outputs_type="probs",
        num_train_epochs=epochs,
    )
    collator = ReportCollator(pad_token_id=prepared.tokenizer.pad_token_id, min_length=max(settings.kernel_sizes))
    DistillationTrainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    return model.eval()


def train_dac(
    prepared: PreparedData,
    settings: EnsembleDistillationSettings,
    output_dir: str | os.PathLike,
    *,
    target_accuracy: float | None = None,
    task_targets: dict[str, float] | None = None,
    validation_fraction: float = 0.1,
    alpha: float = 1.0,
) -> MtCNNForReportClassification:
    """Trains a Deep Abstaining Classifier MtCNN with hard labels (FrESCO's DAC), same budget as the baseline.

    A random ``validation_fraction`` of the training reports is held out to tune the abstention penalties toward
    the target accuracy (the calibration split stays untouched for threshold calibration).

    Args:
        prepared: Data from :func:`prepare_data`.
        settings: Job settings (architecture, epochs, seed).
        output_dir: Trainer output directory.
        target_accuracy: Target accuracy of every task (None = ``settings.target_accuracy``).
        task_targets: Per-task targets overriding it.
        validation_fraction: Share of the training reports used to tune the penalties.
        alpha: Initial abstention penalty.
    """
    from .dac import DACConfig, DACTrainer

    torch.manual_seed(settings.seed + 7)
    config = model_config(prepared, settings)
    config.abstain_class, config.dac_alpha = True, float(alpha)
    model = MtCNNForReportClassification(config)
    order = np.random.default_rng(settings.seed + 3).permutation(len(prepared.train))
    n_val = max(1, int(round(validation_fraction * len(order))))
    args = training_args(
        output_dir,
        settings,
        DACConfig,
        dac_target_accuracy=settings.target_accuracy if target_accuracy is None else target_accuracy,
        dac_task_targets=task_targets,
    )
    collator = ReportCollator(pad_token_id=prepared.tokenizer.pad_token_id, min_length=max(settings.kernel_sizes))
    DACTrainer(
        model=model,
        args=args,
        train_dataset=prepared.train.select(np.sort(order[n_val:])),
        eval_dataset=prepared.train.select(np.sort(order[:n_val])),
        data_collator=collator,
    ).train()
    return model.eval()


def labels_by_task(dataset: Dataset, task_labels: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Task → ``(N,)`` label ids (``-100`` = missing) from the ``labels`` column."""
    labels = np.asarray(dataset["labels"], dtype=np.int64).reshape(len(dataset), len(task_labels))
    return {t: labels[:, i] for i, t in enumerate(task_labels)}


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
            model_sha256=weights_fingerprint(out), **metadata,
        )  # fmt: skip
    return out


def run_ensemble_distillation(
    source: Any, settings: EnsembleDistillationSettings, output_dir: str | os.PathLike
) -> dict[str, Any]:
    """The whole job; returns a JSON-able summary (also written to ``output_dir/results.json``)."""
    out = Path(output_dir)
    prepared = prepare_data(source, settings)
    pad = prepared.tokenizer.pad_token_id
    ensemble, soft = train_teacher_ensemble(prepared, settings, out / "work")
    save_soft_labels(
        out / "soft_labels.safetensors",
        prepared.train["id"],
        soft,
        prepared.task_labels,
        {"members": settings.members, "folds": settings.folds, "temperature": settings.temperature},
    )
    baseline = train_single(prepared, settings, out / "work" / "baseline")
    student = train_single(prepared, settings, out / "work" / "student", soft_labels=soft)
    cal_y = labels_by_task(prepared.calibration, prepared.task_labels)
    test_y = labels_by_task(prepared.test, prepared.task_labels)
    results: dict[str, Any] = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "extra"},
        "data": {
            **asdict(prepared.stats),
            "train": len(prepared.train),
            "calibration": len(prepared.calibration),
            "test": len(prepared.test),
        },
        "models": {},
    }
    calibrations: dict[str, dict[str, Calibration]] = {}
    for name, model in (("ensemble", ensemble), ("baseline", baseline), ("student", student)):
        cal_p = predict_probs(model, prepared.calibration, pad_token_id=pad)
        test_p = predict_probs(model, prepared.test, pad_token_id=pad)
        results["models"][name], calibrations[name] = abstention_report(
            cal_p, test_p, cal_y, test_y, settings.target_accuracy
        )
    save_classifier(student, prepared.tokenizer, out / "student", calibrations["student"]["ltt"])
    save_classifier(baseline, prepared.tokenizer, out / "baseline", None)
    _write_provenance(out, settings, prepared, source)
    write_json(out / "results.json", results)
    return results


def _write_provenance(out: Path, settings: EnsembleDistillationSettings, prepared: PreparedData, source: Any) -> None:
    """``distillation.json`` in the student and baseline folders, for their model cards."""
    from reportkd.hub import DistillationInfo

    data = source if isinstance(source, (str, os.PathLike)) else "in-memory reports (e.g. reportkd.synthetic)"
    hp = {k: v for k, v in asdict(settings).items() if k not in ("extra", "tasks")}
    held_out = f"{len(prepared.calibration)} calibration and {len(prepared.test)} test reports held out"
    for name, method, teachers in (
        ("student", "ensemble_distillation", [f"MtCNN ensemble ({settings.members} members, {settings.folds} folds)"]),
        ("baseline", "hard_label", []),
    ):
        DistillationInfo(
            method=method,
            teachers=teachers,
            training_data=f"{len(prepared.train)} reports from {data}",
            eval_data=held_out,
            hyperparameters=hp,
        ).save(out / name)


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: per task, test accuracy and coverage at the target, baseline vs student (and ensemble)."""
    target = results["settings"]["target_accuracy"]
    models = results["models"]
    head = (
        f"| task | acc baseline | acc student | acc ensemble | coverage@{target:.0%} baseline | student | "
        "Δ student−baseline | ensemble | sel. acc student |"
    )
    lines = [head, "|" + "---|" * 9]
    for task in models["student"]:
        b, s, e = (models[m][task]["test"] for m in ("baseline", "student", "ensemble"))
        sel = s["selective_accuracy"]
        lines.append(
            f"| {task} | {b['accuracy']:.3f} | {s['accuracy']:.3f} | {e['accuracy']:.3f} | {b['coverage']:.3f} | "
            f"{s['coverage']:.3f} | {s['coverage'] - b['coverage']:+.3f} | {e['coverage']:.3f} | "
            f"{'—' if sel is None else f'{sel:.3f}'} |"
        )
    return "\n".join(lines)


__all__ = [
    "EnsembleDistillationSettings",
    "IGNORE_INDEX",
    "format_table",
    "prepare_data",
    "run_ensemble_distillation",
    "save_classifier",
    "train_dac",
    "train_single",
    "train_teacher_ensemble",
]
