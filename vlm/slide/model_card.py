"""Model cards for slide encoders and slide-report models, from the shared ``slide_encoder`` card template.

Importing this module registers, with :mod:`reportkd.hub`:

- the model kind ``slide_encoder`` (a folder whose ``config.json`` has ``model_type: reportkd_slide_encoder``, plain
  or with a slide-report head: ``alignment_config.json``), so ``write_card`` / ``push_to_hub`` recognise the folders
  :class:`~reportkd.vlm.slide.SlideEncoderModel` and :class:`~reportkd.vlm.slide.alignment.SlideReportModel` save;
- the methods ``slide_alignment`` (TITAN), ``slide_distillation`` and ``xmag`` (cross-magnification distillation).

The card of a saved folder is best rendered from the folder itself (``reportkd.hub.write_card``: architecture from
``config.json``, metrics from ``eval_results.json``, provenance from ``distillation.json``, which
:func:`distillation_info` builds). :func:`render_model_card` renders the same template from arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reportkd.hub import DistillationInfo, Method, ModelKind, register_method, register_model_kind
from reportkd.hub.cards import METHODS, context_from_info, read_optional_json
from reportkd.hub.kinds import MODEL_KINDS, render_context

from .configuration_slide import SlideEncoderConfig

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
ALIGNMENT_CONFIG = "alignment_config.json"


def _is_slide_encoder(folder: Path) -> bool:
    return (read_optional_json(folder, "config.json") or {}).get("model_type") == SlideEncoderConfig.model_type


def slide_architecture(config: Mapping[str, Any], alignment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``arch`` variables of the card from a slide-encoder config (and a slide-report head's config)."""
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
    """The card's loading example."""
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
    ])  # fmt: skip


def _collect(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    alignment = read_optional_json(folder, ALIGNMENT_CONFIG)
    return _collect_from(read_optional_json(folder, "config.json") or {}, alignment, ctx["repo_id"])


def _collect_from(config: Mapping[str, Any], alignment: Mapping[str, Any] | None, repo_id: str) -> dict[str, Any]:
    return {"arch": slide_architecture(config, alignment), "load_code": load_code(repo_id, bool(alignment)),
            "tags": ["slide-encoder", "whole-slide-image"] + (["vision-language"] if alignment else [])}  # fmt: skip


def register_hub_entries() -> None:
    """Registers the ``slide_encoder`` model kind and the slide methods (idempotent)."""
    for key, method in SLIDE_METHODS.items():
        if key not in METHODS:
            register_method(key, method)
    if "slide_encoder" not in MODEL_KINDS:
        register_model_kind(ModelKind(
            name="slide_encoder", title="Slide encoder (patch features → slide embedding)", detect=_is_slide_encoder,
            template="slide_encoder.md", collect=_collect, library_name="transformers",
            pipeline_tag="feature-extraction", required=("config.json", "model.safetensors"),
            include=("text_encoder/**/*",),
        ))  # fmt: skip


register_hub_entries()


def distillation_info(
    *,
    method: str,
    architecture: Mapping[str, Any],
    dataset: str,
    teacher: str | None = None,
    text_encoder: str | None = None,
    losses: Mapping[str, float] | None = None,
    eval_data: str | None = None,
    command: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> DistillationInfo:
    """Provenance of a slide encoder for its card (``distillation.json``).

    Args:
        method: ``"slide_alignment"``, ``"slide_distillation"`` or ``"xmag"``.
        architecture: Slide-encoder settings worth listing.
        dataset: Training data (features source, patch encoder, magnification).
        teacher: Teacher name / path (distillation).
        text_encoder: Text encoder spec (alignment, or the teacher's for an aligned student).
        losses: Loss name → weight (only active ones are recorded).
        eval_data: What the metrics were measured on.
        command: The command that produced the model.
        extra: Further settings (temperature, crop size…).
    """
    if method not in SLIDE_METHODS:
        raise ValueError(f"method must be one of {sorted(SLIDE_METHODS)}, got {method!r}.")
    hyperparameters: dict[str, Any] = {f"student {k}" if teacher else k: v for k, v in architecture.items()}
    if text_encoder:
        hyperparameters["text encoder"] = text_encoder
    hyperparameters.update({f"loss {k}": v for k, v in (losses or {}).items() if v})
    hyperparameters.update(extra or {})
    return DistillationInfo(method=method, teachers=[teacher] if teacher else [], training_data=dataset,
                            eval_data=eval_data, hyperparameters=hyperparameters, command=command)  # fmt: skip


def render_model_card(
    *,
    model_name: str,
    method: str,
    config: SlideEncoderConfig | Mapping[str, Any],
    dataset: str,
    teacher: str | None = None,
    text_encoder: str | None = None,
    losses: Mapping[str, float] | None = None,
    metrics: Mapping[str, Any] | None = None,
    parameters: int | None = None,
    aligned: bool = False,
    embed_dim: int | None = None,
    eval_data: str | None = None,
    command: str | None = None,
    extra: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> str:
    """Markdown model card of a slide encoder (or slide-report model) from the shared template.

    Args:
        model_name: Name of the saved model (repository name).
        method: ``"slide_alignment"``, ``"slide_distillation"`` or ``"xmag"``.
        config: The slide encoder's config.
        dataset: Training data description.
        teacher: Teacher name or path (distillation).
        text_encoder: Text encoder spec.
        losses: Loss name → weight.
        metrics: Evaluation results (probe → metrics, as ``evaluate_slide_embeddings`` returns).
        parameters: Parameter count of the slide encoder.
        aligned: The folder holds a slide-report model (changes the loading example).
        embed_dim: Width of the slide-report space of an aligned model.
        eval_data: What the metrics were measured on.
        command: The command that produced the model.
        extra: Further settings to record.
        repo_id: Repository named in the loading example (default ``ORG/<model_name>``).
    """
    cfg = config.to_dict() if isinstance(config, SlideEncoderConfig) else dict(config)
    arch = {k: cfg.get(k) for k in ("input_dim", "hidden_size", "num_hidden_layers", "num_attention_heads")}
    info = distillation_info(method=method, architecture=arch, dataset=dataset, teacher=teacher,
                             text_encoder=text_encoder, losses=losses, eval_data=eval_data, command=command,
                             extra=extra)  # fmt: skip
    kind = MODEL_KINDS.get("slide_encoder")
    repo_id = repo_id or f"ORG/{model_name}"
    shown = {k: v for k, v in (metrics or {}).items() if k != "meta"}
    ctx = context_from_info(info, shown, repo_id, kind.title, parameters)
    alignment = {"embed_dim": embed_dim, "text_backend": (text_encoder or "").partition(":")[0]} if aligned else None
    ctx.update(_collect_from(cfg, alignment, repo_id))
    return str(render_context(kind, ctx))


def write_eval_results(folder: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Writes ``eval_results.json`` (probe → metrics; confidence-interval lists are kept in the file)."""
    path = Path(folder) / "eval_results.json"
    path.write_text(json.dumps(dict(metrics), indent=2))
    return path
