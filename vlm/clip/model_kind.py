"""The ``open_clip`` model kind: distilled open_clip students saved in open_clip's hub layout
(``open_clip_config.json`` + ``open_clip_model.safetensors``). Registered by ``reportkd.vlm.clip`` and through the
``reportkd.model_kinds`` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportkd.hub import MODEL_FILES, ModelKind, read_config, register_model_kind


def _is_open_clip(folder: Path) -> bool:
    return (folder / "open_clip_config.json").is_file()


def open_clip_architecture(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``arch`` variables of the open_clip card from an open_clip model config (``embed_dim``, towers).

    Args:
        cfg: The ``model_cfg`` of ``open_clip_config.json``.
    """
    vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}

    def tower(c: dict[str, Any], extra: str) -> str:
        if "hf_model_name" in c or "timm_model_name" in c:
            return str(c.get("hf_model_name") or c.get("timm_model_name"))
        return f"transformer, {c.get('layers', '?')} layers × width {c.get('width', '?')}{extra}"

    image = f", {vision.get('image_size', '?')} px images, patch {vision.get('patch_size', '?')}"
    return {
        "embed_dim": cfg.get("embed_dim", "?"),
        "vision": tower(vision, image),
        "text": tower(text, f", context {text.get('context_length', '?')} tokens"),
    }


def _card_context(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    return {"arch": open_clip_architecture(read_config(folder, "open_clip_config.json").get("model_cfg") or {})}


OPEN_CLIP_KIND = ModelKind(
    name="open_clip", title="open_clip image-text model (student)", detect=_is_open_clip,
    files=(*MODEL_FILES, "open_clip_config.json"), card_template="open_clip.md", card_context=_card_context,
    required=("open_clip_config.json", "open_clip_model.safetensors"), library_name="open_clip",
    pipeline_tag="zero-shot-image-classification", tags=("clip", "vision-language"),
    eval_task_type="zero-shot-image-classification", metric_filter=lambda name: not name.startswith("num_"),
)  # fmt: skip


def register_kinds() -> None:
    """Registers the ``open_clip`` model kind (the ``reportkd.model_kinds`` entry point; idempotent)."""
    register_model_kind(OPEN_CLIP_KIND)
