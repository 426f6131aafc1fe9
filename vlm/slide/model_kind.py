"""The ``slide_encoder`` model kind and the slide methods, registered with :mod:`reportkd.hub` by
``reportkd.vlm.slide`` and through the ``reportkd.model_kinds`` entry point.

The kind claims a folder whose ``config.json`` has ``model_type: reportkd_slide_encoder``, plain or with a
slide-report head (``alignment_config.json``, ``alignment.safetensors`` and a ``text_encoder/`` subfolder, all
uploaded), i.e. the folders :class:`~reportkd.vlm.slide.SlideEncoderModel` and
:class:`~reportkd.vlm.slide.alignment.SlideReportModel` save. Methods: ``slide_alignment`` (TITAN),
``slide_distillation`` and ``xmag`` (cross-magnification distillation).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reportkd.hub import (
    MODEL_FILES,
    Method,
    ModelKind,
    read_config,
    register_method,
    register_model_kind,
    under,
)

from .configuration_slide import SlideEncoderConfig

ALIGNMENT_CONFIG = "alignment_config.json"
_TITAN = (
    "Ding et al. Multimodal Whole Slide Foundation Model for Pathology (TITAN). arXiv:2411.19666, 2024",
    "https://arxiv.org/abs/2411.19666",
)
_XMAG = (
    "Su et al. Streamline pathology foundation model by cross-magnification distillation (XMAG). "
    "arXiv:2509.23097, 2025",
    "https://arxiv.org/abs/2509.23097",
)
SLIDE_METHODS: dict[str, Method] = {
    "slide_alignment": Method(
        "Slide-report contrastive alignment (CLIP InfoNCE between slide and report embeddings), as in TITAN's "
        "vision-language stage; slide encoder: a ViT over the patch-feature grid with 2D ALiBi", *_TITAN
    ),
    "slide_distillation": Method(
        "Slide-encoder distillation: feature KD on slide embeddings and similarity KD on in-batch slide-slide "
        "(and slide-report) similarity distributions, from a TITAN-style teacher", *_TITAN
    ),
    "xmag": Method(
        "Cross-magnification distillation: a student reading a coarser patch grid (fewer, larger patches) learns "
        "from a teacher reading the fine grid; global (slide embedding) and local (token-to-cell) alignment", *_XMAG
    ),
}  # fmt: skip


def _is_slide_encoder(folder: Path) -> bool:
    return read_config(folder).get("model_type") == SlideEncoderConfig.model_type


def slide_architecture(config: Mapping[str, Any], alignment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``arch`` variables of the card from a slide-encoder config (and a slide-report head's config).

    Args:
        config: The slide encoder's ``config.json``.
        alignment: ``alignment_config.json`` of a slide-report model, or None.
    """
    description = (
        f"ViT over the patch-feature grid, 2D ALiBi ({config.get('position_encoding', 'alibi_2d')}), "
        f"{config.get('num_hidden_layers', '?')} layers x width {config.get('hidden_size', '?')}, "
        f"{config.get('num_attention_heads', '?')} heads, {config.get('pooling', 'cls')} pooling"
    )
    if alignment:
        description += f"; slide-report head ({alignment.get('text_backend')} text encoder)"
    embed = config.get("hidden_size")
    if alignment:
        embed = f"{embed} (shared slide-report space: {alignment.get('embed_dim')})"
    return {"description": description, "patch_encoder": config.get("patch_encoder"),
            "feature_dim": config.get("input_dim"), "embed_dim": embed}  # fmt: skip


def load_code(repo_id: str, aligned: bool) -> str:
    """The card's loading example.

    Args:
        repo_id: The repository.
        aligned: A slide-report model (else a plain slide encoder).
    """
    if aligned:
        return "\n".join([
            "from huggingface_hub import snapshot_download",
            "from reportkd.vlm.slide.alignment import SlideReportModel",
            "",
            f"model = SlideReportModel.from_pretrained(snapshot_download('{repo_id}'))",
            "slide = model.encode_slide(features, grid, patch_mask)  # (B, embed_dim), L2-normalised",
            "text = model.encode_text(model.tokenize(['diagnosis: adenocarcinoma.']))",
        ])  # fmt: skip
    return "\n".join([
        "import reportkd.vlm.slide  # registers the model with AutoModel",
        "from transformers import AutoModel",
        "",
        f"model = AutoModel.from_pretrained('{repo_id}')",
        "out = model(features, grid, patch_mask)  # (B, N, D) patch features, grid = coords // patch_size_level0",
        "out.slide_embeds  # (B, hidden_size)",
        "",
        "# without reportkd: the repository ships modeling_slide.py / configuration_slide.py (read them first)",
        f"model = AutoModel.from_pretrained('{repo_id}', trust_remote_code=True)",
    ])  # fmt: skip


def _card_context(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    alignment = read_config(folder, ALIGNMENT_CONFIG) if (folder / ALIGNMENT_CONFIG).is_file() else None
    return {
        "arch": slide_architecture(read_config(folder), alignment),
        "load_code": load_code(ctx["repo_id"], bool(alignment)),
        "tags": ["slide-encoder", "whole-slide-image"] + (["vision-language"] if alignment else []),
    }


# the code save_pretrained ships (auto_map), so plain transformers loads the encoder with trust_remote_code=True
CODE_FILES = ("configuration_slide.py", "modeling_slide.py")
# a slide-report model's text encoder is a transformers or open_clip model folder with its own small config
TEXT_ENCODER_FILES = (*MODEL_FILES, "text_encoder.json", "open_clip_config.json")
SLIDE_ENCODER_KIND = ModelKind(
    name="slide_encoder", title="Slide encoder (patch features → slide embedding)", detect=_is_slide_encoder,
    files=(*MODEL_FILES, *CODE_FILES, ALIGNMENT_CONFIG, "teacher_eval_results.json",
           *under("text_encoder", TEXT_ENCODER_FILES)),
    card_template="slide_encoder.md", card_context=_card_context, required=("config.json", "model.safetensors"),
    library_name="transformers", pipeline_tag="feature-extraction", eval_task_type="feature-extraction",
    metric_filter=lambda name: not name.startswith("num_") and not name.endswith(("_ci", "epochs", "/C")),
)  # fmt: skip


def register_kinds() -> None:
    """Registers the ``slide_encoder`` model kind and the slide methods (the entry point; idempotent)."""
    for key, method in SLIDE_METHODS.items():
        register_method(key, method)
    register_model_kind(SLIDE_ENCODER_KIND)
