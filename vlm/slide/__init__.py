"""Whole-slide encoders over patch-feature grids: TITAN-style 2D-ALiBi ViT, slide-report alignment, distillation.

Importing this package registers :class:`SlideEncoderConfig` / :class:`SlideEncoderModel` with ``AutoConfig`` /
``AutoModel`` (``model_type="reportkd_slide_encoder"``), so ``AutoModel.from_pretrained(DIR)`` loads a saved encoder,
and the ``slide_encoder`` model kind with ``reportkd.hub`` (model cards and ``push_to_hub`` of saved folders).
"""

from .configuration_slide import SlideEncoderConfig
from .model_kind import register_kinds
from .modeling_slide import SlideEncoderModel, SlideEncoderOutput, alibi_2d_bias, alibi_slopes, register_auto_classes

register_auto_classes()
register_kinds()  # the slide_encoder model kind and slide methods of reportkd.hub (cards, push)

__all__ = [
    "SlideEncoderConfig",
    "SlideEncoderModel",
    "SlideEncoderOutput",
    "alibi_2d_bias",
    "alibi_slopes",
]
