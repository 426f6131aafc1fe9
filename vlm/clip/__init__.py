"""Image-text alignment distillation for open_clip models (CLIP-KD, TinyCLIP, M3AE-Distill style losses)."""
