"""Slide encoder: a ViT over the 2D grid of patch features with 2D ALiBi (TITAN, Ding et al. 2024, arXiv 2411.19666).

Inputs are a padded batch of slides: ``features (B, N, D_in)``, integer grid positions ``grid (B, N, 2)`` and a
``patch_mask (B, N)`` that is True for real patches (False for padding and background cells). Attention between
patches ``i`` and ``j`` is biased by ``-slope_h * ||grid_i - grid_j||_2`` (one slope per head, ALiBi's geometric
sequence), and padded keys are masked out. The bias depends only on relative positions, so outputs are invariant
to translating a slide on the grid and the model runs on grids larger than any it was trained on.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with one additive float mask (bias and
key padding together) built once per forward and shared by all layers; it costs ``B * H * L**2`` floats, with
``L`` the patches of the largest slide in the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_slide import SlideEncoderConfig


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al. 2022): ``2 ** (-8 * (h + 1) / H)``, interleaved for non-powers of 2.

    Args:
        num_heads: Number of attention heads.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if num_heads & (num_heads - 1) == 0:
        return torch.tensor(power_of_two(num_heads))
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def grid_distances(grid: torch.Tensor) -> torch.Tensor:
    """``(B, N, N)`` Euclidean distances between grid positions ``(B, N, 2)`` (exact: no matmul expansion)."""
    g = grid.float()
    return (g[:, :, None, :] - g[:, None, :, :]).pow(2).sum(-1).sqrt()


def alibi_2d_bias(
    grid: torch.Tensor,
    slopes: torch.Tensor,
    patch_mask: torch.Tensor | None = None,
    *,
    num_prefix_tokens: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive attention mask ``(B, H, P + N, P + N)``: 2D ALiBi between patches, ``-inf`` on padded keys.

    Prefix tokens (CLS) have no position: no bias to or from them.

    Args:
        grid: ``(B, N, 2)`` grid positions (col, row) in patch units.
        slopes: ``(H,)`` per-head slopes (0 gives a head without position bias).
        patch_mask: ``(B, N)`` True for real patches; None: all real.
        num_prefix_tokens: Tokens before the patches (1 with a CLS token).
        dtype: Dtype of the result (the attention's query dtype).
    """
    dist = grid_distances(grid)
    if num_prefix_tokens:
        dist = F.pad(dist, (num_prefix_tokens, 0, num_prefix_tokens, 0))
    bias = -slopes.to(dist.device, torch.float32).view(1, -1, 1, 1) * dist.unsqueeze(1)
    if patch_mask is not None:
        keys = F.pad(patch_mask.bool(), (num_prefix_tokens, 0), value=True)
        bias = bias.masked_fill(~keys[:, None, None, :], float("-inf"))
    return bias.to(dtype)


def key_padding_bias(
    patch_mask: torch.Tensor, num_heads: int, *, num_prefix_tokens: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(B, 1, 1, P + N)`` additive mask that only removes padded keys (``position_encoding="none"``)."""
    keys = F.pad(patch_mask.bool(), (num_prefix_tokens, 0), value=True)
    return torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill(~keys, float("-inf"))[:, None, None]


@dataclass
class SlideEncoderOutput(ModelOutput):
    """Outputs of :class:`SlideEncoderModel`.

    Args:
        slide_embeds: ``(B, hidden)`` slide embeddings (CLS token or masked mean of patch tokens).
        patch_embeds: ``(B, N, hidden)`` contextualised patch tokens (padding rows are meaningless).
        last_hidden_state: ``(B, P + N, hidden)`` all final tokens (CLS first when present).
        patch_mask: ``(B, N)`` the mask the model used.
        hidden_states: Per-layer token states when ``output_hidden_states``.
        attentions: Per-layer ``(B, H, L, L)`` attention probabilities when ``output_attentions``.
    """

    slide_embeds: torch.Tensor | None = None
    patch_embeds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    patch_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class SlideAttention(nn.Module):
    """Multi-head self-attention with an additive float mask (ALiBi bias + key padding)."""

    def __init__(self, config: SlideEncoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        bias = bias.to(q.dtype)
        if output_attentions:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + bias
            probs = scores.softmax(-1)
            out = F.dropout(probs, p) @ v
        else:
            probs = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1)), probs


class SlideMLP(nn.Module):
    def __init__(self, config: SlideEncoderConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class SlideEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: SlideEncoderConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = SlideAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SlideMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, probs = self.attn(self.norm1(x), bias, output_attentions)
        x = x + self.dropout(h)
        return x + self.mlp(self.norm2(x)), probs


class SlideEncoderPreTrainedModel(PreTrainedModel):
    config_class = SlideEncoderConfig
    base_model_prefix = "slide_encoder"
    main_input_name = "features"
    _no_split_modules = ["SlideEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SlideEncoderModel) and module.cls_token is not None:
            init.trunc_normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)


class SlideEncoderModel(SlideEncoderPreTrainedModel):
    """TITAN-style slide encoder over a grid of patch features (see the module docstring).

    Args:
        config: A :class:`~reportkd.vlm.slide.configuration_slide.SlideEncoderConfig`.
    """

    def __init__(self, config: SlideEncoderConfig) -> None:
        super().__init__(config)
        self.input_proj = nn.Linear(config.input_dim, config.hidden_size)
        self.input_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if config.use_cls_token else None
        self.layers = nn.ModuleList(SlideEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @property
    def slopes(self) -> torch.Tensor:
        """``(H,)`` ALiBi slopes (from the config; computed, not stored, so loading never leaves them unset)."""
        if self.config.alibi_slopes is not None:
            return torch.tensor(self.config.alibi_slopes, dtype=torch.float32)
        return alibi_slopes(self.config.num_attention_heads)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.cls_token is not None else 0

    def attention_bias(self, grid: torch.Tensor, patch_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The additive attention mask every layer uses (see :func:`alibi_2d_bias`)."""
        if self.config.position_encoding == "alibi_2d":
            return alibi_2d_bias(grid, self.slopes, patch_mask, num_prefix_tokens=self.num_prefix_tokens, dtype=dtype)
        return key_padding_bias(
            patch_mask, self.config.num_attention_heads, num_prefix_tokens=self.num_prefix_tokens, dtype=dtype
        )

    def forward(
        self,
        features: torch.Tensor,
        grid: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
        **unused: object,
    ) -> SlideEncoderOutput | tuple:
        """Encodes a padded batch of slides.

        Args:
            features: ``(B, N, D_in)`` patch features, or ``(N, D_in)`` for one slide.
            grid: ``(B, N, 2)`` integer grid positions (``coords // patch_size_level0``); required with ALiBi.
            patch_mask: ``(B, N)`` True for real patches; None: all real. Every slide needs one real patch.
            output_attentions: Return attention probabilities (slower: no fused attention).
            output_hidden_states: Return every layer's tokens.
            return_dict: Return a :class:`SlideEncoderOutput` (default) or a tuple.
        """
        if features.dim() == 2:
            features = features.unsqueeze(0)
            grid = grid.unsqueeze(0) if grid is not None else None
            patch_mask = patch_mask.unsqueeze(0) if patch_mask is not None else None
        if features.dim() != 3 or features.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"features must be (B, N, {self.config.input_dim}), got {tuple(features.shape)}: the model was built "
                f"for {self.config.input_dim}-d patch features (set input_dim to your patch encoder's width)."
            )
        b, n, _ = features.shape
        if grid is None:
            if self.config.position_encoding == "alibi_2d":
                raise ValueError(
                    "2D ALiBi needs grid positions: pass grid=coords // patch_size_level0, shape (B, N, 2)."
                )
            grid = features.new_zeros(b, n, 2, dtype=torch.long)
        if grid.shape != (b, n, 2):
            raise ValueError(f"grid must be (B, N, 2) = {(b, n, 2)}, got {tuple(grid.shape)}.")
        if patch_mask is None:
            patch_mask = torch.ones(b, n, dtype=torch.bool, device=features.device)
        patch_mask = patch_mask.bool()
        if not patch_mask.any(-1).all():
            raise ValueError("Every slide in the batch needs at least one real patch (patch_mask all False).")
        x = self.input_dropout(self.input_proj(features.to(self.input_proj.weight.dtype)))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        bias = self.attention_bias(grid, patch_mask, x.dtype)
        hidden, attentions = [x] if output_hidden_states else None, [] if output_attentions else None
        for layer in self.layers:
            x, probs = layer(x, bias, output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(probs)
        x = self.norm(x)
        patches = x[:, self.num_prefix_tokens :]
        if self.config.pooling == "cls":
            slide = x[:, 0]
        else:
            weights = patch_mask.to(patches.dtype).unsqueeze(-1)
            slide = (patches * weights).sum(1) / weights.sum(1)
        out = SlideEncoderOutput(
            slide_embeds=slide,
            patch_embeds=patches,
            last_hidden_state=x,
            patch_mask=patch_mask,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
        return out if return_dict is not False else out.to_tuple()


# save_pretrained copies this file and configuration_slide.py into the folder with an auto_map, so plain transformers
# loads a slide encoder with trust_remote_code=True (reportkd's registered classes load it without running that code).
SlideEncoderModel.register_for_auto_class("AutoModel")


def register_auto_classes() -> None:
    """Registers the slide encoder with ``AutoConfig`` / ``AutoModel`` (idempotent)."""
    try:
        AutoConfig.register(SlideEncoderConfig.model_type, SlideEncoderConfig)
    except ValueError:  # already registered (re-import)
        pass
    try:
        AutoModel.register(SlideEncoderConfig, SlideEncoderModel)
    except ValueError:
        pass
