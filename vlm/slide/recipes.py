"""Recipes: align a slide encoder with reports (``slide_align``), distil it into a student (``slide_distill``).

Run them with ``reportkd train slide_align|slide_distill --config x.yaml`` or ``python recipes/slide_align.py`` /
``python recipes/slide_distill.py`` (commands in those scripts' docstrings). YAML keys are the field names of the
recipe's ``ScriptArguments`` and its trainer config (plus ``env:``); flags override them.

``slide_align``: training pairs are slides (``features``: a folder of ``reportkd extract`` features files, or
``synthetic:...``) and their reports (``labels``: CSV / JSONL ``slide_id,label,split,report``; rows of
``train_split`` are used). Crops of ``crop_size`` x ``crop_size`` grid cells are TITAN's region crops. The
slide-report model is saved under ``<output_dir>/model``.

``slide_distill``: the teacher is a saved ``SlideEncoderModel`` or ``SlideReportModel`` folder
(``teacher_model_name_or_path``), or, for the offline demo, aligned with reports on the fine grid first
(``teacher_train_steps > 0``; reused when resuming). XMAG: the student reads ``features`` (the coarse grid) and the
teacher ``teacher_features`` (the fine grid, same slide ids). The student is saved under ``<output_dir>/student``.

Both honour ``--resume_from_checkpoint`` (a ``checkpoint-N`` folder of ``output_dir`` or ``last``) and refuse a
non-empty ``output_dir`` unless ``--overwrite_output_dir`` or resuming.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed

from reportkd.hub import DistillationInfo, push_to_hub, write_card
from reportkd.recipes import RecipeArguments, RecipeParser, prepare_output_dir, recipe_command
from reportkd.utils import write_json

from .alignment import SlideReportModel, load_slide_model, load_text_encoder
from .configuration_slide import SlideEncoderConfig
from .data import SlideCollator, load_slide_dataset
from .evaluation import evaluate_slide_model
from .modeling_slide import SlideEncoderModel
from .trainer import SlideAlignmentConfig, SlideAlignmentTrainer, SlideDistillationConfig, SlideDistillationTrainer

ARCH_FIELDS = ("input_dim", "hidden_size", "num_hidden_layers", "num_attention_heads", "pooling")


@dataclass
class SlideModelArguments(RecipeArguments):
    """Slide-encoder architecture (ignored when ``slide_encoder`` loads a saved one).

    Args:
        slide_encoder: Saved ``SlideEncoderModel`` folder to start from (None: a new one from the fields below).
        input_dim: Patch-feature width (None: read from the data).
        hidden_size: Transformer width.
        num_hidden_layers: Transformer blocks.
        num_attention_heads: Heads (one ALiBi slope each).
        pooling: ``"cls"`` or ``"mean"``.
        hidden_dropout_prob: Dropout.
    """

    slide_encoder: str | None = field(default=None, metadata={"help": "Saved SlideEncoderModel folder to start from."})
    input_dim: int | None = field(default=None, metadata={"help": "Patch-feature width (default: from the data)."})
    hidden_size: int = field(default=64, metadata={"help": "Transformer width."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads (one ALiBi slope each)."})
    pooling: str = field(default="cls", metadata={"help": "'cls' or 'mean' slide embedding."})
    hidden_dropout_prob: float = field(default=0.0, metadata={"help": "Dropout."})

    def build(self, input_dim: int, **overrides) -> SlideEncoderModel:
        """The saved slide encoder, or a new one (``overrides`` replace the architecture fields)."""
        if self.slide_encoder:
            from transformers import AutoModel

            return AutoModel.from_pretrained(self.slide_encoder, use_safetensors=True)
        arch = {k: getattr(self, k) for k in ARCH_FIELDS[1:]} | {"input_dim": self.input_dim or input_dim}
        arch.update(overrides)
        return SlideEncoderModel(SlideEncoderConfig(**arch, hidden_dropout_prob=self.hidden_dropout_prob))


@dataclass
class AlignArguments(SlideModelArguments):
    """Data, text encoder and evaluation of the alignment recipe.

    Args:
        features: ``synthetic[:n=..,seed=..]`` or a folder of features files.
        labels: Labels file with reports (folder sources).
        train_split: Split of the labels file to train on.
        eval_features: Evaluation source (synthetic spec or folder; None skips evaluation).
        eval_labels: Labels file of a folder evaluation source (default: ``labels``).
        eval_probes: Probes of the final evaluation.
        text_encoder: ``hf:PATH_OR_ID`` or ``open_clip:NAME_OR_DIR``.
        text_pooling: ``"mean"`` or ``"cls"`` (hf text models).
        embed_dim: Width of the shared slide-report space.
        crop_size: Training crop side in grid cells (None: whole slides).
        max_patches: Random patches kept per training crop (None: all).
    """

    features: str = field(default="synthetic:n=400,seed=0", metadata={"help": "Training slides."})
    labels: str | None = field(default=None, metadata={"help": "Labels file with reports (folder sources)."})
    train_split: str | None = field(default="train", metadata={"help": "Split of the labels file to train on."})
    eval_features: str | None = field(default="synthetic:n=200,seed=1000", metadata={"help": "Evaluation slides."})
    eval_labels: str | None = field(default=None, metadata={"help": "Labels of a folder eval source."})
    eval_probes: list[str] = field(
        default_factory=lambda: ["linear", "knn", "retrieval"], metadata={"help": "Probes of the final evaluation."}
    )
    text_encoder: str = field(default="open_clip:reportkd-clip-tiny-student", metadata={"help": "Text encoder."})
    text_pooling: str = field(default="mean", metadata={"help": "'mean' or 'cls' pooling of hf text models."})
    embed_dim: int = field(default=64, metadata={"help": "Shared slide-report space width."})
    crop_size: int | None = field(default=8, metadata={"help": "Training crop side (grid cells)."})
    max_patches: int | None = field(default=None, metadata={"help": "Random patches per training crop."})


@dataclass
class DistillArguments(SlideModelArguments):
    """Data, teacher and evaluation of the distillation recipe (the inherited fields describe the student).

    Args:
        features: Student inputs: ``synthetic[:opts]`` or a features folder (the coarse grid for XMAG).
        teacher_features: Teacher inputs at another magnification (folder, same slide ids); None: the student's.
        labels: Labels file (folder sources; reports needed for slide-report KD).
        train_split: Split of the labels file to train on.
        xmag: Synthetic only: student on the coarse grid, teacher on the fine grid.
        eval_features: Evaluation source in the student's magnification (None skips evaluation).
        eval_teacher_features: Evaluation source of the teacher (default: ``eval_features``, fine grid if synthetic).
        eval_labels: Labels of a folder evaluation source (default: ``labels``).
        eval_probes: Probes of the final evaluation.
        teacher_train_steps: > 0: first align a new teacher with reports on the fine grid for this many steps.
        teacher_learning_rate: Learning rate of that teacher training.
        teacher_hidden_size: Width of that teacher.
        teacher_num_hidden_layers: Its blocks.
        teacher_num_attention_heads: Its heads.
        teacher_text_encoder: Its text encoder spec.
        crop_size: Student crop side in grid cells (the teacher gets the same region; None: whole slides).
        max_patches: Random student patches per crop.
        save_aligned: Save a ``SlideReportModel`` when slide-report KD is on.
    """

    features: str = field(default="synthetic:n=400,seed=0", metadata={"help": "Student training slides."})
    teacher_features: str | None = field(default=None, metadata={"help": "Teacher-magnification features folder."})
    labels: str | None = field(default=None, metadata={"help": "Labels file (folder sources)."})
    train_split: str | None = field(default="train", metadata={"help": "Split of the labels file to train on."})
    xmag: bool = field(default=False, metadata={"help": "Synthetic: coarse-grid student, fine-grid teacher."})
    eval_features: str | None = field(default="synthetic:n=200,seed=1000", metadata={"help": "Evaluation slides."})
    eval_teacher_features: str | None = field(default=None, metadata={"help": "Teacher's evaluation slides."})
    eval_labels: str | None = field(default=None, metadata={"help": "Labels of a folder eval source."})
    eval_probes: list[str] = field(
        default_factory=lambda: ["linear", "knn", "retrieval"], metadata={"help": "Probes of the final evaluation."}
    )
    teacher_train_steps: int = field(default=0, metadata={"help": "Align a new teacher first (offline demo)."})
    teacher_learning_rate: float = field(default=1e-3, metadata={"help": "Teacher alignment learning rate."})
    teacher_hidden_size: int = field(default=96, metadata={"help": "Width of a newly trained teacher."})
    teacher_num_hidden_layers: int = field(default=3, metadata={"help": "Blocks of a newly trained teacher."})
    teacher_num_attention_heads: int = field(default=4, metadata={"help": "Heads of a newly trained teacher."})
    teacher_text_encoder: str = field(
        default="open_clip:reportkd-clip-tiny-student", metadata={"help": "Text encoder of a newly trained teacher."}
    )
    crop_size: int | None = field(default=6, metadata={"help": "Student crop side (grid cells)."})
    max_patches: int | None = field(default=None, metadata={"help": "Random student patches per crop."})
    save_aligned: bool = field(default=True, metadata={"help": "Save a SlideReportModel with slide-report KD."})


def make_align_parser() -> RecipeParser:
    """``AlignArguments`` and ``SlideAlignmentConfig`` (``--config x.yaml``, flags win)."""
    return RecipeParser((AlignArguments, SlideAlignmentConfig))


def make_distill_parser() -> RecipeParser:
    """``DistillArguments`` and ``SlideDistillationConfig`` (``--config x.yaml``, flags win)."""
    return RecipeParser((DistillArguments, SlideDistillationConfig))


def text_options(spec: str, pooling: str) -> dict:
    """Backend options of a text-encoder spec (pooling applies to hf text models only)."""
    return {} if spec.startswith("open_clip:") else {"pooling": pooling}


def push(trainer, folder: Path, repo_id: str, message: str) -> str | None:
    """Pushes a saved slide model (main process only); the slide-encoder kind brings its ``text_encoder/``."""
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    pushed = push_to_hub(
        folder, repo_id, private=args.hub_private_repo is not False, token=args.hub_token,
        local_hub=getattr(args, "hub_local_dir", None), commit_message=message, revision=args.hub_revision,
    )  # fmt: skip
    return pushed.location


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "meta"}


# -- slide_align -----------------------------------------------------------------------------------------------------
def run_align(script_args: AlignArguments, args: SlideAlignmentConfig, command: str | None = None) -> dict:
    """Aligns a slide encoder with reports, evaluates it and saves the slide-report model with its card.

    Args:
        script_args: Data, architecture, text encoder, evaluation.
        args: The training arguments (``resume_from_checkpoint`` resumes the training).
        command: The command line the model card records.
    """
    resume = prepare_output_dir(args.output_dir, args.resume_from_checkpoint,
                                overwrite=script_args.overwrite_output_dir)  # fmt: skip
    train = load_slide_dataset(script_args.features, labels=script_args.labels, split=script_args.train_split)
    set_seed(args.seed)  # the same initialisation however many processes run
    text = load_text_encoder(
        script_args.text_encoder, **text_options(script_args.text_encoder, script_args.text_pooling)
    )
    model = SlideReportModel(script_args.build(int(train[0]["features"].shape[-1])), text,
                             embed_dim=script_args.embed_dim)  # fmt: skip
    collator = SlideCollator(tokenize=model.tokenize, crop_size=script_args.crop_size,
                             max_patches=script_args.max_patches)  # fmt: skip
    trainer = SlideAlignmentTrainer(model=model, args=dataclasses.replace(args, push_to_hub=False),
                                    train_dataset=train, data_collator=collator)  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    save_dir = Path(args.output_dir) / "model"
    repo_id = args.hub_model_id or f"ORG/{Path(args.output_dir).name}"
    result: dict = {"save_dir": str(save_dir), "metrics": {}}
    if trainer.save_aligned(save_dir):
        plain = trainer.accelerator.unwrap_model(trainer.model)
        if script_args.eval_features:
            result["metrics"] = evaluate_slide_model(
                plain, script_args.eval_features, labels=script_args.eval_labels or script_args.labels,
                probes=script_args.eval_probes, device=trainer.args.device,
            )  # fmt: skip
        write_json(save_dir / "eval_results.json", result["metrics"])
        config = plain.slide_encoder.config
        DistillationInfo.from_run(
            "slide_alignment", training_data=script_args.features, eval_data=script_args.eval_features,
            hyperparameters={**{k: getattr(config, k) for k in ARCH_FIELDS}, "text encoder": script_args.text_encoder,
                             "crop_size": script_args.crop_size, "embed_dim": script_args.embed_dim},
            losses={"clip_contrastive": 1.0}, command=command or recipe_command("slide_align", None),
        ).save(save_dir)  # fmt: skip
        write_card(save_dir, repo_id)
    if args.push_to_hub:  # main process only; a local hub folder with hub_local_dir
        result["pushed"] = push(trainer, save_dir, repo_id, "Upload slide-report model")
    return result


def align_main(argv: list[str] | None = None) -> dict:
    """Recipe: align a TITAN-style slide encoder (2D-ALiBi ViT over patch features) with pathology reports.

    Parses ``argv`` (default ``sys.argv[1:]``), runs :func:`run_align`, prints its summary.

    Args:
        argv: Command-line arguments (``--config x.yaml`` and flags).
    """
    result = run_align(*make_align_parser().parse_args_and_config(argv), command=recipe_command("slide_align", argv))
    print(json.dumps({**result, "metrics": _summary(result["metrics"])}, indent=2, default=str))
    return result


# -- slide_distill ---------------------------------------------------------------------------------------------------
def _grids(script_args: DistillArguments) -> tuple[str, str | None]:
    return ("coarse", "fine") if script_args.xmag else ("fine", None)


def train_teacher(script_args: DistillArguments, args: SlideDistillationConfig, command: str) -> str:
    """Aligns a new teacher with reports on the fine grid and returns its saved folder."""
    data = load_slide_dataset(script_args.teacher_features or script_args.features, labels=script_args.labels,
                              split=script_args.train_split, grid="fine")  # fmt: skip
    set_seed(args.seed)  # the same initialisation however many processes run
    encoder = dataclasses.replace(script_args, slide_encoder=None).build(
        int(data[0]["features"].shape[-1]), hidden_size=script_args.teacher_hidden_size,
        num_hidden_layers=script_args.teacher_num_hidden_layers,
        num_attention_heads=script_args.teacher_num_attention_heads,
    )  # fmt: skip
    spec = script_args.teacher_text_encoder
    model = SlideReportModel(encoder, load_text_encoder(spec, **text_options(spec, "mean")))
    out = Path(args.output_dir) / "teacher" / "model"
    accepted = {f.name for f in dataclasses.fields(SlideAlignmentConfig) if f.init}
    values = {k: getattr(args, k) for k in accepted & set(args.to_dict())}  # the shared TrainingArguments
    values.update(output_dir=str(out.parent), max_steps=script_args.teacher_train_steps,
                  learning_rate=script_args.teacher_learning_rate, teacher_model_name_or_path=None, push_to_hub=False,
                  resume_from_checkpoint=None)  # fmt: skip
    teacher_args = SlideAlignmentConfig(**{k: v for k, v in values.items() if k in accepted})
    factor = 2 if script_args.xmag else 1  # the synthetic fine grid has 2x the cells of the coarse one per side
    crop = script_args.crop_size * factor if script_args.crop_size else None
    trainer = SlideAlignmentTrainer(model=model, args=teacher_args, train_dataset=data,
                                    data_collator=SlideCollator(tokenize=model.tokenize, crop_size=crop))  # fmt: skip
    trainer.train()
    if trainer.save_aligned(out):
        config = model.slide_encoder.config
        DistillationInfo.from_run(
            "slide_alignment", training_data=script_args.teacher_features or script_args.features,
            hyperparameters={**{k: getattr(config, k) for k in ARCH_FIELDS}, "text encoder": spec},
            losses={"clip_contrastive": 1.0}, command=command,
        ).save(out)  # fmt: skip
        write_card(out, "ORG/teacher")
    trainer.accelerator.wait_for_everyone()  # the other processes load what the main process saved
    return str(out)


def run_distill(script_args: DistillArguments, args: SlideDistillationConfig, command: str | None = None) -> dict:
    """(Optionally aligns a teacher, then) distils it into the student, evaluates both and saves the student.

    Args:
        script_args: Data, teacher, student architecture, evaluation.
        args: The training arguments (``resume_from_checkpoint`` resumes the student's training).
        command: The command line the model cards record.
    """
    command = command or recipe_command("slide_distill", None)
    resume = prepare_output_dir(args.output_dir, args.resume_from_checkpoint,
                                overwrite=script_args.overwrite_output_dir)  # fmt: skip
    if script_args.teacher_train_steps > 0:
        saved = Path(args.output_dir) / "teacher" / "model"
        if resume and (saved / "config.json").is_file():
            args.teacher_model_name_or_path = str(saved)  # aligned by the run being resumed
        else:
            args.teacher_model_name_or_path = train_teacher(script_args, args, command)
    if not args.teacher_model_name_or_path:
        raise ValueError("Set teacher_model_name_or_path to a saved slide encoder / slide-report model, or "
                         "teacher_train_steps > 0 to train one first (synthetic demo).")  # fmt: skip
    teacher = load_slide_model(args.teacher_model_name_or_path)
    grid, teacher_grid = _grids(script_args)
    train = load_slide_dataset(script_args.features, labels=script_args.labels, split=script_args.train_split,
                               teacher_features=script_args.teacher_features, grid=grid,
                               teacher_grid=teacher_grid)  # fmt: skip
    set_seed(args.seed + 1)
    student = script_args.build(int(train[0]["features"].shape[-1]))
    collator = SlideCollator(tokenize=teacher.tokenize if args.uses_reports() else None,
                             crop_size=script_args.crop_size, max_patches=script_args.max_patches)  # fmt: skip
    trainer = SlideDistillationTrainer(model=student, teacher_model=teacher, train_dataset=train,
                                       args=dataclasses.replace(args, push_to_hub=False),
                                       data_collator=collator)  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)

    aligned = script_args.save_aligned and args.uses_reports()
    save_dir = Path(args.output_dir) / "student"
    repo_id = args.hub_model_id or f"ORG/{Path(args.output_dir).name}-student"
    result: dict = {"save_dir": str(save_dir), "teacher": args.teacher_model_name_or_path, "metrics": {}}
    if trainer.save_student(save_dir, aligned=aligned):
        labels = script_args.eval_labels or script_args.labels
        if script_args.eval_features:  # the saved student, loaded as users load it; the teacher on its own grid
            result["metrics"]["student"] = evaluate_slide_model(
                load_slide_model(save_dir), script_args.eval_features, labels=labels, grid=grid,
                probes=script_args.eval_probes,
            )  # fmt: skip
            result["metrics"]["teacher"] = evaluate_slide_model(
                teacher, script_args.eval_teacher_features or script_args.eval_features, labels=labels, grid="fine",
                probes=script_args.eval_probes,
            )  # fmt: skip
        write_json(save_dir / "eval_results.json", result["metrics"].get("student", {}))
        write_json(save_dir / "teacher_eval_results.json", result["metrics"].get("teacher", {}))
        xmag = script_args.xmag or script_args.teacher_features is not None
        DistillationInfo.from_run(
            "xmag" if xmag else "slide_distillation", teachers=[args.teacher_model_name_or_path],
            training_data=script_args.features, eval_data=script_args.eval_features,
            hyperparameters={**{f"student {k}": getattr(student.config, k) for k in ARCH_FIELDS},
                             **({"text encoder": "the teacher's"} if aligned else {}),
                             "temperature": args.temperature, "crop_size": script_args.crop_size},
            losses={f"feature_kd ({args.feature_kind})": args.feature_weight,
                    f"similarity_kd ({args.similarity_kind})": args.similarity_weight,
                    f"token_kd ({args.token_kind})": args.token_weight}, command=command,
        ).save(save_dir)  # fmt: skip
        write_card(save_dir, repo_id)
    if args.push_to_hub:  # main process only; a local hub folder with hub_local_dir
        result["pushed"] = push(trainer, save_dir, repo_id, "Upload slide-encoder student")
    return result


def distill_main(argv: list[str] | None = None) -> dict:
    """Recipe: distil a teacher slide encoder into a smaller student, optionally across magnifications (XMAG).

    Parses ``argv`` (default ``sys.argv[1:]``), runs :func:`run_distill`, prints its summary.

    Args:
        argv: Command-line arguments (``--config x.yaml`` and flags).
    """
    parsed = make_distill_parser().parse_args_and_config(argv)
    result = run_distill(*parsed, command=recipe_command("slide_distill", argv))
    summary = {w: _summary(m) for w, m in result["metrics"].items()}
    print(json.dumps({**result, "metrics": summary}, indent=2, default=str))
    return result
