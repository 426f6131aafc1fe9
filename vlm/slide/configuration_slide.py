"""Configuration of the slide encoder: a TITAN-style ViT over the 2D grid of patch features."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

POSITION_ENCODINGS = ("alibi_2d", "none")
POOLINGS = ("cls", "mean")


class SlideEncoderConfig(PretrainedConfig):
    """Configuration of :class:`~reportkd.vlm.slide.modeling_slide.SlideEncoderModel`.

    Positions enter only through the 2D ALiBi attention bias (``-slope_h * euclidean grid distance``), so there is no
    positional table to outgrow: a model trained on small crops runs on whole slides of any size.

    Args:
        input_dim: Width of the patch features (768 for CONCH v1.5, 1024 for UNI…).
        hidden_size: Transformer width.
        num_hidden_layers: Transformer blocks.
        num_attention_heads: Attention heads (each gets its own ALiBi slope).
        intermediate_size: MLP width (default ``4 * hidden_size``).
        hidden_act: MLP activation (``"gelu"``, ``"silu"``…).
        hidden_dropout_prob: Dropout on the input projection, residual branches and MLP.
        attention_dropout: Dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        qkv_bias: Bias in the query / key / value projection.
        use_cls_token: Prepend a learned CLS token (no position: no ALiBi bias to or from it).
        pooling: Slide embedding: ``"cls"`` (needs ``use_cls_token``) or ``"mean"`` (masked mean of patch tokens).
        position_encoding: ``"alibi_2d"`` or ``"none"`` (ablation: a bag of patches).
        alibi_slopes: Per-head slopes; default the ALiBi geometric sequence ``2 ** (-8 * (h + 1) / H)``.
        patch_size_level0: Informational: grid stride of the features the model was trained on (level-0 pixels).
        patch_encoder: Informational: name of the patch encoder of the training features.
        initializer_range: Standard deviation of the weight initialisation.
        **kwargs: ``PretrainedConfig`` arguments.
    """

    model_type = "reportkd_slide_encoder"

    def __init__(
        self,
        input_dim: int = 768,
        hidden_size: int = 384,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 6,
        intermediate_size: int | None = None,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        use_cls_token: bool = True,
        pooling: str = "cls",
        position_encoding: str = "alibi_2d",
        alibi_slopes: list[float] | None = None,
        patch_size_level0: int | None = None,
        patch_encoder: str | None = None,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_attention_heads})."
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if pooling == "cls" and not use_cls_token:
            raise ValueError("pooling='cls' needs use_cls_token=True; set pooling='mean' for a model without CLS.")
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}.")
        if alibi_slopes is not None and len(alibi_slopes) != num_attention_heads:
            raise ValueError(
                f"alibi_slopes has {len(alibi_slopes)} values for {num_attention_heads} heads: give one per head."
            )
        for name, p in (("hidden_dropout_prob", hidden_dropout_prob), ("attention_dropout", attention_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}.")
        self.input_dim = input_dim
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_dropout = attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.use_cls_token = use_cls_token
        self.pooling = pooling
        self.position_encoding = position_encoding
        self.alibi_slopes = [float(s) for s in alibi_slopes] if alibi_slopes is not None else None
        self.patch_size_level0 = patch_size_level0
        self.patch_encoder = patch_encoder
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


# save_pretrained copies this file into the folder and records it in auto_map (plain-transformers loading).
SlideEncoderConfig.register_for_auto_class()
