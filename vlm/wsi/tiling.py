"""Patch grids: square patches at a target resolution, kept where the tissue mask covers enough of them.

The grid is laid out in level-0 pixels with a stride of ``patch_size_level0 = round(patch_size * target_mpp /
slide_mpp)``. Patches are read from the coarsest pyramid level that still has at least the target resolution
(``level``, ``read_size`` pixels there) and resized to ``patch_size``. Magnification ``M`` means ``10 / M`` µm/px
(20x = 0.5 µm/px, 40x = 0.25), the usual convention.

Coordinates are saved once per slide (``reportkd.coords.v1``, safetensors: no pickle) and reused by every
encoder, so features of different encoders line up patch for patch.

Example::

    from reportkd.vlm.wsi import make_patch_grid, open_slide, save_patch_grid
    with open_slide("slide.svs") as slide:
        grid = make_patch_grid(slide, patch_size=224, target_mpp=0.5, tissue_threshold=0.25)
    save_patch_grid("coords/slide.safetensors", grid)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import save_file

from reportkd.utils import atomic_path

from .reader import MissingMPPError, SlideReader, missing_mpp_message
from .tissue import TissueMask, compute_tissue_mask

logger = logging.getLogger(__name__)

COORDS_FORMAT = "reportkd.coords.v1"
DEFAULT_TARGET_MPP = 0.5


def resolve_target_mpp(target_mpp: float | None = None, magnification: float | None = None) -> float:
    """The target µm/px from either ``target_mpp`` or ``magnification`` (10 / M); 0.5 (20x) when neither is set."""
    if target_mpp is not None and magnification is not None:
        raise ValueError("Give either a target µm/px (--target-mpp) or a magnification (--magnification), not both.")
    if magnification is not None:
        if not magnification > 0:
            raise ValueError(f"magnification must be positive (e.g. 20 for 20x), got {magnification}")
        return 10.0 / float(magnification)
    mpp = DEFAULT_TARGET_MPP if target_mpp is None else float(target_mpp)
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"target µm/px must be positive (e.g. 0.5 for 20x), got {target_mpp}")
    return mpp


@dataclass
class PatchGrid:
    """Tissue patches of one slide.

    Args:
        coords: (N, 2) int64 top-left (x, y) in level-0 pixels.
        tissue_fraction: (N,) float32 tissue share of each patch.
        patch_size: Patch side in pixels at the target resolution (what the encoder's transform receives).
        patch_size_level0: Patch side (and grid stride) in level-0 pixels.
        level: Pyramid level the patches are read from.
        read_size: Patch side in pixels of ``level``; resized to ``patch_size`` after reading.
        target_mpp: µm/px of the patches.
        slide_mpp: Level-0 µm/px of the slide.
        tissue_threshold: Minimal tissue fraction of a kept patch.
        slide_id: Slide name.
        metadata: Reader, µm/px source, mask threshold, slide size (JSON-serialisable).
    """

    coords: np.ndarray
    tissue_fraction: np.ndarray
    patch_size: int
    patch_size_level0: int
    level: int
    read_size: int
    target_mpp: float
    slide_mpp: float
    tissue_threshold: float
    slide_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.int64).reshape(-1, 2)
        self.tissue_fraction = np.asarray(self.tissue_fraction, dtype=np.float32).reshape(-1)
        if len(self.tissue_fraction) != len(self.coords):
            raise ValueError(f"{len(self.coords)} coords but {len(self.tissue_fraction)} tissue fractions")

    def __len__(self) -> int:
        return len(self.coords)

    def settings(self) -> dict[str, Any]:
        """The parameters two grids must share to be interchangeable."""
        return {
            "patch_size": int(self.patch_size),
            "target_mpp": float(self.target_mpp),
            "slide_mpp": float(self.slide_mpp),
            "tissue_threshold": float(self.tissue_threshold),
        }

    def matches(self, **settings: Any) -> bool:
        """True when this grid was made with ``settings`` (floats compared to 1e-6 relative)."""
        mine = self.settings()
        for k, v in settings.items():
            a = mine.get(k)
            if isinstance(a, float) or isinstance(v, float):
                if a is None or v is None or not math.isclose(float(a), float(v), rel_tol=1e-6, abs_tol=1e-9):
                    return False
            elif a != v:
                return False
        return True

    def feature_metadata(self) -> dict[str, Any]:
        """Keys a features file records about its patches."""
        return {
            "patch_size": int(self.patch_size),
            "target_mpp": float(self.target_mpp),
            "slide_mpp": float(self.slide_mpp),
            "magnification": round(10.0 / self.target_mpp, 4),
            "level": int(self.level),
            "read_size": int(self.read_size),
            "tissue_threshold": float(self.tissue_threshold),
            **{k: self.metadata[k] for k in ("reader", "mpp_source") if k in self.metadata},
        }


def make_patch_grid(
    reader: SlideReader,
    *,
    patch_size: int = 224,
    target_mpp: float | None = None,
    magnification: float | None = None,
    tissue_threshold: float = 0.25,
    mask: TissueMask | None = None,
    mask_size: int = 1024,
    slide_id: str = "",
) -> PatchGrid:
    """The tissue patches of a slide at a target resolution.

    Args:
        reader: An open slide; its ``mpp`` must be known.
        patch_size: Patch side in pixels at the target resolution.
        target_mpp: Target µm/px (default 0.5); exclusive with ``magnification``.
        magnification: Target magnification (20 → 0.5 µm/px).
        tissue_threshold: Keep patches whose tissue fraction is at least this (0 keeps every patch).
        mask: A precomputed tissue mask; computed from a thumbnail otherwise.
        mask_size: Longer side of the thumbnail the mask is computed on.
        slide_id: Slide name stored with the grid (file stem by default).

    Raises:
        MissingMPPError: The slide's µm/px is unknown (pass ``mpp=`` to ``open_slide`` / ``--mpp``).
    """
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    if not 0.0 <= tissue_threshold <= 1.0:
        raise ValueError(f"tissue_threshold must be in [0, 1], got {tissue_threshold}")
    target = resolve_target_mpp(target_mpp, magnification)
    if reader.mpp is None:
        raise MissingMPPError(missing_mpp_message(reader.path.name, reader.backend))
    scale = target / reader.mpp  # level-0 pixels per target pixel
    if scale < 1 - 1e-3:
        logger.warning(
            "%s: target %.3f µm/px is finer than the scan (%.3f); patches are upsampled",
            reader.path,
            target,
            reader.mpp,
        )
    size0 = max(1, int(round(patch_size * scale)))
    level = reader.best_level_for_downsample(scale)
    read_size = max(1, int(round(size0 / reader.level_downsamples[level])))
    w0, h0 = reader.dimensions
    xs, ys = np.arange(0, w0 - size0 + 1, size0), np.arange(0, h0 - size0 + 1, size0)
    coords = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2).astype(np.int64)
    if mask is None:
        mask = compute_tissue_mask(reader, max_size=mask_size)
    fraction = mask.fraction_in_boxes(coords, size0) if len(coords) else np.zeros(0, np.float32)
    keep = fraction >= tissue_threshold
    return PatchGrid(
        coords=coords[keep],
        tissue_fraction=fraction[keep],
        patch_size=int(patch_size),
        patch_size_level0=size0,
        level=level,
        read_size=read_size,
        target_mpp=target,
        slide_mpp=float(reader.mpp),
        tissue_threshold=float(tissue_threshold),
        slide_id=slide_id or reader.path.stem,
        metadata={
            "reader": reader.backend,
            "mpp_source": reader.mpp_source,
            "level0_size": list(reader.dimensions),
            "mask_threshold": round(float(mask.threshold), 6),
            "tissue_share": round(float(mask.mask.mean()), 6),
            "grid_patches": int(len(coords)),
        },
    )


def save_patch_grid(path: str | Path, grid: PatchGrid) -> Path:
    """Writes a grid atomically as safetensors (``coords``, ``tissue_fraction`` + JSON header values)."""
    meta = {
        "format": COORDS_FORMAT,
        "slide_id": grid.slide_id,
        "patch_size": str(grid.patch_size),
        "patch_size_level0": str(grid.patch_size_level0),
        "level": str(grid.level),
        "read_size": str(grid.read_size),
        "target_mpp": repr(float(grid.target_mpp)),
        "slide_mpp": repr(float(grid.slide_mpp)),
        "tissue_threshold": repr(float(grid.tissue_threshold)),
        "metadata": json.dumps(grid.metadata),
    }
    tensors = {
        "coords": torch.from_numpy(np.ascontiguousarray(grid.coords)),
        "tissue_fraction": torch.from_numpy(np.ascontiguousarray(grid.tissue_fraction)),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_patch_grid(path: str | Path) -> PatchGrid:
    """Reads a grid written by :func:`save_patch_grid` (refuses other files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Coordinates file {path} does not exist.")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != COORDS_FORMAT:
            raise ValueError(
                f"{path} is not a reportkd coordinates file (format={meta.get('format')!r}, expected "
                f"{COORDS_FORMAT!r}); write it with save_patch_grid or `reportkd extract`."
            )
        coords, fraction = f.get_tensor("coords").numpy(), f.get_tensor("tissue_fraction").numpy()
    return PatchGrid(
        coords=coords,
        tissue_fraction=fraction,
        patch_size=int(meta["patch_size"]),
        patch_size_level0=int(meta["patch_size_level0"]),
        level=int(meta["level"]),
        read_size=int(meta["read_size"]),
        target_mpp=float(meta["target_mpp"]),
        slide_mpp=float(meta["slide_mpp"]),
        tissue_threshold=float(meta["tissue_threshold"]),
        slide_id=meta.get("slide_id", ""),
        metadata=json.loads(meta.get("metadata", "{}")),
    )


def render_patch_grid(
    reader: SlideReader, grid: PatchGrid, *, mask: TissueMask | None = None, max_size: int = 1024
) -> Image.Image:
    """A thumbnail with the tissue mask tinted green and the kept patches outlined (a visual check).

    Args:
        reader: The open slide.
        grid: Its patch grid.
        mask: Its tissue mask (resized to the thumbnail); omitted: only the patches are drawn.
        max_size: Longer side of the picture in pixels.
    """
    thumb = Image.fromarray(reader.get_thumbnail(max_size)).convert("RGB")
    w0, h0 = reader.dimensions
    sx, sy = thumb.width / w0, thumb.height / h0
    if mask is not None:
        m = Image.fromarray(mask.mask.astype(np.uint8) * 255).resize(thumb.size, Image.Resampling.NEAREST)
        tint = Image.new("RGB", thumb.size, (0, 170, 0))
        thumb = Image.composite(Image.blend(thumb, tint, 0.35), thumb, m)
    draw = ImageDraw.Draw(thumb)
    for x, y in grid.coords:
        box = (x * sx, y * sy, (x + grid.patch_size_level0) * sx, (y + grid.patch_size_level0) * sy)
        draw.rectangle(box, outline=(20, 20, 200), width=1)
    return thumb
