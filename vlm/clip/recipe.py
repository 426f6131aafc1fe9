"""Recipe: distil an open_clip teacher (e.g. QuiltNet) into a small open_clip student.

Run it with ``reportkd train clip_distill --config x.yaml`` or ``python recipes/clip_distill.py --config x.yaml``
(commands in that script's docstring). YAML keys are the field names of :class:`ScriptArguments` and
:class:`reportkd.vlm.clip.trainer.CLIPDistillationConfig` (plus ``env:``); command-line flags override them. The
student is saved in open_clip's hub format under ``<output_dir>/student`` with ``eval_results.json``,
``distillation.json`` and a model card, and loads with
``open_clip.create_model_and_transforms("local-dir:<output_dir>/student")``. ``--resume_from_checkpoint`` (a
``checkpoint-N`` folder of ``output_dir`` or ``last``) continues the student's training; a teacher already trained
here (``<output_dir>/teacher/model``) is then reused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed

from reportkd.hub import DistillationInfo, write_card
from reportkd.recipes import RecipeArguments, RecipeParser, prepare_output_dir, recipe_command

from ..evaluation import evaluate_clip
from .data import CLIPCollator, load_image_text_dataset
from .models import load_open_clip
from .trainer import CLIPDistillationConfig, CLIPDistillationTrainer

NAME = "clip_distill"


@dataclass
class ScriptArguments(RecipeArguments):
    """What to distil, on which data.

    Args:
        student_model: Student open_clip name / config / saved directory.
        student_pretrained: Student pretrained tag or ``.safetensors`` checkpoint.
        teacher_pretrained: Teacher pretrained tag or ``.safetensors`` checkpoint (the teacher itself is
            ``teacher_model_name_or_path``).
        teacher_train_steps: When > 0, first train the teacher architecture from scratch on the training data
            with the contrastive loss for this many steps (offline demo without downloaded weights).
        teacher_learning_rate: Learning rate of that teacher training.
        train_data: ``synthetic[:n=..,size=..,seed=..]``, an annotation CSV/JSONL or an imagefolder folder.
        eval_data: Held-out pairs for the final evaluation (None skips it).
        image_column: Image / path column of annotation files.
        caption_column: Caption column.
        label_column: Optional class-label column (zero-shot and linear probe).
        class_names: Class names of the labels, in label order, for zero-shot evaluation of annotation files.
        lora_r: LoRA rank for a PEFT student (0: train all weights).
        lora_alpha: LoRA alpha.
        lora_target_modules: Module names LoRA wraps.
        train_augment: Use open_clip's random-resized-crop training transforms.
    """

    student_model: str = field(default="reportkd-clip-student", metadata={"help": "Student open_clip model."})
    student_pretrained: str | None = field(default=None, metadata={"help": "Student tag / .safetensors."})
    teacher_pretrained: str | None = field(default=None, metadata={"help": "Teacher tag / .safetensors."})
    teacher_train_steps: int = field(default=0, metadata={"help": "Train the teacher from scratch first (demo)."})
    teacher_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of teacher training."})
    train_data: str = field(default="synthetic:n=2000,size=64,seed=0", metadata={"help": "Training pairs."})
    eval_data: str | None = field(default="synthetic:n=600,size=64,seed=1000", metadata={"help": "Eval pairs."})
    image_column: str = field(default="image", metadata={"help": "Image column of annotation files."})
    caption_column: str = field(default="caption", metadata={"help": "Caption column."})
    label_column: str | None = field(default="label", metadata={"help": "Class-label column."})
    class_names: list[str] | None = field(default=None, metadata={"help": "Class names (label order), zero-shot."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0: full fine-tuning)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["c_fc", "c_proj", "out_proj"], metadata={"help": "Modules LoRA wraps."}
    )
    train_augment: bool = field(default=False, metadata={"help": "Random-resized-crop training transforms."})


def make_parser() -> RecipeParser:
    """The recipe's parser: ``ScriptArguments`` and ``CLIPDistillationConfig`` (``--config x.yaml``, flags win)."""
    return RecipeParser((ScriptArguments, CLIPDistillationConfig))


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, CLIPDistillationConfig]:
    """Parses ``argv`` (default ``sys.argv[1:]``): YAML values from ``--config`` first, flags on top."""
    return make_parser().parse_args_and_config(argv)


def _data(source: str, script_args: ScriptArguments):
    return load_image_text_dataset(
        source, image_column=script_args.image_column, caption_column=script_args.caption_column,
        label_column=script_args.label_column, classes=script_args.class_names,
    )  # fmt: skip


def train_teacher(script_args: ScriptArguments, args: CLIPDistillationConfig, train_dataset) -> str:
    """Trains the teacher architecture from scratch (contrastive loss) and returns its saved directory."""
    set_seed(args.seed)  # the same initialisation however many processes run
    teacher = load_open_clip(args.teacher_model_name_or_path, pretrained=script_args.teacher_pretrained)
    out = Path(args.output_dir) / "teacher"
    teacher_args = dataclasses.replace(
        args, output_dir=str(out), max_steps=script_args.teacher_train_steps,
        learning_rate=script_args.teacher_learning_rate, teacher_model_name_or_path=None, contrastive_weight=1.0,
        logit_kd_weight=0.0, fd_weight=0.0, icl_weight=0.0, relation_weight=0.0, layer_matches=None,
        mask_ratio_start=0.0, mask_ratio_end=0.0, push_to_hub=False, resume_from_checkpoint=None,
    )  # fmt: skip
    trainer = CLIPDistillationTrainer(
        model=teacher.model, args=teacher_args, train_dataset=train_dataset,
        data_collator=CLIPCollator.for_models(teacher, train=script_args.train_augment),
    )  # fmt: skip
    trainer.train()
    if trainer.save_student(str(out / "model"), model_cfg=teacher.model_cfg):
        DistillationInfo.from_run(
            "contrastive", training_data=script_args.train_data, losses={"clip_contrastive": 1.0},
            hyperparameters={"student architecture": teacher.name},
        ).save(out / "model")  # fmt: skip
        write_card(out / "model", "ORG/teacher")
    trainer.accelerator.wait_for_everyone()  # the other processes load what the main process saved
    return str(out / "model")


def run(script_args: ScriptArguments, args: CLIPDistillationConfig, command: str | None = None) -> dict:
    """Trains (optionally the teacher first, then) the student, evaluates it and saves it in open_clip's format.

    Args:
        script_args: Models and data.
        args: The training arguments (``resume_from_checkpoint`` resumes the student's training).
        command: The command line the model card records.
    """
    resume = prepare_output_dir(args.output_dir, args.resume_from_checkpoint,
                                overwrite=script_args.overwrite_output_dir)  # fmt: skip
    train_dataset = _data(script_args.train_data, script_args)
    teacher_name = args.teacher_model_name_or_path  # before a teacher trained here replaces it with its folder
    if script_args.teacher_train_steps > 0:
        if not args.teacher_model_name_or_path:
            raise ValueError(
                "teacher_train_steps > 0 trains teacher_model_name_or_path from scratch: set it to a config."
            )
        saved = Path(args.output_dir) / "teacher" / "model"
        if resume and (saved / "open_clip_config.json").is_file():
            args.teacher_model_name_or_path = str(saved)  # trained by the run being resumed
        else:
            args.teacher_model_name_or_path = train_teacher(script_args, args, train_dataset)
        teacher_pretrained = None
    else:
        teacher_pretrained = script_args.teacher_pretrained
    set_seed(args.seed + 1)  # the same initialisation however many processes run
    student = load_open_clip(script_args.student_model, pretrained=script_args.student_pretrained)
    teacher = load_open_clip(args.teacher_model_name_or_path, pretrained=teacher_pretrained) if (
        args.uses_teacher()) else None  # fmt: skip
    model = student.model
    if script_args.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=script_args.lora_r, lora_alpha=script_args.lora_alpha,
                                                 target_modules=script_args.lora_target_modules))  # fmt: skip
    trainer = CLIPDistillationTrainer(
        model=model, teacher_model=teacher.model if teacher else None, train_dataset=train_dataset,
        args=dataclasses.replace(args, push_to_hub=False),  # pushed once at the end, in open_clip's format
        data_collator=CLIPCollator.for_models(student, teacher, train=script_args.train_augment),
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)

    metrics = {}
    if script_args.eval_data and trainer.args.should_save:
        plain = trainer.accelerator.unwrap_model(trainer.model).student
        plain = plain.merge_and_unload() if hasattr(plain, "merge_and_unload") else plain
        metrics = evaluate_clip(plain, _data(script_args.eval_data, script_args), preprocess=student.preprocess_val,
                                tokenizer=student.tokenizer, device=trainer.args.device)  # fmt: skip
    weights = {f"clip_{k}": v for k, v in args.term_weights().items()}
    weights.update({f"{m['kind']}:{m['student']}<-{m['teacher']}": m["weight"] for m in args.layer_matches or []})
    extra = {"temperature": args.temperature, "contrastive_accumulation": args.contrastive_accumulation}
    if args.mask_ratio_start or args.mask_ratio_end:
        extra["attention-guided masking"] = f"{args.mask_ratio_start}->{args.mask_ratio_end} ({args.mask_mode})"
    if script_args.lora_r > 0:
        extra["LoRA (merged)"] = f"r={script_args.lora_r}, alpha={script_args.lora_alpha}"
    save_dir = Path(args.output_dir) / "student"
    repo_id = args.hub_model_id or f"ORG/{Path(args.output_dir).name}-student"
    if trainer.save_student(str(save_dir), model_cfg=student.model_cfg, tokenizer=student.tokenizer):
        # PEFT students are merged into plain open_clip weights; the card is rendered from the saved folder
        (save_dir / "eval_results.json").write_text(json.dumps(metrics, indent=2))
        if teacher and script_args.teacher_train_steps > 0:
            teacher_name = f"{teacher_name} (trained here from scratch, {script_args.teacher_train_steps} steps)"
        DistillationInfo.from_run(
            "clip_kd" if teacher else "contrastive", teachers=[teacher_name if teacher else None],
            training_data=script_args.train_data, losses=weights,
            hyperparameters={"student architecture": script_args.student_model, **extra},
            command=command or recipe_command(NAME, None),
        ).save(save_dir)  # fmt: skip
        write_card(save_dir, repo_id)
    result = {"save_dir": str(save_dir), "metrics": metrics}
    if args.push_to_hub:  # main process only; a local hub folder with hub_local_dir
        pushed = trainer.push_to_hub(folder=save_dir, repo_id=repo_id, commit_message="Upload open_clip student")
        result["pushed"] = pushed.location if pushed else None
    return result


def main(argv: list[str] | None = None) -> dict:
    """Parses ``argv`` (default ``sys.argv[1:]``), runs the recipe and prints its result as JSON.

    Args:
        argv: Command-line arguments (``--config x.yaml`` and flags).
    """
    result = run(*parse_args(argv), command=recipe_command(NAME, argv))
    print(json.dumps(result, indent=2))
    return result
