"""Tissue masks: Otsu threshold on the HSV saturation of a thumbnail, hole filling, small-object removal.

Stained tissue is coloured (high saturation); glass, background and most dust are grey or white (low saturation).
The threshold is Otsu's on the median-filtered saturation, floored at ``min_saturation`` so an almost empty slide
does not split its background noise into "tissue". numpy + scipy only.

Example::

    from reportkd.vlm.wsi import open_slide, compute_tissue_mask
    with open_slide("slide.svs") as slide:
        tm = compute_tissue_mask(slide)
    tm.mask.mean()  # tissue share of the slide
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .reader import SlideReader


@dataclass
class TissueMask:
    """A boolean tissue mask over the whole slide at thumbnail resolution.

    Args:
        mask: (h, w) bool, True on tissue.
        scale: (sx, sy) level-0 pixels per mask pixel.
        threshold: The saturation threshold (0-1) that produced it.
    """

    mask: np.ndarray
    scale: tuple[float, float]
    threshold: float

    def fraction_in_boxes(self, coords: np.ndarray, size_level0: float) -> np.ndarray:
        """Tissue fraction (0-1) inside each square box.

        Args:
            coords: (N, 2) top-left (x, y) of the boxes in level-0 pixels.
            size_level0: Box side in level-0 pixels.
        """
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        h, w = self.mask.shape
        integral = np.zeros((h + 1, w + 1), np.int64)
        integral[1:, 1:] = np.cumsum(np.cumsum(self.mask, axis=0, dtype=np.int64), axis=1)
        sx, sy = self.scale
        x0 = np.clip(np.round(coords[:, 0] / sx).astype(np.int64), 0, w - 1)
        y0 = np.clip(np.round(coords[:, 1] / sy).astype(np.int64), 0, h - 1)
        x1 = np.clip(np.maximum(np.round((coords[:, 0] + size_level0) / sx).astype(np.int64), x0 + 1), 1, w)
        y1 = np.clip(np.maximum(np.round((coords[:, 1] + size_level0) / sy).astype(np.int64), y0 + 1), 1, h)
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return (inside / ((x1 - x0) * (y1 - y0))).astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: the cut maximising the between-class variance."""
    hist, edges = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=bins, range=(0.0, 1.0))
    if hist.sum() == 0:
        return 0.5
    p = hist / hist.sum()
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centers)
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    if between.max() <= 0:  # a single grey level: no split
        return float(edges[int(np.argmax(hist)) + 1])
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # ties: the middle of the best plateau
    return float(edges[int(round((best[0] + best[-1]) / 2)) + 1])


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an (h, w, 3) uint8 RGB image."""
    rgb = np.asarray(rgb, dtype=np.float32)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).astype(np.float32)


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    *,
    min_saturation: float = 0.05,
    min_value: float = 0.08,
    median_size: int = 5,
    fill_holes: bool = True,
    min_object_fraction: float = 5e-4,
) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of a thumbnail and the saturation threshold used.

    Args:
        rgb: (h, w, 3) uint8 RGB thumbnail.
        min_saturation: Floor of the Otsu threshold (keeps near-empty slides empty).
        min_value: Pixels darker than this HSV value (black borders, scanner artefacts) are background.
        median_size: Median-filter window on the saturation (removes salt-and-pepper noise); 0 or 1 disables.
        fill_holes: Fill holes enclosed by tissue (lumens, fat vacuoles).
        min_object_fraction: Connected components smaller than this share of the thumbnail are dropped.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {rgb.shape}")
    sat = saturation(rgb[..., :3])
    if median_size and median_size > 1:
        sat = ndimage.median_filter(sat, size=median_size)
    threshold = max(otsu_threshold(sat), float(min_saturation))
    value = rgb[..., :3].max(axis=2) / 255.0
    mask = (sat > threshold) & (value > min_value)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3), bool), iterations=2, border_value=0) | mask
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if min_object_fraction > 0 and mask.any():
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= max(1.0, min_object_fraction * mask.size)
        keep[0] = False
        mask = keep[labels]
    return mask.astype(bool), threshold


def compute_tissue_mask(reader: SlideReader, *, max_size: int = 1024, **kwargs) -> TissueMask:
    """Tissue mask of a slide from a thumbnail whose longer side is at most ``max_size``.

    Args:
        reader: An open slide (:func:`~reportkd.vlm.wsi.open_slide`).
        max_size: Longer side of the thumbnail in pixels.
        **kwargs: Passed to :func:`tissue_mask_from_rgb`.
    """
    thumb = reader.get_thumbnail(max_size)
    mask, threshold = tissue_mask_from_rgb(thumb, **kwargs)
    w0, h0 = reader.dimensions
    return TissueMask(mask=mask, scale=(w0 / mask.shape[1], h0 / mask.shape[0]), threshold=threshold)
