"""Synthetic slides at the feature level: class-structured patch-feature grids with reports (no images needed).

A :class:`SyntheticSlideWorld` fixes the "biology" shared by every data set drawn with the same ``world_seed``:
class prototypes of tumour patches, tissue-type prototypes of the rest, and a fixed random "coarse encoder". Each
slide then has

- a ragged fine grid (sides ``min_side..max_side``) with an elliptic tissue outline and background holes;
- tissue-type regions (nearest of a few random seeds) and one tumour blob whose patches carry the class prototype;
- a coarse grid (``coarse_factor`` x ``coarse_factor`` fine cells per coarse cell, e.g. 4x fewer patches): a fixed
  random non-linear "encoder" of each region (a mix of the region's mean plus a position-specific term of its
  concatenated cells, background cells as zeros) plus noise, so a coarse patch is a lossy non-linear view of its
  region, not its average;
- a report naming the class, with the tumour extent and filler sentences.

Fine patches are 512 level-0 pixels apart (20x), coarse ones ``512 * coarse_factor``; each slide sits at a random
origin, as real slides do. :func:`write_synthetic_slides` writes ``fine/`` and ``coarse/`` features files (the
``reportkd.features.v1`` format of ``reportkd extract``) and a ``labels.csv`` for the command-line tools.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..wsi.features import SlideFeatures, save_slide_features

CLASS_NAMES: tuple[str, ...] = (
    "adenocarcinoma",
    "squamous cell carcinoma",
    "neuroendocrine carcinoma",
    "lymphoma",
    "sarcoma",
    "melanoma",
    "mesothelioma",
    "germ cell tumour",
)
TEMPLATES: tuple[str, ...] = ("a whole-slide image of {}.", "histopathology slide showing {}.", "diagnosis: {}.")
FILLER = (
    "Margins are clear.",
    "Lymphovascular invasion is not identified.",
    "The specimen was received in formalin.",
    "Sections show a solid growth pattern.",
    "Necrosis is focally present.",
    "Immunohistochemistry supports the diagnosis.",
    "The background tissue shows chronic inflammation.",
)
FINE_PATCH_SIZE = 512


@dataclass
class SyntheticSlideWorld:
    """Fixed class and tissue prototypes and the coarse encoder of one synthetic "world".

    Args:
        num_classes: Number of diagnoses (at most ``len(CLASS_NAMES)``).
        dim: Fine patch-feature width.
        coarse_dim: Coarse patch-feature width (default ``dim``).
        coarse_factor: Fine cells per coarse cell along each side.
        num_tissue_types: Non-tumour tissue prototypes.
        class_separation: Distance scale between the class prototypes (lower is harder).
        seed: World seed: data sets drawn with the same world share classes and encoder.
    """

    num_classes: int = 4
    dim: int = 32
    coarse_dim: int | None = None
    coarse_factor: int = 2
    num_tissue_types: int = 4
    class_separation: float = 0.6
    seed: int = 1234
    class_prototypes: np.ndarray = field(init=False, repr=False)
    tissue_prototypes: np.ndarray = field(init=False, repr=False)
    coarse_mix: np.ndarray = field(init=False, repr=False)
    coarse_weight: np.ndarray = field(init=False, repr=False)
    coarse_bias: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(CLASS_NAMES):
            raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {self.num_classes}.")
        if self.coarse_factor < 1:
            raise ValueError(f"coarse_factor must be >= 1, got {self.coarse_factor}.")
        self.coarse_dim = self.coarse_dim or self.dim
        rng = np.random.default_rng(self.seed)
        tumour = rng.normal(size=self.dim)
        self.class_prototypes = tumour + self.class_separation * rng.normal(size=(self.num_classes, self.dim))
        self.tissue_prototypes = rng.normal(size=(self.num_tissue_types, self.dim))
        fan_in = self.coarse_factor**2 * self.dim
        self.coarse_mix = rng.normal(size=(self.dim, self.coarse_dim)) / math.sqrt(self.dim)
        self.coarse_weight = rng.normal(size=(fan_in, self.coarse_dim)) / math.sqrt(fan_in)
        self.coarse_bias = rng.normal(size=self.coarse_dim) * 0.1

    def encode_coarse(self, regions: np.ndarray, present: np.ndarray) -> np.ndarray:
        """The fixed coarse "encoder": ``tanh`` of a random mix of the region's mean plus a position-specific
        ``tanh`` of the concatenated cells (background cells are zeros).

        Args:
            regions: ``(R, f * f, dim)`` fine features of each region.
            present: ``(R, f * f)`` which cells are tissue.
        """
        mean = (regions * present[..., None]).sum(1) / present.sum(1, keepdims=True)
        local = regions.reshape(len(regions), -1) @ self.coarse_weight + self.coarse_bias
        return np.tanh(0.5 * mean @ self.coarse_mix) + 0.5 * np.tanh(local)

    @property
    def classes(self) -> list[str]:
        return list(CLASS_NAMES[: self.num_classes])


@dataclass
class SyntheticSlide:
    """One synthetic slide: fine and coarse patch features, label and report."""

    slide_id: str
    fine: SlideFeatures
    coarse: SlideFeatures
    label: int
    class_name: str
    report: str


def _tissue_mask(h: int, w: int, holes: float, rng: np.random.Generator) -> np.ndarray:
    i, j = np.mgrid[:h, :w]
    cy, cx = (h - 1) / 2 + rng.uniform(-0.5, 0.5), (w - 1) / 2 + rng.uniform(-0.5, 0.5)
    ry, rx = h / 2 * rng.uniform(0.8, 1.1), w / 2 * rng.uniform(0.8, 1.1)
    mask = ((i - cy) / ry) ** 2 + ((j - cx) / rx) ** 2 <= 1.0
    mask &= rng.random((h, w)) >= holes
    if mask.sum() < 4:
        mask[:] = True
    return mask


def make_synthetic_slide(
    index: int,
    world: SyntheticSlideWorld,
    rng: np.random.Generator,
    *,
    min_side: int = 6,
    max_side: int = 12,
    holes: float = 0.1,
    tumour_fraction: tuple[float, float] = (0.2, 0.5),
    noise: float = 1.0,
    coarse_noise: float = 0.2,
    label: int | None = None,
) -> SyntheticSlide:
    """Draws one slide of ``world`` (see the module docstring; arguments as in :func:`make_synthetic_slides`)."""
    label = int(rng.integers(world.num_classes)) if label is None else label
    h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    tissue = _tissue_mask(h, w, holes, rng)
    cells = np.argwhere(tissue)  # (N, 2) rows of (row, col)
    seeds = cells[rng.integers(len(cells), size=3)]
    kinds = rng.integers(world.num_tissue_types, size=3)
    nearest = ((cells[:, None, :] - seeds[None]) ** 2).sum(-1).argmin(1)
    centre = cells[rng.integers(len(cells))]
    frac = rng.uniform(*tumour_fraction)
    radius = math.sqrt(frac * len(cells) / math.pi)
    tumour = np.sqrt(((cells - centre) ** 2).sum(-1)) <= max(radius, 0.5)
    feats = world.tissue_prototypes[kinds[nearest]].copy()
    feats[tumour] = 0.5 * feats[tumour] + world.class_prototypes[label]
    feats += noise * rng.normal(size=feats.shape) + 0.3 * rng.normal(size=world.dim)  # patch noise + stain shift
    f = world.coarse_factor
    origin = rng.integers(0, 50, 2) * f * FINE_PATCH_SIZE  # (x, y) of the grid's top-left in level-0 pixels
    coords = cells[:, ::-1] * FINE_PATCH_SIZE + origin  # (x, y) = (col, row)
    # coarse grid: each region of f x f fine cells, concatenated in a fixed order (zeros for background)
    dense = np.zeros((math.ceil(h / f) * f, math.ceil(w / f) * f, world.dim))
    dense[cells[:, 0], cells[:, 1]] = feats
    present = np.zeros(dense.shape[:2], dtype=bool)
    present[cells[:, 0], cells[:, 1]] = True
    hc, wc = dense.shape[0] // f, dense.shape[1] // f
    regions = dense.reshape(hc, f, wc, f, world.dim).transpose(0, 2, 1, 3, 4).reshape(hc, wc, f * f, world.dim)
    cell_present = present.reshape(hc, f, wc, f).transpose(0, 2, 1, 3).reshape(hc, wc, f * f)
    keep = cell_present.any(-1)
    coarse_cells = np.argwhere(keep)
    coarse = world.encode_coarse(regions[keep], cell_present[keep])
    coarse += coarse_noise * rng.normal(size=coarse.shape)
    coarse_coords = coarse_cells[:, ::-1] * f * FINE_PATCH_SIZE + origin
    slide_id = f"synthetic-{index:05d}"
    name = world.classes[label]
    pct = int(round(100 * tumour.mean()))
    extra = " ".join(rng.choice(FILLER, size=2, replace=False))
    report = f"Diagnosis: {name}. The tumour involves about {pct}% of the tissue. {extra}"
    meta = {"class_name": name, "grid": "fine"}
    fine_sf = SlideFeatures(
        torch.tensor(feats, dtype=torch.float32),
        torch.tensor(coords, dtype=torch.long),
        FINE_PATCH_SIZE,
        slide_id=slide_id,
        encoder="synthetic-fine",
        metadata=meta,
    )
    coarse_sf = SlideFeatures(
        torch.tensor(coarse, dtype=torch.float32),
        torch.tensor(coarse_coords, dtype=torch.long),
        FINE_PATCH_SIZE * f,
        slide_id=slide_id,
        encoder="synthetic-coarse",
        metadata={**meta, "grid": "coarse"},
    )
    return SyntheticSlide(slide_id, fine_sf, coarse_sf, label, name, report)


def make_synthetic_slides(
    n: int,
    *,
    seed: int = 0,
    world: SyntheticSlideWorld | None = None,
    min_side: int = 6,
    max_side: int = 12,
    holes: float = 0.1,
    tumour_fraction: tuple[float, float] = (0.2, 0.5),
    noise: float = 1.0,
    coarse_noise: float = 0.2,
    balanced: bool = True,
) -> list[SyntheticSlide]:
    """``n`` synthetic slides of ``world`` (default world: 4 classes, 32-d features, 2x2 coarse regions).

    Args:
        n: Number of slides.
        seed: Sampling seed (use different seeds for training and evaluation sets of one world).
        world: The shared prototypes / coarse encoder; default ``SyntheticSlideWorld()``.
        min_side: Smallest fine-grid side.
        max_side: Largest fine-grid side.
        holes: Probability that a cell inside the tissue outline is background.
        tumour_fraction: Range of the tumour blob's share of the tissue.
        noise: Per-patch feature noise (standard deviation per dimension).
        coarse_noise: Noise added by the coarse "encoder".
        balanced: Cycle through the classes (else draw labels at random).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if not 1 <= min_side <= max_side:
        raise ValueError(f"Need 1 <= min_side <= max_side, got {min_side} and {max_side}.")
    world = world or SyntheticSlideWorld()
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    return [
        make_synthetic_slide(
            i,
            world,
            rng,
            min_side=min_side,
            max_side=max_side,
            holes=holes,
            tumour_fraction=tumour_fraction,
            noise=noise,
            coarse_noise=coarse_noise,
            label=int(order[i] % world.num_classes) if balanced else None,
        )
        for i in range(n)
    ]


def write_synthetic_slides(
    root: str | Path, n: int = 120, *, splits: tuple[float, float, float] = (0.6, 0.2, 0.2), **kwargs
) -> Path:
    """Writes ``root/fine/*.safetensors``, ``root/coarse/*.safetensors`` and ``root/labels.csv``.

    ``labels.csv`` has the columns ``slide_id,label,split,report`` (label = class name; splits train / val / test
    in the given proportions, in slide order).

    Args:
        root: Output folder.
        n: Number of slides.
        splits: Train / val / test shares.
        **kwargs: :func:`make_synthetic_slides` arguments (``seed``, ``world``…).
    """
    root = Path(root)
    slides = make_synthetic_slides(n, **kwargs)
    bounds = np.cumsum(np.asarray(splits, dtype=float) / sum(splits)) * n
    rows = []
    for i, s in enumerate(slides):
        save_slide_features(root / "fine" / f"{s.slide_id}.safetensors", s.fine)
        save_slide_features(root / "coarse" / f"{s.slide_id}.safetensors", s.coarse)
        split = ("train", "val", "test")[int(np.searchsorted(bounds, i, side="right"))]
        rows.append({"slide_id": s.slide_id, "label": s.class_name, "split": split, "report": s.report})
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["slide_id", "label", "split", "report"])
        writer.writeheader()
        writer.writerows(rows)
    return root
