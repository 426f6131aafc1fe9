"""Training-only modules around the student: projection heads per expert (GPFM), DINO/iBOT heads, the frozen
teachers' prototype heads (H0-mini), the EMA self-distillation branch, and the frozen experts themselves.

Only :class:`~reportkd.vlm.patch.modeling.PatchEncoder` (``student.encoder``) is saved as the model; everything here
lives in the training checkpoints (so a resumed run continues with the same heads, centres and EMA weights).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders import EncoderBundle, get_encoder
from .modeling import PatchEncoder


def expert_key(name: str) -> str:
    """A module-safe key for an expert name (``runs/a/student`` → ``runs_a_student``)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class PatchTeacher(nn.Module):
    """A frozen expert patch encoder applied to ``[0, 1]`` pixels: its embedding and, for timm backbones, tokens.

    Args:
        name: The expert's name (registry name, folder or description).
        model: ``(B, 3, H, W)`` normalised pixels → ``(B, D)``; a timm model (``forward_features`` /
            ``forward_head``) or a :class:`PatchEncoder` also gives patch tokens.
        embedding_dim: Output width.
        input_size: Side the expert reads (pixels are resized to it; None: as given).
        mean: Normalisation mean.
        std: Normalisation std.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        *,
        embedding_dim: int,
        input_size: int | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        self.name, self.model, self.embedding_dim, self.input_size = name, model, int(embedding_dim), input_size
        self.register_buffer("_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def has_tokens(self) -> bool:
        """Whether the expert exposes patch tokens (region relation KD, token KD and iBOT need them)."""
        m = self.model
        return isinstance(m, PatchEncoder) or (hasattr(m, "forward_features") and hasattr(m, "forward_head"))

    def train(self, mode: bool = True) -> PatchTeacher:
        return super().train(False)  # always frozen, in eval mode

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """``{"embedding": (B, D), "tokens": (B, N, D) or None}`` of ``(B, 3, H, W)`` pixels in [0, 1]."""
        if self.input_size and pixels.shape[-1] != self.input_size:
            pixels = F.interpolate(pixels, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        x = (pixels - self._mean.to(pixels)) / self._std.to(pixels)
        m = self.model
        if isinstance(m, PatchEncoder):
            out = m(x)
            return {"embedding": out["embedding"].float(), "tokens": out["tokens"].float()}
        if self.has_tokens:
            feats = m.forward_features(x)
            emb = m.forward_head(feats, pre_logits=True)
            prefix = getattr(m, "num_prefix_tokens", 0)
            tokens = feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats[:, prefix:]
            return {"embedding": emb.float(), "tokens": tokens.float()}
        return {"embedding": m(x).float(), "tokens": None}


class PrecomputedTeacher(nn.Module):
    """An expert whose embeddings travel with the tiles (``teacher_features`` of the batch): never in memory.

    Args:
        name: The expert's name (the key of its features in the batch).
        embedding_dim: Width of its stored embeddings.
    """

    has_tokens = False
    input_size = None

    def __init__(self, name: str, embedding_dim: int) -> None:
        super().__init__()
        self.name, self.embedding_dim = name, int(embedding_dim)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor | None]:
        raise RuntimeError(
            f"Expert {self.name!r} is precomputed: its features come with the batch (TileDataset teacher_features)."
        )


def load_teacher_spec(
    spec: str | int | nn.Module | EncoderBundle, *, name: str | None = None
) -> PatchTeacher | PrecomputedTeacher:
    """An expert from a registry name / saved student folder / ``timm:NAME``, a bundle, a :class:`PatchEncoder`, or
    an int: the width of precomputed features stored with the tiles under ``name``.

    Args:
        spec: What to load.
        name: Its name in logs and cards (default: the spec).
    """
    if isinstance(spec, (PatchTeacher, PrecomputedTeacher)):
        return spec
    if isinstance(spec, int):
        if not name:
            raise ValueError("A precomputed expert needs a name: teachers={'uni_v1': 1024}.")
        return PrecomputedTeacher(name, spec)
    if isinstance(spec, PatchEncoder):
        c = spec.config
        return PatchTeacher(name or "patch_encoder", spec, embedding_dim=spec.embedding_dim,
                            input_size=c["image_size"], mean=c["mean"], std=c["std"])  # fmt: skip
    bundle = spec if isinstance(spec, EncoderBundle) else get_encoder(str(spec))
    t = bundle.transform
    size = getattr(t, "output_size", None)
    mean, std = getattr(t, "mean", (0.485, 0.456, 0.406)), getattr(t, "std", (0.229, 0.224, 0.225))
    label = name or (Path(spec).name if isinstance(spec, str) and Path(spec).is_dir() else bundle.name)
    return PatchTeacher(label, bundle.model, embedding_dim=bundle.embedding_dim, input_size=size, mean=mean, std=std)


class DINOHead(nn.Module):
    """DINO/iBOT projection head: MLP → bottleneck → L2-normalised → cosine logits against L2-normalised prototypes.

    Args:
        in_dim: Input width.
        out_dim: Number of prototypes ``K``.
        hidden_dim: MLP width.
        bottleneck_dim: Width before the prototypes.
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 256, bottleneck_dim: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck_dim) / bottleneck_dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class FixedPrototypeHead(nn.Module):
    """A frozen teacher-side head: cosine logits of the teacher's features against fixed random prototypes.

    Public pathology teachers ship without their DINO heads; fixed random prototypes in the teacher's space keep its
    geometry (H0-mini distils into heads the student learns; here the teacher's side is this fixed head).

    Args:
        in_dim: Teacher width.
        out_dim: Number of prototypes ``K``.
        seed: Seed of the prototypes.
    """

    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("prototypes", F.normalize(torch.randn(out_dim, in_dim, generator=g), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1) @ self.prototypes.T


class PatchDistillationStudent(nn.Module):
    """The student encoder with the heads its losses need (built from the config's active terms).

    Args:
        encoder: The student :class:`PatchEncoder` (what is saved).
        expert_dims: Expert name → its embedding width (one projection head each: GPFM).
        heads: Which heads to build: ``feature``, ``token``, ``dino`` (also iBOT), ``ibot`` (mask token),
            ``self_distill`` (EMA branch), ``feature_norm`` (running moments of each expert's embedding).
        dino_out_dim: Prototypes ``K`` of the DINO/iBOT heads.
        dino_hidden_dim: MLP width of the DINO heads.
        dino_bottleneck_dim: Bottleneck width of the DINO heads.
        seed: Seed of the fixed teacher prototypes.
    """

    def __init__(
        self,
        encoder: PatchEncoder,
        expert_dims: Mapping[str, int],
        *,
        heads: Sequence[str] = ("feature",),
        dino_out_dim: int = 256,
        dino_hidden_dim: int = 256,
        dino_bottleneck_dim: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        d = encoder.embedding_dim
        keys = {expert_key(n): dim for n, dim in expert_dims.items()}
        self.feature_heads = nn.ModuleDict({k: nn.Linear(d, v) for k, v in keys.items()} if "feature" in heads else {})
        self.token_heads = nn.ModuleDict({k: nn.Linear(d, v) for k, v in keys.items()} if "token" in heads else {})
        dino_kw: dict[str, Any] = {"hidden_dim": dino_hidden_dim, "bottleneck_dim": dino_bottleneck_dim}
        use_dino = "dino" in heads or "ibot" in heads
        self.dino_heads = nn.ModuleDict({k: DINOHead(d, dino_out_dim, **dino_kw) for k in keys} if use_dino else {})
        self.teacher_heads = nn.ModuleDict(
            {k: FixedPrototypeHead(v, dino_out_dim, seed=seed + i) for i, (k, v) in enumerate(keys.items())}
            if use_dino else {}
        )  # fmt: skip
        for k in keys if use_dino else ():
            self.register_buffer(f"center_{k}", torch.zeros(dino_out_dim))
            self.register_buffer(f"patch_center_{k}", torch.zeros(dino_out_dim))
        for k, v in keys.items() if "feature_norm" in heads else ():
            self.register_buffer(f"feature_mean_{k}", torch.zeros(v))
            self.register_buffer(f"feature_var_{k}", torch.ones(v))
        if "feature_norm" in heads:
            self.register_buffer("feature_norm_updates", torch.zeros((), dtype=torch.long))
        self.mask_token = nn.Parameter(torch.zeros(d)) if "ibot" in heads else None
        self.self_head = self.ema_encoder = self.ema_head = None
        if "self_distill" in heads:
            self.self_head = DINOHead(d, dino_out_dim, **dino_kw)
            self.ema_encoder = copy.deepcopy(encoder).requires_grad_(False)
            self.ema_head = copy.deepcopy(self.self_head).requires_grad_(False)
            self.register_buffer("self_center", torch.zeros(dino_out_dim))

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(EMA parameters, student parameters) in matching order; empty without the self-distillation branch."""
        if self.ema_encoder is None:
            return [], []
        ema = [*self.ema_encoder.parameters(), *self.ema_head.parameters()]
        live = [*self.encoder.parameters(), *self.self_head.parameters()]
        return ema, live

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The encoder's outputs for ``[0, 1]`` pixels (masked patch tokens with ``mask``)."""
        return self.encoder(self.encoder.normalize(pixels), mask=mask, mask_token=self.mask_token)
