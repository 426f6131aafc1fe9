"""Recipe: MtCNN teacher ensemble → soft labels → distilled student (+ hard-label baseline) → abstention thresholds.

Ensemble distillation of multitask report classifiers (De Angeli et al., JAMIA Open 2022) on
``reportkd.text.mtcnn.pipeline``: the teacher ensemble is trained as one vectorized module (out-of-fold soft labels
with ``folds > 1``), the student and the baseline through the shared ``DistillationTrainer`` with this recipe's
``DistillationConfig``, thresholds are calibrated per task at ``target_accuracy`` on a calibration split.

    # CPU, seconds, synthetic reports
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_quick.yaml
    # TCGA reports (from the repository root; ../shared/data/tcga-reports/reports.jsonl.gz)
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_tcga.yaml
    # several GPUs; the global batch is per_device_train_batch_size × processes (here 2 × 16 = the config's 32)
    accelerate launch --multi_gpu --num_processes 2 recipes/mtcnn_distill.py \
        --config recipes/configs/mtcnn_distill_tcga.yaml --per_device_train_batch_size 16
    # 2 CPU processes (torchrun + gloo; `accelerate launch --cpu` starts only one): hide CUDA, set use_cpu
    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 recipes/mtcnn_distill.py \
        --config recipes/configs/mtcnn_distill_quick.yaml --per_device_train_batch_size 16 --use_cpu true
    # push the student (private) or write it to a local hub folder
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_quick.yaml \
        --push_to_hub --hub_model_id org/mtcnn-student --hub_local_dir /models/hub

YAML keys are the field names of :class:`ScriptArguments`, :class:`ModelArguments` and
``reportkd.trainer.DistillationConfig`` (plus ``env:``); flags override them. Outputs in ``output_dir``:
``student/`` and ``baseline/`` (model, tokenizer, ``thresholds.json``, ``eval_results.json``, ``distillation.json``;
``reportkd push`` uploads them with a model card), ``soft_labels.safetensors`` and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":
    from _env import apply_env

    apply_env(sys.argv[1:])  # the config's env: block, before torch / transformers read the environment
import torch  # noqa: E402
from _parser import RecipeParser  # noqa: E402
from accelerate import PartialState  # noqa: E402
from reportkd.text.mtcnn import MtCNNForReportClassification  # noqa: E402
from reportkd.text.mtcnn.pipeline import (  # noqa: E402
    EnsembleDistillationSettings,
    abstention_report,
    labels_by_task,
    model_config,
    predict_probs,
    prepare_data,
    save_classifier,
    train_dac,
    train_teacher_ensemble,
)

from reportkd.data import ReportCollator, attach_teacher_outputs, save_soft_labels  # noqa: E402
from reportkd.hub import DistillationInfo, push_to_hub  # noqa: E402
from reportkd.trainer import DistillationConfig, DistillationTrainer  # noqa: E402
from reportkd.utils import write_json  # noqa: E402

TASKS = ["organ", "cancer_type", "histology", "grade", "t_stage", "laterality", "behavior"]


@dataclass
class ScriptArguments:
    """Data, teacher ensemble and abstention.

    Args:
        data: Reports file (``.jsonl[.gz]``, ``.csv``, ``.parquet``) or ``synthetic:n=2000,seed=0`` (generated).
        training_data: How the card describes the data (default: derived from ``data``).
        text_column: Column with the report text.
        tasks: Label columns, one head each.
        split: Train / calibration / test fractions.
        min_words: Reports with fewer words are skipped (and counted).
        min_class_count: Rarer classes become ``other``.
        unknown_as_missing: Treat label ``unknown`` as missing instead of a class.
        members: Teacher ensemble size.
        member_sampling: ``"folds"`` (out-of-fold soft labels over ``folds`` folds) or ``"bagging"`` (each member
            sees a random ``bag_fraction`` of the reports; out-of-bag soft labels).
        folds: Folds of ``member_sampling="folds"`` (1: every member sees every report).
        bag_fraction: Share of the reports each bagged member sees.
        teacher_epochs: Epochs of the teacher ensemble (None: ``num_train_epochs``; the student follows
            ``num_train_epochs`` or ``max_steps``).
        split_seed: Seed of the train / calibration / test split (None: ``seed``).
        train_baseline: Also train the hard-label baseline (same architecture and budget).
        train_dac: Also train a Deep Abstaining Classifier (FrESCO's DAC: an abstain output per task, penalties tuned
            toward ``dac_targets`` on 10% of the training reports), saved as ``dac/``.
        dac_targets: Per-task DAC target accuracies as JSON (default: ``target_accuracy`` for every task).
        target_accuracy: Accuracy the abstention thresholds are calibrated to.
        threshold_method: ``"ltt"`` (Learn-then-Test, holds with probability 1 - delta) or ``"empirical"``.
        delta: LTT risk level.
    """

    data: str = field(default="synthetic:n=2000,seed=0", metadata={"help": "Reports file or synthetic:n=..,seed=.."})
    training_data: str | None = field(default=None, metadata={"help": "Data description for the model card."})
    text_column: str = field(default="text", metadata={"help": "Column with the report text."})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "Label columns."})
    split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2], metadata={"help": "Train/cal/test."})
    min_words: int = field(default=1, metadata={"help": "Skip reports with fewer words."})
    min_class_count: int = field(default=5, metadata={"help": "Rarer classes become 'other'."})
    unknown_as_missing: bool = field(default=False, metadata={"help": "Label 'unknown' = missing."})
    members: int = field(default=8, metadata={"help": "Teacher ensemble size."})
    member_sampling: str = field(default="folds", metadata={"help": "'folds' or 'bagging'."})
    folds: int = field(default=4, metadata={"help": "Out-of-fold soft labels (1: off)."})
    bag_fraction: float = field(default=0.632, metadata={"help": "Share of reports per bagged member."})
    teacher_epochs: int | None = field(default=None, metadata={"help": "Teacher epochs (None: num_train_epochs)."})
    split_seed: int | None = field(default=None, metadata={"help": "Seed of the data split (None: seed)."})
    train_baseline: bool = field(default=True, metadata={"help": "Also train the hard-label baseline."})
    train_dac: bool = field(default=False, metadata={"help": "Also train a Deep Abstaining Classifier (dac/)."})
    dac_targets: str | None = field(default=None, metadata={"help": 'Per-task DAC targets, JSON: {"organ": 0.97}.'})
    target_accuracy: float = field(default=0.97, metadata={"help": "Abstention target accuracy."})
    threshold_method: str = field(default="ltt", metadata={"help": "'ltt' or 'empirical'."})
    delta: float = field(default=0.1, metadata={"help": "LTT risk level."})

    def __post_init__(self) -> None:
        if self.threshold_method not in ("ltt", "empirical"):
            raise ValueError(f"threshold_method must be 'ltt' or 'empirical', got {self.threshold_method!r}.")


@dataclass
class ModelArguments:
    """The MtCNN shared by teacher members, student and baseline.

    Args:
        embedding_dim: Word embedding size (paper: 300).
        num_filters: Filters per convolution window (paper: 300).
        kernel_sizes: Convolution windows.
        dropout: Dropout before the heads.
        max_length: Tokens kept per report.
        min_word_count: Rarer words map to ``[UNK]``.
    """

    embedding_dim: int = field(default=64, metadata={"help": "Word embedding size."})
    num_filters: int = field(default=64, metadata={"help": "Filters per window."})
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 4, 5], metadata={"help": "Convolution windows."})
    dropout: float = field(default=0.5, metadata={"help": "Dropout before the heads."})
    max_length: int = field(default=512, metadata={"help": "Tokens kept per report."})
    min_word_count: int = field(default=2, metadata={"help": "Rarer words map to [UNK]."})


def make_parser() -> RecipeParser:
    """The recipe's parser: ``ScriptArguments``, ``DistillationConfig``, ``ModelArguments`` (``--config x.yaml``)."""
    return RecipeParser((ScriptArguments, DistillationConfig, ModelArguments))


def load_source(spec: str) -> tuple[Any, str]:
    """Reports for :func:`prepare_data` and their description: a path, or ``synthetic:n=..,seed=..``."""
    if not spec.startswith("synthetic"):
        if not Path(spec).exists():
            raise FileNotFoundError(f"Reports file {spec} not found: pass --data FILE or --data synthetic:n=2000.")
        return spec, f"pathology reports from `{Path(spec).name}`"
    from reportkd.synthetic import generate_reports

    options = {"n": 2000, "seed": 0}
    for item in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = item.partition("=")
        if key not in options:
            raise ValueError(f"Unknown synthetic option {key!r} in {spec!r}; use n and seed.")
        options[key] = int(value)
    return generate_reports(options["n"], seed=options["seed"]), (
        f"synthetic TCGA-style pathology reports (`reportkd.synthetic`, n={options['n']}, seed={options['seed']})"
    )


def settings_from(script_args: ScriptArguments, args: DistillationConfig, model_args: ModelArguments):
    """The pipeline settings of the teacher ensemble (same budget as the student)."""
    return EnsembleDistillationSettings(
        tasks=tuple(script_args.tasks), text_column=script_args.text_column, members=script_args.members,
        folds=script_args.folds, member_sampling=script_args.member_sampling, bag_fraction=script_args.bag_fraction,
        epochs=max(1, math.ceil(args.num_train_epochs)), teacher_epochs=script_args.teacher_epochs,
        split_seed=script_args.split_seed,
        batch_size=args.per_device_train_batch_size, learning_rate=args.learning_rate,
        embedding_dim=model_args.embedding_dim, num_filters=model_args.num_filters,
        kernel_sizes=tuple(model_args.kernel_sizes), dropout=model_args.dropout, max_length=model_args.max_length,
        min_word_count=model_args.min_word_count, min_class_count=script_args.min_class_count,
        unknown_as_missing=script_args.unknown_as_missing, alpha=args.alpha, temperature=args.temperature,
        target_accuracy=script_args.target_accuracy, split=tuple(script_args.split), seed=args.seed,
        min_words=script_args.min_words,
    )  # fmt: skip


def train_mtcnn(prepared, settings, args: DistillationConfig, output_dir: Path, soft_labels=None):
    """One MtCNN through ``DistillationTrainer``: distilled on ``soft_labels``, or the hard-label baseline."""
    torch.manual_seed(settings.seed + 7)
    model = MtCNNForReportClassification(model_config(prepared, settings))
    train = attach_teacher_outputs(prepared.train, soft_labels) if soft_labels is not None else prepared.train
    args = dataclasses.replace(args, output_dir=str(output_dir), push_to_hub=False, teacher_outputs_type="probs")
    collator = ReportCollator(pad_token_id=prepared.tokenizer.pad_token_id, min_length=max(settings.kernel_sizes))
    trainer = DistillationTrainer(model=model, args=args, train_dataset=train, data_collator=collator)
    trainer.train()
    return trainer.accelerator.unwrap_model(trainer.model).eval(), trainer


def main(script_args: ScriptArguments, args: DistillationConfig, model_args: ModelArguments) -> dict[str, Any]:
    """Runs the recipe; returns the results (also ``<output_dir>/results.json``)."""
    if args.use_cpu:  # the TrainingArguments the pipeline builds (teacher ensemble) follow this run's device choice
        os.environ["ACCELERATE_USE_CPU"] = "true"
    _ = args.device  # sets up the (multi-process) state from these arguments
    state = PartialState()
    out = Path(args.output_dir)
    settings = settings_from(script_args, args, model_args)
    source, described = load_source(script_args.data)
    prepared = prepare_data(source, settings)
    _, soft = train_teacher_ensemble(prepared, settings, out / "work")
    student, trainer = train_mtcnn(prepared, settings, args, out / "work" / "student", soft_labels=soft)
    models = {"student": student}
    if script_args.train_baseline:
        models["baseline"], _ = train_mtcnn(prepared, settings, args, out / "work" / "baseline")
    if script_args.train_dac:
        targets = json.loads(script_args.dac_targets) if script_args.dac_targets else None
        models["dac"] = train_dac(prepared, settings, out / "work" / "dac", task_targets=targets)
    results: dict[str, Any] = {"data": {"source": described, "train": len(prepared.train),
                                        "calibration": len(prepared.calibration), "test": len(prepared.test)},
                               "models": {}}  # fmt: skip
    if state.is_main_process:
        meta = {"members": settings.members, "folds": settings.folds, "temperature": settings.temperature}
        save_soft_labels(out / "soft_labels.safetensors", prepared.train["id"], soft, prepared.task_labels, meta)
        cal_y = labels_by_task(prepared.calibration, prepared.task_labels)
        test_y = labels_by_task(prepared.test, prepared.task_labels)
        pad, method = prepared.tokenizer.pad_token_id, script_args.threshold_method
        for name, model in models.items():
            report, calibrations = abstention_report(
                predict_probs(model, prepared.calibration, pad_token_id=pad),
                predict_probs(model, prepared.test, pad_token_id=pad), cal_y, test_y, settings.target_accuracy,
                delta=script_args.delta,
            )  # fmt: skip
            test = {t: (r["ltt"]["test"] if method == "ltt" else r["test"]) for t, r in report.items()}
            results["models"][name] = test
            save_dir = save_classifier(model, prepared.tokenizer, out / name, calibrations[method])
            write_json(save_dir / "eval_results.json", {"split": f"test, {len(prepared.test)} reports",
                                                        "threshold_method": method, "tasks": test})  # fmt: skip
            card_info(name, script_args, settings, trainer, described, prepared).save(save_dir)
        write_json(out / "results.json", results)
        print(format_results(results, settings.target_accuracy))
        if args.push_to_hub:
            pushed = push_to_hub(
                out / "student", args.hub_model_id or f"{out.name}-student", token=args.hub_token,
                private=args.hub_private_repo is not False, local_hub=args.hub_local_dir, revision=args.hub_revision,
            )  # fmt: skip
            results["pushed"] = pushed.location
    state.wait_for_everyone()
    return results


def card_info(name: str, script_args, settings, trainer, described: str, prepared) -> DistillationInfo:
    """Provenance of the saved student / baseline for its model card (``distillation.json``)."""
    hp = trainer.distillation_info().hyperparameters
    teachers = []
    if name == "student":
        if settings.member_sampling == "bagging":
            how = f"bagged on {settings.bag_fraction:.0%} of the reports each, out-of-bag soft labels"
        elif settings.folds > 1:
            how = f"{settings.folds}-fold out-of-fold soft labels"
        else:
            how = "soft labels averaged over all members"
        teachers = [f"ensemble of {settings.members} MtCNNs ({how})"]
        hp = {"members": settings.members, "member_sampling": settings.member_sampling, "folds": settings.folds,
              "teacher_epochs": settings.teacher_epochs or settings.epochs, **hp}  # fmt: skip
    else:
        hp = {k: v for k, v in hp.items() if k not in ("alpha", "temperature", "teacher_outputs_type")}
    method = {"student": "ensemble_distillation", "dac": "deep_abstaining_classifier"}.get(name, "hard_label")
    return DistillationInfo(
        method=method, teachers=teachers,
        training_data=script_args.training_data or described, hyperparameters=hp,
        eval_data=f"{len(prepared.calibration)} calibration and {len(prepared.test)} test reports held out",
        command="python recipes/mtcnn_distill.py " + " ".join(sys.argv[1:]),
    )  # fmt: skip


def format_results(results: dict[str, Any], target: float) -> str:
    """Markdown table: per task, test accuracy and coverage at the target accuracy, per model."""
    models = results["models"]
    head = "| task | " + " | ".join(f"accuracy {m} | coverage@{target:.0%} {m}" for m in models) + " |"
    lines = [head, "|---|" + "---|---|" * len(models)]
    for task in models["student"]:
        cells = [f"{models[m][task]['accuracy']:.3f} | {models[m][task]['coverage']:.3f}" for m in models]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in main(*make_parser().parse_args_and_config()).items() if k != "models"}))
