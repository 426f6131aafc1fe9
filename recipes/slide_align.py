"""Recipe: align a TITAN-style slide encoder (2D-ALiBi ViT over patch features) with pathology reports.

    # CPU, seconds: tiny encoder and text tower on synthetic slides (tests run it)
    python recipes/slide_align.py --config recipes/configs/slide_align_quick.yaml
    # offline demo, ~1 minute on CPU: 400 synthetic slides with reports, 300 steps
    python recipes/slide_align.py --config recipes/configs/slide_align_synthetic.yaml
    # several GPUs, features from `reportkd extract` (e.g. CONCH v1.5, 768-d) and a report text model
    accelerate launch --multi_gpu --num_processes 4 recipes/slide_align.py \
        --config recipes/configs/slide_align_synthetic.yaml --features /data/features_20x \
        --labels /data/labels.csv --eval_features /data/features_20x --text_encoder hf:/models/report-bert \
        --hidden_size 768 --num_hidden_layers 6 --num_attention_heads 12 --crop_size 16 --output_dir runs/slide_align
    # push the model (private) or write it to a local hub folder
    python recipes/slide_align.py --config recipes/configs/slide_align_quick.yaml \
        --push_to_hub --hub_model_id org/slide-encoder --hub_local_dir /models/hub

Training pairs are slides (``features``: a folder of ``reportkd extract`` features files, or ``synthetic:...``) and
their reports (``labels``: CSV / JSONL ``slide_id,label,split,report``; rows of ``train_split`` are used). Crops of
``crop_size`` x ``crop_size`` grid cells are TITAN's region crops. The slide-report model is saved under
``<output_dir>/model`` (safetensors, configs, ``eval_results.json``, ``distillation.json`` and a model card): its top
level is the slide encoder (``AutoModel.from_pretrained``), ``SlideReportModel.from_pretrained`` loads it whole.
YAML keys are the field names of :class:`ScriptArguments` and ``SlideAlignmentConfig`` (plus ``env:``); flags override
them.
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
from reportkd.vlm.slide import SlideEncoderConfig, SlideEncoderModel  # noqa: E402
from reportkd.vlm.slide.alignment import SlideReportModel, load_text_encoder  # noqa: E402
from reportkd.vlm.slide.data import SlideCollator, load_slide_dataset  # noqa: E402
from reportkd.vlm.slide.evaluation import evaluate_slide_model  # noqa: E402
from reportkd.vlm.slide.model_card import distillation_info, write_eval_results  # noqa: E402
from reportkd.vlm.slide.trainer import SlideAlignmentConfig, SlideAlignmentTrainer  # noqa: E402
from transformers import set_seed  # noqa: E402

from reportkd.hub import push_to_hub, write_card  # noqa: E402

ARCH_FIELDS = ("input_dim", "hidden_size", "num_hidden_layers", "num_attention_heads", "pooling")


@dataclass
class SlideModelArguments:
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
class ScriptArguments(SlideModelArguments):
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


def make_parser() -> RecipeParser:
    """``ScriptArguments`` and ``SlideAlignmentConfig`` (``--config x.yaml``, flags win)."""
    return RecipeParser((ScriptArguments, SlideAlignmentConfig))


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, SlideAlignmentConfig]:
    """Parses ``argv`` (default ``sys.argv[1:]``): YAML values from ``--config`` first, flags on top."""
    return make_parser().parse_args_and_config(argv)


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


def main(script_args: ScriptArguments, args: SlideAlignmentConfig) -> dict:
    """Aligns a slide encoder with reports, evaluates it and saves the slide-report model with its card."""
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
    trainer.train()
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
        write_eval_results(save_dir, result["metrics"])
        config = plain.slide_encoder.config
        distillation_info(
            method="slide_alignment", architecture={k: getattr(config, k) for k in ARCH_FIELDS},
            dataset=script_args.features, text_encoder=script_args.text_encoder, losses={"clip_contrastive": 1.0},
            eval_data=script_args.eval_features, command="python recipes/slide_align.py " + " ".join(sys.argv[1:]),
            extra={"crop_size": script_args.crop_size, "embed_dim": script_args.embed_dim},
        ).save(save_dir)  # fmt: skip
        write_card(save_dir, repo_id)
    if args.push_to_hub:  # main process only; a local hub folder with hub_local_dir
        result["pushed"] = push(trainer, save_dir, repo_id, "Upload slide-report model")
    return result


if __name__ == "__main__":
    result = main(*parse_args())
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"} | {"metrics": {
        k: v for k, v in result["metrics"].items() if k != "meta"}}, indent=2, default=str))  # fmt: skip
