"""The student patch encoder: a timm ViT or CNN backbone that saves as a folder ``reportkd extract`` can load.

A saved folder holds ``config.json`` (``model_type: reportkd_patch_encoder``, the timm architecture and its
keyword arguments, the input size and normalisation) and ``model.safetensors`` (the backbone's state dict). It loads
without this package: ``reportkd.vlm.encoders.get_encoder(<folder>)`` builds the same timm model (see
:func:`reportkd.vlm.encoders.registry.load_patch_encoder_folder`), so the student drops into ``reportkd extract
--encoder <folder>`` and the slide encoders.

Example::

    from reportkd.vlm.patch import PatchEncoder
    student = PatchEncoder("vit_small_patch16_224", {"img_size": 64, "patch_size": 8, "depth": 4}, image_size=64)
    out = student(student.normalize(pixels01))  # {"embedding": (B, D), "tokens": (B, N, D)}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reportkd.utils import write_json

from ..encoders.registry import PATCH_ENCODER_TYPE, build_patch_backbone, load_patch_encoder_folder
from ..encoders.transforms import IMAGENET_MEAN, IMAGENET_STD

# Named student architectures (timm name, keyword arguments): ViT-S/B-like and MobileNet/ShuffleNet-like, plus the
# tiny ones the tests and the CPU benchmark use. Any other timm name works with ``student_kwargs``.
STUDENT_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_small": ("vit_small_patch16_224", {}),
    "vit_base": ("vit_base_patch16_224", {}),
    "mobilenetv3_small": ("mobilenetv3_small_100", {}),
    "vit_tiny_64": ("vit_small_patch16_224", {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 3,
                                              "num_heads": 2, "mlp_ratio": 2.0}),
    "vit_micro_32": ("vit_small_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                                               "num_heads": 2, "mlp_ratio": 2.0}),
    "cnn_tiny": ("resnet10t", {"channels": (16, 32, 48, 64)}),
}  # fmt: skip


def resolve_architecture(name: str, kwargs: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A preset name or timm name plus keyword overrides → ``(timm name, kwargs)``.

    Args:
        name: A key of :data:`STUDENT_PRESETS` or a timm model name.
        kwargs: Keyword arguments that override the preset's.
    """
    base, preset = STUDENT_PRESETS.get(name, (name, {}))
    return base, {**preset, **dict(kwargs or {})}


class PatchEncoder(nn.Module):
    """A timm backbone with a pooled embedding and patch tokens (ViT: tokens after the prefix; CNN: the last map).

    Args:
        timm_model: timm architecture name (or a :data:`STUDENT_PRESETS` key).
        timm_kwargs: Its keyword arguments (``img_size``, ``patch_size``, ``embed_dim``, ``depth``…).
        image_size: Input side in pixels (also what ``reportkd extract`` resizes tiles to).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
    """

    def __init__(
        self,
        timm_model: str,
        timm_kwargs: Mapping[str, Any] | None = None,
        *,
        image_size: int = 224,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        timm_model, timm_kwargs = resolve_architecture(timm_model, timm_kwargs)
        if timm_model.startswith("vit_"):
            timm_kwargs = {"dynamic_img_size": True, **timm_kwargs}  # multi-crop: local crops at another size
        self.config: dict[str, Any] = {
            "model_type": PATCH_ENCODER_TYPE, "timm_model": timm_model, "timm_kwargs": dict(timm_kwargs),
            "image_size": int(image_size), "mean": list(mean), "std": list(std),
        }  # fmt: skip
        self.backbone = build_patch_backbone(timm_model, timm_kwargs)
        self.config["embedding_dim"] = self.embedding_dim
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def embedding_dim(self) -> int:
        """Width of the pooled embedding and the tokens."""
        return int(self.backbone.num_features)

    @property
    def is_vit(self) -> bool:
        """Whether the backbone is a ViT (patch embedding, prefix tokens; supports masked patch tokens)."""
        return hasattr(self.backbone, "patch_embed") and hasattr(self.backbone, "blocks")

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` pixels in [0, 1] → the backbone's normalised input."""
        return (pixels - self._mean.to(pixels)) / self._std.to(pixels)

    def forward(
        self, pixel_values: torch.Tensor, *, mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Pooled embedding ``(B, D)`` and patch tokens ``(B, N, D)`` of normalised pixels.

        Args:
            pixel_values: ``(B, 3, H, W)`` normalised pixels.
            mask: ``(B, N)`` boolean, patch tokens replaced by ``mask_token`` before the blocks (ViT only; iBOT).
            mask_token: ``(D,)`` learned token for masked patches.
        """
        b = self.backbone
        if mask is None:
            feats = b.forward_features(pixel_values)
        else:
            if not self.is_vit or mask_token is None:
                raise ValueError("Masked patch tokens need a ViT student and a mask token (iBOT); use a ViT preset.")
            x = b.patch_embed(pixel_values)
            shape = x.shape
            x = x.reshape(shape[0], -1, shape[-1])
            x = torch.where(mask.unsqueeze(-1), mask_token.to(x.dtype).expand_as(x), x).reshape(shape)
            x = b.norm_pre(b.patch_drop(b._pos_embed(x)))
            feats = b.norm(b.blocks(x))
        pooled = b.forward_head(feats, pre_logits=True)
        if feats.ndim == 4:  # CNN: (B, C, h, w) → (B, h*w, C)
            tokens = feats.flatten(2).transpose(1, 2)
        else:
            tokens = feats[:, getattr(b, "num_prefix_tokens", 0) :]
        return {"embedding": pooled, "tokens": tokens}

    def save_pretrained(self, save_dir: str | Path) -> Path:
        """Writes ``config.json`` and ``model.safetensors`` (the backbone) to ``save_dir``."""
        from safetensors.torch import save_file

        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.backbone.state_dict().items()}
        tmp = save_dir / "model.safetensors.tmp"
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(save_dir / "model.safetensors")
        write_json(save_dir / "config.json", self.config)
        return save_dir

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PatchEncoder:
        """Loads a folder written by :meth:`save_pretrained` (safetensors only).

        Args:
            folder: The saved folder.
        """
        backbone, config = load_patch_encoder_folder(folder)
        model = cls(config["timm_model"], config["timm_kwargs"], image_size=config["image_size"],
                    mean=tuple(config["mean"]), std=tuple(config["std"]))  # fmt: skip
        model.backbone.load_state_dict(backbone.state_dict())
        return model


def count_flops(model: nn.Module, image_size: int, *, forward: Any = None) -> int:
    """Forward FLOPs of one ``image_size`` x ``image_size`` image (torch's FLOP counter: 2 per multiply-add).

    Args:
        model: The encoder (called as ``model(x)`` unless ``forward`` is given).
        image_size: Input side.
        forward: Optional callable ``x -> output`` used instead of ``model``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        (forward or model)(x)
    return int(counter.get_total_flops())
