"""Vision-language distillation: image-text alignment (open_clip) and whole-slide encoders."""
