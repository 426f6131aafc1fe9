"""Evaluation transforms of patch encoders: resize, centre crop, scale to [0, 1], normalise (PIL or array → tensor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class PatchTransform:
    """PIL image (or (H, W, 3) uint8 array) → normalised (3, crop, crop) float32 tensor.

    Args:
        size: Shorter side after resizing; None keeps the patch size (no resize).
        crop: Centre-crop side; None means ``size`` (or no crop when ``size`` is None).
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        interpolation: "bilinear", "bicubic", "lanczos" or "nearest".
    """

    size: int | None = 224
    crop: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")

    @property
    def output_size(self) -> int | None:
        """Side of the tensor this returns (None: the input's)."""
        return self.crop or self.size

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.size is not None and min(img.size) != self.size:
            w, h = img.size
            s = self.size / min(w, h)
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), _RESAMPLE[self.interpolation])
        crop = self.crop or self.size
        if crop is not None and img.size != (crop, crop):
            left, top = (img.width - crop) // 2, (img.height - crop) // 2
            img = img.crop((left, top, left + crop, top + crop))
        # numpy, single-threaded: per-patch torch ops would wake the intra-op thread pool for tiny tensors
        scale = (1.0 / (255.0 * np.asarray(self.std, dtype=np.float32))).reshape(3, 1, 1)
        shift = (-np.asarray(self.mean, dtype=np.float32) / np.asarray(self.std, dtype=np.float32)).reshape(3, 1, 1)
        chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw * scale + shift, dtype=np.float32))
