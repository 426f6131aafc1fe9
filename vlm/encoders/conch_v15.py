"""``conch_v15``: CONCH v1.5, the patch encoder of TITAN (Ding et al. 2024), 768-d, at 448 px.

Architecture, read from mahmoodlab/TRIDENT ``trident/patch_encoder_models/model_zoo/conchv1_5/conchv1_5.py``
(``CONCHVisionTower``, ``create_model_from_pretrained``) and ``load.py`` (``Conchv15InferenceEncoder``):

- ``trunk``: a ViT-L/16 (1024-d, 24 blocks, 16 heads, MLP ratio 4, qkv bias, LayerScale ``init_values=1.0``,
  LayerNorm eps 1e-6, CLS token), built there at 224 px (a 14 x 14 position grid) and fed 448 px patches, its
  position embeddings interpolated at every forward pass (DINO's bicubic ``scale_factor=(28 + 0.1) / 14``). Here the
  trunk is timm's ``vit_large_patch16_224`` built at 448 px, and the checkpoint's embeddings are interpolated once,
  at load time, the same way (:func:`trident_pos_embed`), so a 448 px patch gives the same tokens.
- ``attn_pool_contrast``: attentional pooling of all final tokens by one learned 768-d query (8 heads, LayerNorms on
  queries and keys, no biases), then ``ln_contrast`` (LayerNorm 768). Its output is the 768-d embedding TITAN reads.
- Preprocessing: resize the shorter side to 448 (bilinear), centre-crop 448, ImageNet mean/std. Recommended
  precision: float16 (TRIDENT's).

Weights: ``pytorch_model_vision.bin`` of the gated ``MahmoodLab/conchv1_5`` (read tensors-only), or ``weights=`` a
file or a folder holding it (or ``model.safetensors``). Keys are TRIDENT's: ``trunk.*``, ``attn_pool_contrast.*``,
``ln_contrast.*``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .builders import from_hub, load_state_dict_file, load_weights_into
from .registry import EncoderBundle, EncoderWeightsError, register_encoder
from .transforms import IMAGENET_MEAN, IMAGENET_STD, PatchTransform

HUB_ID = "MahmoodLab/conchv1_5"
URL = "https://huggingface.co/MahmoodLab/conchv1_5"
CHECKPOINT = "pytorch_model_vision.bin"
IMAGE_SIZE = 448
PATCH_SIZE = 16
BASE_GRID = 14  # TRIDENT builds the trunk at 224 px
TRUNK_KWARGS = {"embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0, "qkv_bias": True}


class AttentionalPooler(nn.Module):
    """Cross-attention of ``n_queries`` learned queries over the tokens (CoCa's pooler, as CONCH v1.5 uses it).

    Args:
        d_model: Query (and output) width.
        context_dim: Token width.
        n_head: Attention heads.
        n_queries: Learned queries.
    """

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.heads = n_head
        self.scale = (d_model // n_head) ** -0.5
        inner = (d_model // n_head) * n_head
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, context_dim)`` tokens → ``(B, n_queries, d_model)``."""
        b, n, _ = x.shape
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
        sim = (q * self.scale) @ k.transpose(-1, -2)
        attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).flatten(2))


class ConchV15Vision(nn.Module):
    """CONCH v1.5's vision tower: ViT-L/16 trunk → attentional pooler → LayerNorm (see the module docstring).

    Args:
        img_size: Input side the trunk is built for (448).
        trunk_kwargs: timm ``VisionTransformer`` sizes (tests pass tiny ones).
        pool_dim: Output width (768).
        pool_heads: Pooler heads (8).
    """

    def __init__(
        self, img_size: int = IMAGE_SIZE, trunk_kwargs: dict | None = None, pool_dim: int = 768, pool_heads: int = 8
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        kwargs = {**TRUNK_KWARGS, **(trunk_kwargs or {})}
        self.trunk = VisionTransformer(
            img_size=img_size, patch_size=PATCH_SIZE, num_classes=0, global_pool="", init_values=1.0,
            dynamic_img_size=True, **kwargs,
        )  # fmt: skip
        self.attn_pool_contrast = AttentionalPooler(pool_dim, kwargs["embed_dim"], n_head=pool_heads, n_queries=1)
        self.ln_contrast = nn.LayerNorm(pool_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised pixels → ``(B, 768)``."""
        tokens = self.trunk.forward_features(x)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


def trident_pos_embed(pos_embed: torch.Tensor, img_size: int = IMAGE_SIZE, base_grid: int = BASE_GRID) -> torch.Tensor:
    """The position embeddings TRIDENT's CONCH v1.5 adds to an ``img_size`` input, from a checkpoint's.

    TRIDENT resizes the checkpoint's grid to its 224 px model (bilinear, as timm's ``resample_abs_pos_embed``) and
    interpolates that grid at each forward pass (bicubic, ``scale_factor=(grid + 0.1) / base_grid``, DINO's rule).

    Args:
        pos_embed: ``(1, 1 + G * G, D)`` checkpoint embeddings (CLS first).
        img_size: Input side.
        base_grid: Grid side of the model TRIDENT builds (14).
    """
    from timm.layers import resample_abs_pos_embed

    g = math.isqrt(pos_embed.shape[1] - 1)
    if g * g != pos_embed.shape[1] - 1:
        raise EncoderWeightsError(f"conch_v15: pos_embed {tuple(pos_embed.shape)} is not a square grid plus CLS.")
    pos_embed = pos_embed.float()
    if g != base_grid:
        pos_embed = resample_abs_pos_embed(
            pos_embed, new_size=[base_grid, base_grid], num_prefix_tokens=1, interpolation="bilinear",
            antialias=False, verbose=False,
        )  # fmt: skip
    grid = img_size // PATCH_SIZE
    if grid == base_grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, 1:].reshape(1, base_grid, base_grid, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / base_grid
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pos_embed[:, :1], patches], dim=1)


def load_conch_v15_state_dict(model: ConchV15Vision, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Loads a TRIDENT-layout checkpoint strictly into ``model`` (position embeddings converted first)."""
    state_dict = dict(state_dict)
    key = "trunk.pos_embed"
    if key in state_dict:
        img_size = model.trunk.patch_embed.img_size[0]
        state_dict[key] = trident_pos_embed(state_dict[key], img_size).to(state_dict[key].dtype)
    load_weights_into(model, state_dict, name="conch_v15", path=path, url=URL)


def _checkpoint_file(weights: Path) -> Path:
    if weights.is_dir():
        for name in (CHECKPOINT, "model.safetensors", "pytorch_model.bin"):
            if (weights / name).is_file():
                return weights / name
        raise EncoderWeightsError(f"No {CHECKPOINT} (or model.safetensors) in {weights}; download it from {URL}.")
    return weights


@register_encoder("conch_v15")
def conch_v15(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """CONCH v1.5 (Mahmood Lab, TITAN's patch encoder): ViT-L/16 at 448 px + attentional pooling; 768-d."""
    path, source = None, "random"
    if weights is not None:
        path = _checkpoint_file(Path(weights))
        source = f"file:{path}"
    elif not random_init:

        def download() -> Path:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(HUB_ID, CHECKPOINT))

        path, source = from_hub("conch_v15", HUB_ID, URL, download), f"hub:{HUB_ID}"
    model = ConchV15Vision()  # built after the weights are found: a missing checkpoint fails fast
    if path is not None:
        load_conch_v15_state_dict(model, load_state_dict_file(path), path)
    transform = PatchTransform(IMAGE_SIZE, crop=IMAGE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    info = {"arch": "vit_large_patch16 (448 px) + attentional pooler", "hub_id": HUB_ID, "url": URL}
    return EncoderBundle("conch_v15", model, transform, 768, torch.float16, source, info=info)
