"""Synthetic H&E-like histology tiles with matching captions and class labels (the embedded default data set).

Each tile is drawn from a handful of discrete, visible attributes (tissue class, nuclear density, size and shape,
glands, necrosis, hematoxylin intensity) and rendered with Beer-Lambert stain mixing: hematoxylin and eosin
concentration maps are turned into RGB with the Ruifrok-Johnston optical densities, so colours look like H&E.
The caption describes the same attributes in varied wording (class synonyms, several sentence templates), so a
model has to read the image to match it. ``group`` names the attribute combination: captions with the same group
describe the same content, which retrieval metrics use to count a match.

Everything is deterministic in ``(seed, index)``; tiles render in about a millisecond at 64 px.

Example::

    from reportkd.vlm.synthetic_tiles import SyntheticHistology
    train = SyntheticHistology(2000, image_size=64, seed=0)
    item = train[0]  # {"image": PIL.Image, "caption": str, "label": int, "group": str}
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

CLASSES: tuple[str, ...] = ("adipose", "lymphocytes", "necrosis", "normal mucosa", "stroma", "tumour")

# Names used for zero-shot prompts (averaged over synonyms and templates, as TITAN / CONCH do).
CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "adipose": ("adipose tissue", "fat", "adipocytes"),
    "lymphocytes": ("lymphocytes", "lymphoid aggregate", "dense lymphocytic infiltrate"),
    "necrosis": ("necrosis", "necrotic debris", "tumour necrosis"),
    "normal mucosa": ("normal colonic mucosa", "benign glands", "normal mucosa"),
    "stroma": ("stroma", "fibrous stroma", "desmoplastic stroma"),
    "tumour": ("adenocarcinoma", "tumour", "malignant glandular epithelium"),
}
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "an H&E image of {}.",
    "a histopathology tile showing {}.",
    "{}.",
    "H&E stained section of {}.",
)

# Attribute levels. Each class draws from its own allowed subset (see _CLASS_ATTRIBUTES).
DENSITY = ("sparse", "moderate", "dense")
SIZE = ("small", "medium", "large")
SHAPE = ("round", "elongated", "pleomorphic")
GLANDS = ("no", "few", "many")
NECROSIS = ("absent", "focal", "extensive")
STAIN = ("pale", "standard", "dark")

_CLASS_ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "adipose": {"density": ("sparse",), "size": ("small",), "shape": ("elongated",), "glands": ("no",),
                "necrosis": ("absent",)},
    "lymphocytes": {"density": ("moderate", "dense"), "size": ("small",), "shape": ("round",), "glands": ("no",),
                    "necrosis": ("absent", "focal")},
    "necrosis": {"density": ("sparse", "moderate"), "size": ("small", "medium"), "shape": ("round", "pleomorphic"),
                 "glands": ("no",), "necrosis": ("focal", "extensive")},
    "normal mucosa": {"density": ("sparse", "moderate"), "size": ("small", "medium"), "shape": ("round", "elongated"),
                      "glands": ("few", "many"), "necrosis": ("absent",)},
    "stroma": {"density": ("sparse", "moderate"), "size": ("small", "medium"), "shape": ("elongated",),
               "glands": ("no",), "necrosis": ("absent",)},
    "tumour": {"density": ("moderate", "dense"), "size": ("medium", "large"), "shape": ("elongated", "pleomorphic"),
               "glands": ("few", "many"), "necrosis": ("absent", "focal", "extensive")},
}  # fmt: skip

_CAPTION_CLASS = {
    "adipose": ("adipose tissue", "mature fat", "adipose tissue with large empty adipocytes"),
    "lymphocytes": ("a lymphoid aggregate", "lymphocytes", "a dense lymphocytic infiltrate"),
    "necrosis": ("necrosis", "necrotic debris", "an area of necrosis"),
    "normal mucosa": ("normal colonic mucosa", "benign mucosa", "non-neoplastic mucosa"),
    "stroma": ("fibrous stroma", "collagenous stroma", "stroma"),
    "tumour": ("adenocarcinoma", "invasive adenocarcinoma", "a malignant glandular tumour"),
}
_DENSITY_WORDS = {"sparse": ("sparse", "scattered"), "moderate": ("moderately dense", "moderate"),
                  "dense": ("crowded", "densely packed")}  # fmt: skip
_SIZE_WORDS = {"small": ("small",), "medium": ("medium-sized", "intermediate"), "large": ("large", "enlarged")}
_SHAPE_WORDS = {"round": ("round", "regular round"), "elongated": ("elongated", "spindle-shaped"),
                "pleomorphic": ("pleomorphic", "irregular")}  # fmt: skip
_GLAND_WORDS = {"no": ("no glands", "no glandular structures"), "few": ("a few glands", "scattered glands"),
                "many": ("many glands", "numerous glands")}  # fmt: skip
_NECROSIS_WORDS = {"absent": ("no necrosis", "without necrosis"),
                   "focal": ("focal necrosis", "a small necrotic focus"),
                   "extensive": ("extensive necrosis", "widespread necrosis")}  # fmt: skip
_STAIN_WORDS = {"pale": ("pale", "weak"), "standard": ("standard", "typical"), "dark": ("dark", "strong")}
_TEMPLATES = (
    "H&E tile of {cls}: {density} {size} {shape} nuclei, {glands}, {necrosis}; {stain} hematoxylin staining.",
    "{Cls} with {density} {size} {shape} nuclei, {glands} and {necrosis}. Hematoxylin staining is {stain}.",
    "Histology of {cls}. Nuclei are {density}, {size} and {shape}; {glands}; {necrosis}; {stain} staining.",
)

# Ruifrok & Johnston optical densities (RGB) of hematoxylin and eosin.
_OD_H = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_OD_E = np.array([0.07, 0.99, 0.11], dtype=np.float32)


def sample_attributes(rng: np.random.Generator, label: int) -> dict[str, Any]:
    """Draws the visible attributes of one tile of class ``CLASSES[label]``.

    Args:
        rng: Random generator.
        label: Class index into :data:`CLASSES`.
    """
    cls = CLASSES[label]
    allowed = _CLASS_ATTRIBUTES[cls]
    attrs: dict[str, Any] = {"class": cls, "label": label}
    for key, levels in allowed.items():
        attrs[key] = levels[rng.integers(len(levels))]
    attrs["stain"] = STAIN[rng.integers(len(STAIN))]
    return attrs


def attribute_group(attrs: dict[str, Any]) -> str:
    """A string naming the attribute combination: tiles in one group have equivalent captions."""
    keys = ("class", "density", "size", "shape", "glands", "necrosis", "stain")
    return "|".join(str(attrs[k]) for k in keys)


def caption_for(attrs: dict[str, Any], rng: np.random.Generator) -> str:
    """A caption describing ``attrs`` with randomly chosen wording.

    Args:
        attrs: Attributes from :func:`sample_attributes`.
        rng: Random generator for the wording.
    """

    def pick(options: tuple[str, ...]) -> str:
        return options[rng.integers(len(options))]

    cls = pick(_CAPTION_CLASS[attrs["class"]])
    words = {
        "cls": cls,
        "Cls": cls[0].upper() + cls[1:],
        "density": pick(_DENSITY_WORDS[attrs["density"]]),
        "size": pick(_SIZE_WORDS[attrs["size"]]),
        "shape": pick(_SHAPE_WORDS[attrs["shape"]]),
        "glands": pick(_GLAND_WORDS[attrs["glands"]]),
        "necrosis": pick(_NECROSIS_WORDS[attrs["necrosis"]]),
        "stain": pick(_STAIN_WORDS[attrs["stain"]]),
    }
    return pick(_TEMPLATES).format(**words)


# ---------------------------------------------------------------------------------------------------------------
# Rendering. Lengths are in "reference pixels" of a 64 px tile and scaled to the requested size.
# ---------------------------------------------------------------------------------------------------------------
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """``(size, cells)`` weights of smooth-step interpolation from a coarse grid to ``size`` samples."""
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (cells - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, cells - 2)
    frac = pos - lo
    frac = frac * frac * (3 - 2 * frac)
    weights = np.zeros((size, cells), np.float32)
    weights[np.arange(size), lo] = 1 - frac
    weights[np.arange(size), lo + 1] = frac
    return weights


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a ``cells x cells`` random grid interpolated to ``size x size``."""
    weights = _interp_matrix(size, cells)
    up = weights @ rng.random((cells, cells), dtype=np.float32) @ weights.T
    lo, hi = up.min(), up.max()
    return (up - lo) / max(hi - lo, 1e-6)


def _blobs(
    canvas: np.ndarray,
    centers: np.ndarray,
    axes: np.ndarray,
    angles: np.ndarray,
    irregularity: np.ndarray,
    values: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Paints soft (optionally irregular) ellipses into ``canvas`` with ``max`` blending, each in its own window."""
    size = canvas.shape[0]
    phases = rng.random((len(centers), 2), dtype=np.float32) * 2 * np.pi
    for (cx, cy), (a, b), ang, eps, val, (p1, p2) in zip(centers, axes, angles, irregularity, values, phases):
        reach = int(np.ceil(max(a, b) * (1 + 2 * eps) + 1.5))
        x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, size)
        y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        c, s = np.cos(ang), np.sin(ang)
        u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
        rho = np.sqrt(u * u + v * v)
        radius = 1.0
        if eps > 0.05:
            phi = np.arctan2(v, u)
            radius = 1 + eps * (np.cos(2 * phi + p1) + np.cos(3 * phi + p2))
        soft = val / (1 + np.exp(np.clip((rho - radius) * 6.0, -30, 30)))
        window = canvas[y0:y1, x0:x1]
        np.maximum(window, soft, out=window)


def _scatter_nuclei(
    rng: np.random.Generator,
    n: int,
    scale: float,
    size_px: float,
    shape: str,
    region: np.ndarray | None,
    size: int,
    orientation: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centres, axes, angles and irregularity of ``n`` nuclei placed where ``region`` (bool map) is True."""
    if region is not None and region.any():
        ys, xs = np.nonzero(region)
        idx = rng.integers(len(xs), size=n)
        centers = np.stack([xs[idx], ys[idx]], 1).astype(np.float32) + rng.random((n, 2), dtype=np.float32)
    else:
        centers = rng.random((n, 2), dtype=np.float32) * size
    r = size_px * scale * (0.85 + 0.3 * rng.random(n, dtype=np.float32))
    if shape == "round":
        ratio, irr = 1.0 + 0.1 * rng.random(n), np.full(n, 0.02)
    elif shape == "elongated":
        ratio, irr = 2.2 + 0.8 * rng.random(n), np.full(n, 0.03)
    else:  # pleomorphic
        ratio, irr = 1.0 + 0.7 * rng.random(n), 0.10 + 0.08 * rng.random(n)
    axes = np.stack([r * np.sqrt(ratio), r / np.sqrt(ratio)], 1).astype(np.float32)
    if orientation is None:
        angles = rng.random(n, dtype=np.float32) * np.pi
    else:
        angles = (orientation + 0.25 * rng.standard_normal(n)).astype(np.float32)
    return centers, axes, angles, irr.astype(np.float32)


_NUCLEUS_RADIUS = {"small": 1.3, "medium": 1.9, "large": 2.6}  # reference px at 64 px
_DENSITY_COUNT = {"sparse": 10, "moderate": 28, "dense": 60}  # nuclei per 64x64 reference tile
_H_LEVEL = {"pale": 0.55, "standard": 0.95, "dark": 1.45}


def render_tile(attrs: dict[str, Any], *, size: int = 64, rng: np.random.Generator) -> np.ndarray:
    """Renders one ``(size, size, 3)`` uint8 RGB tile showing ``attrs``.

    Args:
        attrs: Attributes from :func:`sample_attributes`.
        size: Tile side in pixels (content scales with it; 48 px or more keeps nuclear shape visible).
        rng: Random generator.
    """
    s = size / 64.0
    cls = attrs["class"]
    hema = np.zeros((size, size), np.float32)
    eosin = 0.45 + 0.25 * _smooth_noise(rng, size, 6)
    empty = np.zeros((size, size), np.float32)  # lumens / fat vacuoles (no stain)

    # Stroma fibres: oriented waves modulate eosin; fibrous classes get stronger fibres.
    theta = rng.random() * np.pi
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    along = (xx * np.cos(theta) + yy * np.sin(theta)) / s
    fibre = 0.5 + 0.5 * np.sin(along * 1.3 + 3 * _smooth_noise(rng, size, 4))
    eosin += (0.35 if cls == "stroma" else 0.12) * fibre

    cells_region = np.ones((size, size), bool)
    if cls == "adipose":
        k = 6 + rng.integers(4)
        centers = rng.random((k, 2), dtype=np.float32) * size
        d = np.sqrt((xx[None] - centers[:, 0, None, None]) ** 2 + (yy[None] - centers[:, 1, None, None]) ** 2)
        d.sort(0)
        membrane = np.clip(1 - (d[1] - d[0]) / (1.2 * s), 0, 1)
        empty = np.maximum(empty, 1 - membrane)
        cells_region = membrane > 0.5
    gland_count = {"no": 0, "few": 2, "many": 6}[attrs["glands"]]
    if gland_count:
        gc = rng.random((gland_count, 2), dtype=np.float32) * size
        radius = (12.0 if attrs["glands"] == "few" else 8.0) * s * (0.8 + 0.4 * rng.random(gland_count))
        ring = np.zeros((size, size), np.float32)
        for (cx, cy), rad in zip(gc, radius):
            ang = np.arctan2(yy - cy, xx - cx)
            wobble = 1 + (0.25 if cls == "tumour" else 0.05) * np.sin(3 * ang + rng.random() * 6)
            dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (rad * wobble)
            empty = np.maximum(empty, np.clip((0.6 - dist) * 6, 0, 1))
            ring = np.maximum(ring, ((dist > 0.6) & (dist < 1.05)).astype(np.float32))
        eosin += 0.2 * ring
        cells_region = ring > 0 if cls != "tumour" else (ring > 0) | (rng.random((size, size)) < 0.3)
    if cls == "lymphocytes":
        cells_region = _smooth_noise(rng, size, 3) > 0.25

    n = int(round(_DENSITY_COUNT[attrs["density"]] * s * s * (0.85 + 0.3 * rng.random())))
    if cls == "lymphocytes":
        n = int(n * 1.6)
    orientation = theta if cls == "stroma" else None
    nuc = _scatter_nuclei(rng, n, s, _NUCLEUS_RADIUS[attrs["size"]], attrs["shape"], cells_region, size, orientation)
    h_level = _H_LEVEL[attrs["stain"]] * (1.3 if cls == "lymphocytes" else 1.0)
    values = (h_level * (0.85 + 0.3 * rng.random(n))).astype(np.float32)
    _blobs(hema, *nuc, values, rng)

    necrosis = {"absent": 0.0, "focal": 0.3, "extensive": 0.75}[attrs["necrosis"]]
    if necrosis:
        field = _smooth_noise(rng, size, 3)
        area = field > np.quantile(field, 1 - necrosis)
        eosin = np.where(area, 0.18 + 0.2 * _smooth_noise(rng, size, 12), eosin)
        hema = np.where(area, hema * 0.25, hema)
        m = int(70 * necrosis * s * s)  # karyorrhectic debris: tiny dark fragments
        debris = _scatter_nuclei(rng, m, s, 0.7, "pleomorphic", area, size)
        _blobs(hema, *debris, np.full(m, 0.9 * h_level, np.float32), rng)
        empty = np.where(area, empty * 0.3, empty)

    chromatin = 0.8 + 0.4 * rng.random((size, size), dtype=np.float32)
    hema = hema * chromatin
    keep = 1 - empty
    od = (hema * keep)[..., None] * _OD_H + (eosin * keep * 0.9)[..., None] * _OD_E
    rgb = np.exp(-od) * np.array([0.97, 0.95, 0.97], np.float32)
    rgb = rgb.astype(np.float32)
    padded = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")  # [1, 2, 1] / 4 blur along both axes
    rgb = 0.25 * padded[:-2, 1:-1] + 0.5 * padded[1:-1, 1:-1] + 0.25 * padded[2:, 1:-1]
    padded = np.pad(rgb, ((0, 0), (1, 1), (0, 0)), mode="edge")
    rgb = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    out = rgb + rng.normal(0, 0.012, (size, size, 3)).astype(np.float32)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


class SyntheticHistology(Dataset):
    """A deterministic data set of synthetic H&E tiles, captions, class labels and attribute groups.

    Items are ``{"image": PIL.Image, "caption": str, "label": int, "group": str}``; classes are balanced
    (``label = index % len(CLASSES)``). Use different ``seed`` values for training and evaluation splits.

    Args:
        n: Number of tiles.
        image_size: Tile side in pixels.
        seed: Split seed; item ``i`` depends only on ``(seed, i)``.
        cache: Keep rendered tiles in memory (about ``3 * image_size**2`` bytes each).
    """

    classes = CLASSES
    class_synonyms = CLASS_SYNONYMS
    templates = ZERO_SHOT_TEMPLATES

    def __init__(self, n: int, *, image_size: int = 64, seed: int = 0, cache: bool = True) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}.")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 px to show nuclei, got {image_size}.")
        self.n, self.image_size, self.seed, self.cache = n, image_size, seed, cache
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} tiles.")
        index = index % self.n
        if index in self._cache:
            item = self._cache[index]
        else:
            rng = np.random.default_rng([self.seed, index])
            label = index % len(CLASSES)
            attrs = sample_attributes(rng, label)
            pixels = render_tile(attrs, size=self.image_size, rng=rng)
            item = {"image": pixels, "caption": caption_for(attrs, rng), "label": label,
                    "group": attribute_group(attrs)}  # fmt: skip
            if self.cache:
                self._cache[index] = item
        return {**item, "image": Image.fromarray(item["image"])}

    def captions(self) -> list[str]:
        """All captions, in order."""
        return [self[i]["caption"] for i in range(self.n)]

    def to_hf_dataset(self):
        """The tiles as a ``datasets.Dataset`` with an ``Image`` column (for ``push_to_hub`` / ``save_to_disk``)."""
        from datasets import Dataset as HFDataset

        rows = [self[i] for i in range(self.n)]
        return HFDataset.from_list(rows)


# ---------------------------------------------------------------------------------------------------------------
# Morphology tiles: labels carried by spatial structure only (not by colour statistics).
# ---------------------------------------------------------------------------------------------------------------
ARRANGEMENTS: tuple[str, ...] = ("scattered", "clustered", "aligned", "ring")
NUCLEAR_SHAPES: tuple[str, ...] = ("round", "elongated", "pleomorphic")


def _arrangement_centers(rng: np.random.Generator, arrangement: str, n: int, size: int, s: float) -> np.ndarray:
    """``(n, 2)`` nucleus centres laid out as ``arrangement`` (lengths in 64 px reference pixels times ``s``).

    Candidates are drawn from the arrangement's layout and kept greedily at least 9 reference pixels apart, so
    nuclei do not overlap in any arrangement (overlap would make clumps paler: a colour cue).
    """
    m = 30 * n
    if arrangement == "scattered":
        cand = (0.08 + 0.84 * rng.random((m, 2))) * size
    elif arrangement == "clustered":  # two clumps
        hubs = (0.3 + 0.4 * rng.random((2, 2))) * size
        cand = hubs[rng.integers(2, size=m)] + rng.normal(0, 7.0 * s, (m, 2))
    elif arrangement == "aligned":  # two parallel rows at a random angle
        theta, gap = rng.random() * np.pi, (11 + 5 * rng.random()) * s
        direction, normal = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
        along = (rng.random(m) - 0.5) * 0.85 * size
        row = np.where(rng.random(m) < 0.5, -0.5, 0.5) * gap + rng.normal(0, 0.6 * s, m)
        cand = size / 2 + along[:, None] * direction + row[:, None] * normal
    else:  # ring: a gland cut across, without its lumen so colour statistics stay the same
        center = (0.45 + 0.1 * rng.random(2)) * size
        phi = rng.random(m) * 2 * np.pi
        rad = (16 + 3 * rng.random()) * s + rng.normal(0, 0.6 * s, m)
        cand = center + np.stack([np.cos(phi), np.sin(phi)], 1) * rad[:, None]
    keep = np.empty((n, 2))
    nearest = np.full(m, np.inf)  # each candidate's distance to the nearest kept centre
    for i in range(n):
        ok = np.flatnonzero(nearest >= 9.0 * s)
        j = ok[0] if len(ok) else int(np.argmax(nearest))  # full: the candidate farthest from the kept ones
        keep[i] = cand[j]
        nearest = np.minimum(nearest, np.hypot(*(cand - cand[j]).T))
    return keep.astype(np.float32)


def render_morphology_tile(arrangement: str, shape: str, *, size: int = 32, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 H&E-like tile whose labels are spatial: how nuclei are arranged and their shape.

    Nuclear count, area, stain intensities and background are drawn independently of both labels (stain varies per
    tile), so colour histograms carry no label information: an encoder must see structure. The benchmark's harder
    tasks (``benchmarks/patch_distill.py``).

    Args:
        arrangement: One of :data:`ARRANGEMENTS`.
        shape: One of :data:`NUCLEAR_SHAPES` (equal area for every shape).
        size: Tile side in pixels.
        rng: Random generator.
    """
    if arrangement not in ARRANGEMENTS or shape not in NUCLEAR_SHAPES:
        raise ValueError(
            f"Unknown arrangement/shape {arrangement!r}/{shape!r}; use {ARRANGEMENTS} / {NUCLEAR_SHAPES}."
        )
    s = size / 64.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    eosin = (0.35 + 0.3 * rng.random()) + 0.25 * _smooth_noise(rng, size, 5)
    theta = rng.random() * np.pi
    eosin += 0.1 * (0.5 + 0.5 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) / s * 1.3))
    n = int(rng.integers(10, 14))
    centers = _arrangement_centers(rng, arrangement, n, size, s)
    r = 4.5 * s * (0.9 + 0.2 * rng.random(n))
    if shape == "round":
        ratio, irr = 1.0 + 0.1 * rng.random(n), np.full(n, 0.02)
    elif shape == "elongated":
        ratio, irr = 3.5 + 1.0 * rng.random(n), np.full(n, 0.03)
    else:  # pleomorphic: lumpy outlines
        ratio, irr = 1.0 + 0.5 * rng.random(n), 0.2 + 0.1 * rng.random(n)
    axes = np.stack([r * np.sqrt(ratio), r / np.sqrt(ratio)], 1).astype(np.float32)
    angles, irr = (rng.random(n) * np.pi).astype(np.float32), irr.astype(np.float32)
    h_level = 0.6 + 0.8 * rng.random()
    hema = np.zeros((size, size), np.float32)
    _blobs(hema, centers, axes, angles, irr, (h_level * (0.85 + 0.3 * rng.random(n))).astype(np.float32), rng)
    hema *= 0.8 + 0.4 * rng.random((size, size), dtype=np.float32)
    od = hema[..., None] * _OD_H + (eosin * 0.9)[..., None] * _OD_E
    rgb = np.exp(-od) * np.array([0.97, 0.95, 0.97], np.float32)
    out = rgb + rng.normal(0, 0.012, (size, size, 3)).astype(np.float32)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def morphology_tiles(n: int, *, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` morphology tiles ``uint8 (n, S, S, 3)`` and their independent labels ``arrangement`` and ``shape``.

    Args:
        n: Number of tiles (labels balanced: ``arrangement = i % 4``, ``shape = (i // 4) % 3``).
        image_size: Tile side.
        seed: Split seed; tile ``i`` depends only on ``(seed, i)``.
    """
    tiles, arr, shp = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 7])
        a, b = i % len(ARRANGEMENTS), (i // len(ARRANGEMENTS)) % len(NUCLEAR_SHAPES)
        tiles.append(render_morphology_tile(ARRANGEMENTS[a], NUCLEAR_SHAPES[b], size=image_size, rng=rng))
        arr.append(a)
        shp.append(b)
    return np.stack(tiles), {"arrangement": np.array(arr), "shape": np.array(shp)}
