"""Recipe: distil pathology patch encoders into a small timm student (multi-expert GPFM, DINO/iBOT, HVisKD).

Run it with ``reportkd train patch_distill --config x.yaml`` or ``python recipes/patch_distill.py --config x.yaml``
(commands in that script's docstring). YAML keys are the field names of :class:`ScriptArguments` and
:class:`~reportkd.vlm.patch.PatchDistillationConfig` (plus ``env:``); flags override them.

Teachers are ``teachers: [...]`` (registry names such as ``uni_v1`` with ``--encoder-weights``-style offline
weights through ``$REPORTKD_ENCODER_WEIGHTS``, ``timm:NAME``, saved patch-encoder folders), and, for the offline
demo, experts trained first on synthetic tasks (``expert_tasks``, ``expert_train_steps > 0``; saved under
``<output_dir>/experts/<task>`` and reused when resuming). The student is saved under ``<output_dir>/student`` as a
``patch_encoder`` folder (``reportkd extract --encoder <output_dir>/student``) with ``eval_results.json``,
``teacher_eval_results.json``, ``distillation.json`` and a model card.
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

from .data import MultiCropCollator, load_tiles, precompute_teacher_features, save_teacher_features
from .evaluation import evaluate_patch_encoder
from .experts import train_expert
from .heads import load_teacher_spec
from .modeling import PatchEncoder
from .trainer import PatchDistillationConfig, PatchDistillationTrainer


@dataclass
class ScriptArguments(RecipeArguments):
    """Data, student, offline experts, augmentation and evaluation of the ``patch_distill`` recipe.

    Args:
        data: Unlabelled training tiles: ``synthetic:n=N,seed=S``, ``slides:PATH[,max=N]`` or an image folder.
        image_size: Tile side (the student's input size).
        student: A preset of ``STUDENT_PRESETS`` or a timm name.
        student_kwargs: timm keyword overrides (``embed_dim``, ``depth``…).
        expert_tasks: Offline demo: train one expert per synthetic task first (e.g. ``[tissue, size]``).
        expert_train_steps: Steps per offline expert (0: no offline experts).
        expert_arch: Preset / timm name of the offline experts.
        expert_kwargs: timm keyword overrides of the offline experts.
        expert_data: Labelled tiles the offline experts learn from.
        num_global: Global views per tile (2 for DINO / self-distillation).
        global_scale_min: Smallest area fraction of a global crop (1: whole tile).
        num_local: Local crops per tile (multi-crop).
        local_size: Side of local crops.
        hed_sigma: HED stain jitter range.
        mask_ratio: Masked patch fraction of global views (iBOT).
        clean_teacher_views: The experts see the global views without the stain jitter (the student sees the
            jittered ones): distillation for stain invariance. On by default: +0.10 stain top-1 over the same
            jitter on both sides in ``benchmarks/patch_distill.py`` (DINO/iBOT student, 3/3 seeds).
        eval_train: Labelled tiles the probes fit on ("" : no evaluation).
        eval_test: Labelled tiles the probes score.
        eval_tasks: Label names evaluated (synthetic tiles).
        stain_tiles: Tiles for the stain-robustness test (e.g. ``slides:../shared/data/wsi,max=64``; default
            ``eval_test``).
        mpp: Level-0 µm/px for slides that record none.
        teacher_features: A safetensors file ``{expert: (N, D)}`` of the experts' embeddings of the ``data`` tiles;
            written once from ``teachers`` when missing, then training keeps no expert in memory (embedding-level
            terms only: feature, sample relation, DINO).
    """

    data: str = field(default="synthetic:n=2000,seed=0", metadata={"help": "Unlabelled training tiles."})
    image_size: int = field(default=64, metadata={"help": "Tile side = the student's input size."})
    student: str = field(default="vit_tiny_64", metadata={"help": "Student preset or timm name."})
    student_kwargs: dict | None = field(default=None, metadata={"help": "timm keyword overrides of the student."})
    expert_tasks: list[str] = field(default_factory=list, metadata={"help": "Offline experts: synthetic tasks."})
    expert_train_steps: int = field(default=0, metadata={"help": "Steps per offline expert (0: none)."})
    expert_arch: str = field(default="vit_small_patch16_224", metadata={"help": "Offline experts' architecture."})
    expert_kwargs: dict | None = field(
        default_factory=lambda: {"img_size": 64, "patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4},
        metadata={"help": "timm keyword overrides of the offline experts."},
    )
    expert_data: str = field(default="synthetic:n=2000,seed=10", metadata={"help": "Offline experts' tiles."})
    num_global: int = field(default=1, metadata={"help": "Global views per tile (2 for DINO/self-distillation)."})
    global_scale_min: float = field(default=1.0, metadata={"help": "Smallest global crop area (1: whole tile)."})
    num_local: int = field(default=0, metadata={"help": "Local crops per tile."})
    local_size: int = field(default=32, metadata={"help": "Local crop side."})
    hed_sigma: float = field(default=0.05, metadata={"help": "HED stain jitter range (0: none)."})
    mask_ratio: float = field(default=0.0, metadata={"help": "Masked patch fraction (iBOT)."})
    clean_teacher_views: bool = field(
        default=True, metadata={"help": "Experts see the views without stain jitter (student: jittered)."}
    )
    eval_train: str = field(default="synthetic:n=400,seed=20", metadata={"help": "Probe fit tiles ('': none)."})
    eval_test: str = field(default="synthetic:n=200,seed=30", metadata={"help": "Probe test tiles."})
    eval_tasks: list[str] = field(default_factory=lambda: ["tissue"], metadata={"help": "Evaluated labels."})
    stain_tiles: str | None = field(default=None, metadata={"help": "Stain-robustness tiles (default eval_test)."})
    mpp: float | None = field(default=None, metadata={"help": "Level-0 µm/px of slides that record none."})
    teacher_features: str | None = field(
        default=None,
        metadata={"help": "Safetensors file of the experts' embeddings of `data` (computed once if missing); "
                          "training then keeps no expert in memory (embedding terms only)."},
    )  # fmt: skip


def make_parser() -> RecipeParser:
    """``ScriptArguments`` and ``PatchDistillationConfig`` (``--config x.yaml``, flags win)."""
    return RecipeParser((ScriptArguments, PatchDistillationConfig))


def _experts(script_args: ScriptArguments, args: PatchDistillationConfig, resume: str | None) -> list[str]:
    """Trains (or, resuming, reuses) the offline experts; returns their folders."""
    folders = []
    data = None
    for task in script_args.expert_tasks:
        out = Path(args.output_dir) / "experts" / task
        if not (resume and (out / "model.safetensors").is_file()):
            if data is None:
                data = load_tiles(script_args.expert_data, image_size=script_args.image_size,
                                  tasks=script_args.expert_tasks)  # fmt: skip
            set_seed(args.seed)
            size = script_args.image_size
            expert = PatchEncoder(script_args.expert_arch, script_args.expert_kwargs, image_size=size)
            train_expert(expert, data, task, steps=script_args.expert_train_steps, seed=args.seed,
                         batch_size=args.per_device_train_batch_size)  # fmt: skip
            if args.should_save:
                expert.save_pretrained(out)
        folders.append(str(out))
    return folders


def run_patch_distill(script_args: ScriptArguments, args: PatchDistillationConfig, command: str | None = None) -> dict:
    """(Optionally trains offline experts, then) distils the experts into the student, evaluates and saves it.

    Args:
        script_args: Data, student, offline experts, augmentation, evaluation.
        args: The trainer config (``resume_from_checkpoint`` resumes the student's training).
        command: The command line the model card records.
    """
    command = command or recipe_command("patch_distill", None)
    resume = prepare_output_dir(args.output_dir, args.resume_from_checkpoint,
                                overwrite=script_args.overwrite_output_dir)  # fmt: skip
    if script_args.expert_train_steps > 0 and script_args.expert_tasks:
        args.teachers = [*args.teachers, *_experts(script_args, args, resume)]
    if args.needs_teachers() and not args.teachers:
        raise ValueError("No teachers: set teachers: [uni_v1, ...] or, offline, expert_tasks and expert_train_steps.")
    names = {Path(t).name if Path(t).is_dir() else t: t for t in args.teachers}
    train = load_tiles(script_args.data, image_size=script_args.image_size, tasks=(), mpp=script_args.mpp)
    if script_args.teacher_features:
        path = Path(script_args.teacher_features)
        if not path.is_file():  # computed once, one expert in memory at a time; never overwritten
            save_teacher_features(precompute_teacher_features(names, train), path)
        train = train.with_teacher_features(path)
        teachers = {n: int(f.shape[1]) for n, f in train.teacher_features.items()}
    else:
        teachers = {n: load_teacher_spec(t, name=n) for n, t in names.items()}
    set_seed(args.seed + 1)
    student = PatchEncoder(script_args.student, script_args.student_kwargs, image_size=script_args.image_size)
    n_patches = len(student(student.normalize(train.pixels()[:1]))["tokens"][0])
    collator = MultiCropCollator(
        script_args.image_size, num_global=script_args.num_global, global_scale=(script_args.global_scale_min, 1.0),
        num_local=script_args.num_local, local_size=script_args.local_size, hed_sigma=script_args.hed_sigma,
        mask_ratio=script_args.mask_ratio, num_patches=n_patches, seed=args.seed,
        clean_teacher_views=script_args.clean_teacher_views,
    )  # fmt: skip
    trainer = PatchDistillationTrainer(student, teachers=teachers, args=dataclasses.replace(args, push_to_hub=False),
                                       train_dataset=train, data_collator=collator)  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)

    save_dir = Path(args.output_dir) / "student"
    repo_id = args.hub_model_id or f"ORG/{Path(args.output_dir).name}-student"
    result: dict = {"save_dir": str(save_dir), "teachers": list(teachers), "metrics": {}}
    if trainer.save_student(save_dir):
        if script_args.eval_train:
            ev_train = load_tiles(script_args.eval_train, image_size=script_args.image_size,
                                  tasks=script_args.eval_tasks)  # fmt: skip
            ev_test = load_tiles(script_args.eval_test, image_size=script_args.image_size,
                                 tasks=script_args.eval_tasks)  # fmt: skip
            stain = None
            if script_args.stain_tiles:
                stain = load_tiles(script_args.stain_tiles, image_size=script_args.image_size, mpp=script_args.mpp)
                stain = stain.pixels()
            loaded = PatchEncoder.from_pretrained(save_dir)  # the saved student, as users load it
            live = {n: t for n, t in teachers.items() if not isinstance(t, int)}  # precomputed: no agreement
            result["metrics"]["student"] = evaluate_patch_encoder(loaded, ev_train, ev_test, teachers=live,
                                                                  robustness_tiles=stain)  # fmt: skip
            result["metrics"]["teachers"] = {
                n: evaluate_patch_encoder(t, ev_train, ev_test, robustness_tiles=stain) for n, t in live.items()
            }
        write_json(save_dir / "eval_results.json", result["metrics"].get("student", {}))
        write_json(save_dir / "teacher_eval_results.json", result["metrics"].get("teachers", {}))
        DistillationInfo.from_run(
            "patch_distillation", teachers=args.teachers, training_data=train.source,
            eval_data=script_args.eval_test if script_args.eval_train else None,
            hyperparameters={"student": script_args.student, "student_kwargs": script_args.student_kwargs,
                             "image_size": script_args.image_size, "expert_weights": args.expert_weights,
                             "num_global": script_args.num_global, "num_local": script_args.num_local,
                             "mask_ratio": script_args.mask_ratio, "hed_sigma": script_args.hed_sigma,
                             "clean_teacher_views": script_args.clean_teacher_views,
                             "expert_feature_norm": args.expert_feature_norm},
            losses={f"feature_kd ({args.feature_kind})": args.feature_weight, "token_kd": args.token_weight,
                    f"relation_sample ({args.relation_sample_kind})": args.relation_sample_weight,
                    "relation_region": args.relation_region_weight, "dino": args.dino_weight,
                    "ibot": args.ibot_weight, "self_distill (EMA)": args.self_distill_weight},
            command=command,
        ).save(save_dir)  # fmt: skip
        write_card(save_dir, repo_id)
    if args.push_to_hub and trainer.is_world_process_zero():  # a local hub folder with hub_local_dir
        pushed = push_to_hub(save_dir, repo_id, private=args.hub_private_repo is not False, token=args.hub_token,
                             local_hub=args.hub_local_dir, commit_message="Upload patch-encoder student",
                             revision=args.hub_revision)  # fmt: skip
        result["pushed"] = pushed.location
    return result


def main(argv: list[str] | None = None) -> dict:
    """Recipe: distil pathology patch encoders (multi-expert GPFM, DINO/iBOT H0-mini, HVisKD relations) into a student.

    Parses ``argv`` (default ``sys.argv[1:]``), runs :func:`run_patch_distill`, prints its summary.

    Args:
        argv: Command-line arguments (``--config x.yaml`` and flags).
    """
    parsed = make_parser().parse_args_and_config(argv)
    result = run_patch_distill(*parsed, command=recipe_command("patch_distill", argv))
    print(json.dumps(result, indent=2, default=str))
    return result
