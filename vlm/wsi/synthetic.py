"""A synthetic whole-slide image the package writes itself: the embedded default for demos and tests.

``write_synthetic_slide`` draws H&E-like tissue (pink stroma with purple nuclei, a few white lumens) on a white
background and saves it as a tiled, pyramidal TIFF with the level-0 µm/px in the resolution tags. OpenSlide
(generic TIFF), tiffslide and PIL all read it, and all three report its µm/px, so no download is needed.

Example::

    from reportkd.vlm.wsi import write_synthetic_slide
    write_synthetic_slide("demo/slide-0.tif", size=(4096, 3072), mpp=0.5, seed=0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from reportkd.utils import atomic_path

BACKGROUND = np.array([243, 243, 241], np.float32)
STROMA = np.array([232, 150, 190], np.float32)
NUCLEUS = np.array([95, 55, 145], np.float32)


def synthetic_slide_rgb(size: tuple[int, int] = (2048, 1536), *, seed: int = 0, tissue: float = 0.35) -> np.ndarray:
    """The level-0 RGB array (height, width, 3) uint8 of a synthetic slide.

    Args:
        size: (width, height) in pixels.
        seed: Random seed (same seed, same image).
        tissue: Approximate share of the slide covered by tissue.
    """
    w, h = int(size[0]), int(size[1])
    if w < 64 or h < 64:
        raise ValueError(f"size must be at least 64x64 pixels, got {size}")
    rng = np.random.default_rng(seed)
    # Tissue shape: smooth random field at 1/16 resolution, thresholded at the requested coverage.
    sw, sh = max(8, w // 16), max(8, h // 16)
    field = ndimage.gaussian_filter(rng.standard_normal((sh, sw)), sigma=max(sw, sh) / 10)
    yy, xx = np.mgrid[0:sh, 0:sw]
    field -= 0.6 * field.std() * (((xx / sw - 0.5) ** 2 + (yy / sh - 0.5) ** 2) * 4)  # tissue towards the centre
    small = field > np.quantile(field, 1 - tissue)
    small = ndimage.binary_opening(small, iterations=1)
    for _ in range(3):  # lumens: holes inside the tissue that hole filling closes again
        ys, xs = np.nonzero(ndimage.binary_erosion(small, iterations=3))
        if len(ys):
            k = rng.integers(len(ys))
            r = max(1.5, min(sw, sh) / 40)
            small &= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 > r * r
    mask = np.asarray(Image.fromarray(small.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR)) > 127
    # Stain: stroma colour with low-frequency variation, nuclei as dark discs, pixel noise everywhere.
    shade = ndimage.zoom(rng.normal(0, 12, (sh, sw)), (h / sh, w / sw), order=1)[:h, :w]
    shade = np.pad(shade, ((0, h - shade.shape[0]), (0, w - shade.shape[1])), mode="edge")
    img = np.where(mask[..., None], STROMA + shade[..., None] * np.array([0.3, 1.0, 0.6], np.float32), BACKGROUND)
    seeds = (rng.random((h, w)) < 0.004) & mask
    nuclei = ndimage.maximum_filter(seeds, size=5)
    img[nuclei] = NUCLEUS + rng.normal(0, 10, (int(nuclei.sum()), 3))
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_slide(
    path: str | Path,
    *,
    size: tuple[int, int] = (2048, 1536),
    mpp: float = 0.5,
    levels: int = 3,
    tile_size: int = 256,
    seed: int = 0,
    tissue: float = 0.35,
    compression: str = "zlib",
) -> Path:
    """Writes a pyramidal tiled TIFF slide (atomically) and returns its path.

    Args:
        path: Output file (``.tif``).
        size: Level-0 (width, height) in pixels.
        mpp: Level-0 µm/px, stored in the TIFF resolution tags (pixels per centimetre).
        levels: Pyramid levels, each half the size of the previous one.
        tile_size: TIFF tile side (a multiple of 16).
        seed: Random seed of the drawing.
        tissue: Approximate share of the slide covered by tissue.
        compression: TIFF compression understood by tifffile and OpenSlide ("zlib", "jpeg", "none").
    """
    import tifffile

    if tile_size % 16:
        raise ValueError(f"tile_size must be a multiple of 16 (TIFF tiles), got {tile_size}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    img = Image.fromarray(synthetic_slide_rgb(size, seed=seed, tissue=tissue))
    path = Path(path)
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=img.width * img.height * 3 > 2**31) as tw:
            for level in range(levels):
                if level:
                    img = img.reduce(2)
                if min(img.size) < 16:
                    break
                res = 1e4 / (mpp * 2**level)  # pixels per centimetre
                tw.write(
                    np.asarray(img),
                    photometric="rgb",
                    tile=(tile_size, tile_size),
                    compression=None if compression == "none" else compression,
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if level == 0 else 1,
                    description=f"reportkd synthetic slide; mpp={mpp}; seed={seed}" if level == 0 else None,
                    metadata=None,
                )
    return path
