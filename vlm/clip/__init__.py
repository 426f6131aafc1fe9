"""Image-text alignment distillation for open_clip models (CLIP-KD, TinyCLIP, M3AE-Distill style losses)."""

from .model_kind import register_kinds

register_kinds()  # the open_clip model kind of reportkd.hub (cards, push)
