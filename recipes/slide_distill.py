"""Recipe: distil a teacher slide encoder into a smaller student, optionally across magnifications (XMAG).

    # CPU, seconds: tiny teacher aligned first, then an XMAG student on the coarse grid (tests run it)
    python recipes/slide_distill.py --config recipes/configs/slide_distill_quick.yaml
    # offline demo, ~2 minutes on CPU: 400 synthetic slides, teacher on the fine grid, student on 4x fewer patches
    python recipes/slide_distill.py --config recipes/configs/slide_distill_synthetic.yaml
    python recipes/slide_distill.py --config recipes/configs/slide_distill_synthetic.yaml --xmag false  # same grid
    # several GPUs: a saved teacher (e.g. recipes/slide_align.py output) at 20x, the student on 5x features
    accelerate launch --multi_gpu --num_processes 4 recipes/slide_distill.py \
        --config recipes/configs/slide_distill_synthetic.yaml --teacher_train_steps 0 \
        --teacher_model_name_or_path runs/slide_align/model --features /data/features_5x \
        --teacher_features /data/features_20x --labels /data/labels.csv --eval_features /data/features_5x \
        --eval_teacher_features /data/features_20x --hidden_size 384 --num_hidden_layers 4 --num_attention_heads 6 \
        --output_dir runs/slide_xmag
    # push the student (private) or write it to a local hub folder
    python recipes/slide_distill.py --config recipes/configs/slide_distill_quick.yaml \
        --push_to_hub --hub_model_id org/slide-student --hub_local_dir /models/hub

The teacher is a saved ``SlideEncoderModel`` or ``SlideReportModel`` folder (``teacher_model_name_or_path``), or,
for the offline demo, aligned with reports on the fine grid first (``teacher_train_steps > 0``). XMAG: the student
reads ``features`` (the coarse grid, e.g. 5x) and the teacher ``teacher_features`` (the fine grid, e.g. 20x, same
slide ids, same level-0 coordinates); with synthetic data ``xmag: true`` pairs each slide's coarse and fine grids.
The student is saved under ``<output_dir>/student`` with ``eval_results.json`` (student and teacher),
``distillation.json`` and a model card: a ``SlideReportModel`` (student encoder + the teacher's text encoder) when
slide-report similarity KD trained its projection, else a plain ``SlideEncoderModel``.
YAML keys are the field names of :class:`ScriptArguments` and ``SlideDistillationConfig`` (plus ``env:``); flags
override them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":
    from _env import apply_env

    apply_env(sys.argv[1:])  # the config's env: block, before torch / transformers read the environment
from _parser import RecipeParser  # noqa: E402
from reportkd.vlm.slide.alignment import SlideReportModel, load_slide_model, load_text_encoder  # noqa: E402
from reportkd.vlm.slide.data import SlideCollator, load_slide_dataset  # noqa: E402
from reportkd.vlm.slide.evaluation import evaluate_slide_model  # noqa: E402
from reportkd.vlm.slide.model_card import distillation_info, write_eval_results  # noqa: E402
from reportkd.vlm.slide.trainer import (  # noqa: E402
    SlideAlignmentConfig,
    SlideAlignmentTrainer,
    SlideDistillationConfig,
    SlideDistillationTrainer,
)
from slide_align import ARCH_FIELDS, SlideModelArguments, push, text_options  # noqa: E402
from transformers import set_seed  # noqa: E402

from reportkd.hub import write_card  # noqa: E402


@dataclass
class ScriptArguments(SlideModelArguments):
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


def make_parser() -> RecipeParser:
    """``ScriptArguments`` and ``SlideDistillationConfig`` (``--config x.yaml``, flags win)."""
    return RecipeParser((ScriptArguments, SlideDistillationConfig))


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, SlideDistillationConfig]:
    """Parses ``argv`` (default ``sys.argv[1:]``): YAML values from ``--config`` first, flags on top."""
    return make_parser().parse_args_and_config(argv)


def _grids(script_args: ScriptArguments) -> tuple[str, str | None]:
    return ("coarse", "fine") if script_args.xmag else ("fine", None)


def _command() -> str:
    return "python recipes/slide_distill.py " + " ".join(sys.argv[1:])


def train_teacher(script_args: ScriptArguments, args: SlideDistillationConfig) -> str:
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
    shared = {f.name for f in dataclasses.fields(SlideAlignmentConfig) if f.init} & set(args.to_dict())
    teacher_args = SlideAlignmentConfig(**{
        **{k: getattr(args, k) for k in shared}, "output_dir": str(out.parent),
        "max_steps": script_args.teacher_train_steps, "learning_rate": script_args.teacher_learning_rate,
        "teacher_model_name_or_path": None, "loss": "clip_contrastive", "temperature": 1.0, "push_to_hub": False,
    })  # fmt: skip
    factor = 2 if script_args.xmag else 1  # the synthetic fine grid has 2x the cells of the coarse one per side
    crop = script_args.crop_size * factor if script_args.crop_size else None
    trainer = SlideAlignmentTrainer(model=model, args=teacher_args, train_dataset=data,
                                    data_collator=SlideCollator(tokenize=model.tokenize, crop_size=crop))  # fmt: skip
    trainer.train()
    if trainer.save_aligned(out):
        config = model.slide_encoder.config
        distillation_info(
            method="slide_alignment", architecture={k: getattr(config, k) for k in ARCH_FIELDS},
            dataset=script_args.teacher_features or script_args.features, text_encoder=spec,
            losses={"clip_contrastive": 1.0}, command=_command(),
        ).save(out)  # fmt: skip
        write_card(out, "ORG/teacher")
    trainer.accelerator.wait_for_everyone()  # the other processes load what the main process saved
    return str(out)


def main(script_args: ScriptArguments, args: SlideDistillationConfig) -> dict:
    """(Optionally aligns a teacher, then) distils it into the student, evaluates both and saves the student."""
    if script_args.teacher_train_steps > 0:
        args.teacher_model_name_or_path = train_teacher(script_args, args)
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
    trainer.train()

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
        write_eval_results(save_dir, result["metrics"].get("student", {}))
        (save_dir / "teacher_eval_results.json").write_text(json.dumps(result["metrics"].get("teacher", {}), indent=2))
        xmag = script_args.xmag or script_args.teacher_features is not None
        distillation_info(
            method="xmag" if xmag else "slide_distillation", teacher=args.teacher_model_name_or_path,
            architecture={k: getattr(student.config, k) for k in ARCH_FIELDS}, dataset=script_args.features,
            text_encoder="the teacher's" if aligned else None, eval_data=script_args.eval_features,
            losses={f"feature_kd ({args.feature_kind})": args.feature_weight,
                    f"similarity_kd ({args.similarity_kind})": args.similarity_weight,
                    f"token_kd ({args.token_kind})": args.token_weight},
            extra={"temperature": args.temperature, "crop_size": script_args.crop_size}, command=_command(),
        ).save(save_dir)  # fmt: skip
        write_card(save_dir, repo_id)
    if args.push_to_hub:  # main process only; a local hub folder with hub_local_dir
        result["pushed"] = push(trainer, save_dir, repo_id, "Upload slide-encoder student")
    return result


if __name__ == "__main__":
    result = main(*parse_args())
    summary = {w: {k: v for k, v in m.items() if k != "meta"} for w, m in result["metrics"].items()}
    print(json.dumps({**result, "metrics": summary}, indent=2, default=str))
