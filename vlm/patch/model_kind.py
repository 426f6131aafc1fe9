"""The ``patch_encoder`` model kind and the patch-distillation methods, registered with :mod:`reportkd.hub` by
``reportkd.vlm.patch`` and through the ``reportkd.model_kinds`` entry point.

The kind claims a folder whose ``config.json`` has ``model_type: reportkd_patch_encoder`` (what
:meth:`~reportkd.vlm.patch.PatchEncoder.save_pretrained` writes): the config, ``model.safetensors``, the card,
``distillation.json``, ``eval_results.json`` and ``teacher_eval_results.json`` are uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportkd.hub import MODEL_FILES, Method, ModelKind, read_config, register_method, register_model_kind

PATCH_ENCODER_TYPE = "reportkd_patch_encoder"
PATCH_METHODS: dict[str, Method] = {
    "patch_distillation": Method(
        "Patch-encoder distillation from frozen experts: multi-expert feature KD with a projection head per expert "
        "(GPFM), DINO/iBOT distillation against the frozen teachers with multi-crop and masked patch tokens "
        "(H0-mini), sample- and region-level relation KD (HVisKD) and EMA self-distillation (local-global)",
        "Ma et al. Towards a generalizable pathology foundation model via unified knowledge distillation (GPFM), "
        "arXiv:2407.18449; Filiot et al. Distilling foundation models for robust and efficient models in digital "
        "pathology (H0-mini), arXiv:2501.16239; HVisKD (human-vision-inspired KD: sample- and region-level relations)",
        "https://arxiv.org/abs/2407.18449",
    ),
}


def _is_patch_encoder(folder: Path) -> bool:
    return read_config(folder).get("model_type") == PATCH_ENCODER_TYPE


def load_code(repo_id: str) -> str:
    """The card's loading example.

    Args:
        repo_id: The repository.
    """
    return "\n".join([
        "from huggingface_hub import snapshot_download",
        "from reportkd.vlm.encoders import get_encoder",
        "",
        f"enc = get_encoder(snapshot_download('{repo_id}'))  # or: reportkd extract --encoder <folder>",
        "feats = enc.encode(torch.stack([enc.transform(tile) for tile in tiles]))  # (N, embedding_dim)",
    ])  # fmt: skip


def _card_context(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    config = read_config(folder)
    kwargs = ", ".join(f"{k}={v}" for k, v in (config.get("timm_kwargs") or {}).items())
    arch = {"description": f"timm {config.get('timm_model')}({kwargs})", "embed_dim": config.get("embedding_dim"),
            "image_size": config.get("image_size")}  # fmt: skip
    return {"arch": arch, "load_code": load_code(ctx["repo_id"]), "tags": ["patch-encoder", "histopathology"]}


PATCH_ENCODER_KIND = ModelKind(
    name="patch_encoder", title="Patch encoder (H&E tile → embedding)", detect=_is_patch_encoder,
    files=(*MODEL_FILES, "teacher_eval_results.json"), card_template="patch_encoder.md",
    card_context=_card_context, required=("config.json", "model.safetensors"), library_name="timm",
    pipeline_tag="image-feature-extraction",
)  # fmt: skip


def register_kinds() -> None:
    """Registers the ``patch_encoder`` model kind and the patch methods (the entry point; idempotent)."""
    for key, method in PATCH_METHODS.items():
        register_method(key, method)
    register_model_kind(PATCH_ENCODER_KIND)
