"""Tiles for patch-encoder distillation: unlabelled tiles cut from slides, image folders, synthetic H&E tiles with
labels for evaluation, HED-space stain jitter, and the multi-crop / masking collator.

Every source is a :class:`TileDataset`: ``uint8 (N, 3, S, S)`` tiles in memory (plus optional labels per task).
The collator draws its augmentation from a generator seeded by the batch's tile indices (and its own seed), not from
torch's global generator, so a resumed run augments every batch exactly as the uninterrupted run did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) as in skimage.color.rgb2hed
HED_FROM_RGB_INV = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = HED_FROM_RGB_INV / HED_FROM_RGB_INV.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# synthetic evaluation tasks: label name → attribute position in SyntheticHistology's ``group`` string
SYNTHETIC_TASKS = {"tissue": 0, "density": 1, "size": 2, "shape": 3, "glands": 4, "necrosis": 5, "stain": 6}


def hed_jitter(pixels: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Stain change in HED space: ``hed' = hed * alpha + beta`` per image and stain, back to RGB.

    Args:
        pixels: ``(B, 3, H, W)`` RGB in [0, 1].
        alpha: ``(B, 3)`` multiplicative factors (1: unchanged).
        beta: ``(B, 3)`` additive shifts in optical density (0: unchanged).
    """
    od = -torch.log(pixels.float().clamp_min(1e-6))  # optical density, (B, 3, H, W)
    hed = torch.einsum("bchw,cd->bdhw", od, _HED_FROM_RGB.to(pixels.device))
    hed = hed * alpha[:, :, None, None] + beta[:, :, None, None]
    od = torch.einsum("bdhw,dc->bchw", hed, _RGB_FROM_HED.to(pixels.device))
    return torch.exp(-od).clamp(0, 1).to(pixels.dtype)


def random_hed_jitter(
    pixels: torch.Tensor, *, sigma: float = 0.05, bias: float = 0.05, generator: torch.Generator | None = None
) -> torch.Tensor:
    """:func:`hed_jitter` with ``alpha ~ U(1 - sigma, 1 + sigma)``, ``beta ~ U(-bias, bias)``.

    Args:
        pixels: ``(B, 3, H, W)`` RGB in [0, 1].
        sigma: Multiplicative range.
        bias: Additive range.
        generator: Random generator (default: torch's global one).
    """
    b = pixels.shape[0]
    alpha = 1 + (torch.rand(b, 3, generator=generator) * 2 - 1) * sigma
    beta = (torch.rand(b, 3, generator=generator) * 2 - 1) * bias
    return hed_jitter(pixels, alpha.to(pixels.device), beta.to(pixels.device))


def stain_variants(pixels: torch.Tensor, num_variants: int = 4, *, strength: float = 0.3, seed: int = 0):
    """Fixed stain variants of the same tiles (PLISM-style robustness test): ``(V, B, 3, H, W)``; variant 0 = as is.

    Args:
        pixels: ``(B, 3, H, W)`` RGB in [0, 1].
        num_variants: Variants including the original.
        strength: Range of the per-variant HED factors (``alpha`` in ``1 ± strength``, ``beta`` in ``± strength/4``).
        seed: Seed of the variants (every tile gets the same stain change within a variant).
    """
    g = torch.Generator().manual_seed(seed)
    out = [pixels]
    for _ in range(num_variants - 1):
        alpha = 1 + (torch.rand(1, 3, generator=g) * 2 - 1) * strength
        beta = (torch.rand(1, 3, generator=g) * 2 - 1) * strength / 4
        out.append(hed_jitter(pixels, alpha.expand(len(pixels), 3), beta.expand(len(pixels), 3)))
    return torch.stack(out)


class TileDataset(Dataset):
    """Tiles in memory: ``dataset[i] = {"pixels": uint8 (3, S, S), "index": i, "labels": {task: int}}``.

    Args:
        tiles: ``uint8 (N, 3, S, S)`` tiles.
        labels: Task name → ``(N,)`` integer labels (optional; evaluation).
        source: What the tiles are, in words (cards record it).
        teacher_features: Expert name → ``(N, D)`` precomputed embeddings of the tiles (items carry them as
            ``teacher_features``; see :func:`precompute_teacher_features`).
    """

    def __init__(
        self,
        tiles: torch.Tensor,
        labels: Mapping[str, torch.Tensor] | None = None,
        *,
        source: str = "",
        teacher_features: Mapping[str, torch.Tensor] | None = None,
    ):
        if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[1] != 3:
            raise ValueError(f"tiles must be uint8 (N, 3, S, S), got {tiles.dtype} {tuple(tiles.shape)}.")
        self.tiles, self.source = tiles, source
        self.labels = {k: torch.as_tensor(v) for k, v in (labels or {}).items()}
        self.teacher_features = dict(teacher_features or {})
        for name, feats in self.teacher_features.items():
            if len(feats) != len(tiles):
                raise ValueError(f"teacher_features[{name!r}] has {len(feats)} rows for {len(tiles)} tiles.")

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"pixels": self.tiles[i], "index": i, "labels": {k: int(v[i]) for k, v in self.labels.items()}}
        if self.teacher_features:
            item["teacher_features"] = {k: v[i] for k, v in self.teacher_features.items()}
        return item

    def with_teacher_features(self, path: str | Path) -> TileDataset:
        """These tiles with the expert embeddings of a safetensors file (``{expert: (N, D)}``, same tile order).

        Args:
            path: Written by :func:`save_teacher_features`.
        """
        from safetensors.torch import load_file

        return TileDataset(self.tiles, self.labels, source=self.source, teacher_features=load_file(str(path)))

    def pixels(self) -> torch.Tensor:
        """All tiles as float ``(N, 3, S, S)`` in [0, 1]."""
        return self.tiles.float() / 255


@torch.no_grad()
def precompute_teacher_features(
    teachers: Mapping[str, Any], tiles: TileDataset, *, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Each expert's embeddings of the (un-augmented) tiles, one expert in memory at a time.

    Args:
        teachers: Name → expert spec (registry name, folder, module; loaded with ``load_teacher_spec``).
        tiles: The training tiles.
        batch_size: Tiles per forward.
    """
    from .heads import load_teacher_spec

    out = {}
    pixels = tiles.pixels()
    for name, spec in teachers.items():
        teacher = load_teacher_spec(spec, name=name)
        out[name] = torch.cat([teacher(pixels[i : i + batch_size])["embedding"].float().cpu()
                               for i in range(0, len(pixels), batch_size)])  # fmt: skip
        del teacher
    return out


def save_teacher_features(features: Mapping[str, torch.Tensor], path: str | Path, *, overwrite: bool = False) -> Path:
    """Writes ``{expert: (N, D)}`` as safetensors (atomically; an existing file only with ``overwrite``).

    Args:
        features: Output of :func:`precompute_teacher_features`.
        path: The file.
        overwrite: Replace an existing file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))
    tmp.replace(path)
    return path


def _to_uint8(img: Image.Image, size: int) -> torch.Tensor:
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def synthetic_tiles(n: int, *, image_size: int = 64, seed: int = 0, tasks: Sequence[str] = ("tissue",)) -> TileDataset:
    """Labelled synthetic H&E tiles (:class:`reportkd.vlm.synthetic_tiles.SyntheticHistology`).

    Args:
        n: Number of tiles.
        image_size: Tile side.
        seed: Split seed (different seeds: disjoint tiles).
        tasks: Label names: ``tissue`` (6 classes) and the attributes ``density``, ``size``, ``shape``,
            ``glands``, ``necrosis``, ``stain``.
    """
    from ..synthetic_tiles import SyntheticHistology

    bad = [t for t in tasks if t not in SYNTHETIC_TASKS]
    if bad:
        raise ValueError(f"Unknown synthetic task(s) {bad}; use {sorted(SYNTHETIC_TASKS)}.")
    data = SyntheticHistology(n, image_size=image_size, seed=seed, cache=False)
    tiles, groups = [], []
    for i in range(n):
        item = data[i]
        tiles.append(_to_uint8(item["image"], image_size))
        groups.append(item["group"].split("|"))
    labels = {}
    for task in tasks:
        values = [g[SYNTHETIC_TASKS[task]] for g in groups]
        names = sorted(set(values)) if task != "tissue" else list(SyntheticHistology.classes)
        labels[task] = torch.tensor([names.index(v) for v in values])
    return TileDataset(torch.stack(tiles), labels, source=f"synthetic H&E tiles (n={n}, {image_size} px, seed={seed})")


def morphology_dataset(n: int, *, image_size: int = 32, seed: int = 0) -> TileDataset:
    """Labelled synthetic tiles whose labels are spatial (``arrangement``: 4 classes, ``shape``: 3 classes).

    Colour statistics carry no label information (:func:`reportkd.vlm.synthetic_tiles.render_morphology_tile`), so
    an untrained encoder's embedding is weak on them: the discriminative tasks of the patch-distillation benchmark.

    Args:
        n: Number of tiles.
        image_size: Tile side.
        seed: Split seed (different seeds: disjoint tiles).
    """
    from ..synthetic_tiles import morphology_tiles

    tiles, labels = morphology_tiles(n, image_size=image_size, seed=seed)
    return TileDataset(torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous(),
                       {k: torch.from_numpy(v) for k, v in labels.items()},
                       source=f"synthetic morphology tiles (n={n}, {image_size} px, seed={seed})")  # fmt: skip


def image_folder_tiles(folder: str | Path, *, image_size: int = 64, limit: int | None = None) -> TileDataset:
    """Every image under ``folder`` (recursively), resized to ``image_size``; sub-folder names become ``label``.

    Args:
        folder: The folder.
        image_size: Tile side.
        limit: Keep at most this many (sorted order).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; pass a folder of tiles.")
    tiles = torch.stack([_to_uint8(Image.open(p), image_size) for p in files])
    classes = sorted({p.parent.name for p in files})
    labels = {"label": torch.tensor([classes.index(p.parent.name) for p in files])} if len(classes) > 1 else None
    return TileDataset(tiles, labels, source=f"image folder {folder} ({len(files)} tiles)")


def slide_tiles(
    slides: str | Path | Sequence[str | Path],
    *,
    image_size: int = 64,
    target_mpp: float = 0.5,
    max_tiles_per_slide: int | None = 256,
    seed: int = 0,
    mpp: float | None = None,
) -> TileDataset:
    """Unlabelled tissue tiles cut from slides with the existing tiling (Otsu tissue mask, grid at ``target_mpp``).

    Args:
        slides: A slide file, a folder of slides, or a list of files.
        image_size: Tile side in pixels at ``target_mpp``.
        target_mpp: Resolution of the tiles.
        max_tiles_per_slide: Random subset per slide (None: all).
        seed: Seed of the subset.
        mpp: Level-0 µm/px for slides that record none.
    """
    from ..wsi import PatchDataset, find_slides, make_patch_grid, open_slide

    if isinstance(slides, (str, Path)):
        slides = find_slides(slides) if Path(slides).is_dir() else [Path(slides)]
    rng = np.random.default_rng(seed)
    tiles = []
    for path in slides:
        reader = open_slide(path, mpp=mpp)
        grid = make_patch_grid(reader, patch_size=image_size, target_mpp=target_mpp, slide_id=Path(path).stem)
        keep = np.arange(len(grid.coords))
        if max_tiles_per_slide is not None and len(keep) > max_tiles_per_slide:
            keep = np.sort(rng.choice(keep, max_tiles_per_slide, replace=False))
        ds = PatchDataset.from_grid(path, grid, backend=getattr(reader, "backend", None))
        tiles += [(ds[int(i)][0] * 255).round().to(torch.uint8) for i in keep]
    if not tiles:
        raise ValueError(f"No tissue tiles in {len(slides)} slide(s); lower the tissue threshold or check the slides.")
    return TileDataset(torch.stack(tiles), source=f"{len(tiles)} tissue tiles from {len(slides)} slide(s)")


def load_tiles(spec: str, *, image_size: int = 64, tasks: Sequence[str] = ("tissue",), mpp: float | None = None):
    """A tile source: ``synthetic:n=2000,seed=0``, ``morphology:n=2000,seed=0``, ``slides:PATH[,max=256]`` or a folder.

    Args:
        spec: The source.
        image_size: Tile side.
        tasks: Label names of synthetic tiles.
        mpp: Level-0 µm/px for slides that record none.
    """
    kind, _, rest = spec.partition(":")
    if kind in ("synthetic", "slides", "morphology"):
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        if kind == "morphology":
            return morphology_dataset(int(opts.get("n", 1000)), image_size=image_size, seed=int(opts.get("seed", 0)))
        if kind == "synthetic":
            return synthetic_tiles(int(opts.get("n", 1000)), image_size=image_size, seed=int(opts.get("seed", 0)),
                                   tasks=tasks)  # fmt: skip
        path = rest.split(",")[0]
        return slide_tiles(path, image_size=image_size, max_tiles_per_slide=int(opts.get("max", 256)),
                           seed=int(opts.get("seed", 0)), mpp=mpp)  # fmt: skip
    if Path(spec).is_dir():
        return image_folder_tiles(spec, image_size=image_size)
    raise ValueError(
        f"Unknown tile source {spec!r}: use synthetic:n=N,seed=S, morphology:n=N,seed=S, slides:PATH[,max=N] or "
        "a folder."
    )


def random_resized_crop(
    pixels: torch.Tensor, size: int, scale: tuple[float, float], *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random square crop of each image (area fraction in ``scale``), resized to ``size``.

    Args:
        pixels: ``(B, 3, H, W)`` images.
        size: Output side.
        scale: Range of the crop's area fraction.
        generator: Random generator (default: torch's global one).
    """
    b, _, h, w = pixels.shape
    out = []
    for i in range(b):
        frac = scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=generator))
        side = max(1, min(h, w, round(math.sqrt(frac * h * w))))
        y = int(torch.randint(0, h - side + 1, (1,), generator=generator))
        x = int(torch.randint(0, w - side + 1, (1,), generator=generator))
        crop = pixels[i : i + 1, :, y : y + side, x : x + side]
        out.append(F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out)


class MultiCropCollator:
    """Tiles → ``global_views (V_g, B, 3, S, S)``, ``local_views (V_l, B, 3, s, s)``, iBOT ``masks (V_g, B, N)``
    (and ``teacher_views`` with ``clean_teacher_views``).

    Args:
        global_size: Side of the global views (the student's input size).
        num_global: Global views per tile (1: only the tile itself, flipped / stain-jittered).
        global_scale: Area fraction range of global crops ((1, 1): the whole tile).
        num_local: Local crops per tile (DINO multi-crop; 0: none).
        local_size: Side of the local crops.
        local_scale: Area fraction range of local crops.
        hed_sigma: HED stain jitter (multiplicative range; additive range = sigma); 0: none.
        flip: Random horizontal / vertical flips.
        mask_ratio: Fraction of the student's patches masked in each global view (iBOT); 0: no masks.
        num_patches: Student patch tokens per global view (needed for masks).
        seed: Seed mixed with each batch's tile indices into the batch's generator.
        clean_teacher_views: Also return ``teacher_views``: the same global crops and flips without the stain
            jitter, so the teachers see the original stain while the student sees the jittered one (distillation
            for stain invariance).
    """

    def __init__(
        self,
        global_size: int,
        *,
        num_global: int = 2,
        global_scale: tuple[float, float] = (0.5, 1.0),
        num_local: int = 0,
        local_size: int = 32,
        local_scale: tuple[float, float] = (0.1, 0.4),
        hed_sigma: float = 0.05,
        flip: bool = True,
        mask_ratio: float = 0.0,
        num_patches: int | None = None,
        seed: int = 0,
        clean_teacher_views: bool = False,
    ) -> None:
        if mask_ratio and not num_patches:
            raise ValueError("mask_ratio > 0 needs num_patches (the student's patch tokens per global view).")
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}.")
        self.global_size, self.num_global, self.global_scale = global_size, num_global, tuple(global_scale)
        self.num_local, self.local_size, self.local_scale = num_local, local_size, tuple(local_scale)
        self.hed_sigma, self.flip, self.mask_ratio, self.num_patches = hed_sigma, flip, mask_ratio, num_patches
        self.seed, self._calls, self.clean_teacher_views = seed, 0, clean_teacher_views

    def _augment(
        self, x: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(stain-jittered view, the same view without stain jitter)."""
        if tuple(scale) != (1.0, 1.0) or x.shape[-1] != size:
            x = random_resized_crop(x, size, scale, generator=g)
        if self.flip:
            flip_h = torch.rand(len(x), generator=g) < 0.5
            flip_v = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
            x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
        if not self.hed_sigma:
            return x, x
        return random_hed_jitter(x, sigma=self.hed_sigma, bias=self.hed_sigma, generator=g), x

    def generator(self, items: Sequence[Mapping[str, Any]]) -> torch.Generator:
        """The batch's generator: seeded by ``seed`` and the tile indices (a call counter without indices)."""
        indices = [int(it["index"]) for it in items if "index" in it]
        if len(indices) < len(items):
            indices, self._calls = [-1, self._calls], self._calls + 1
        key = 0
        for i in (self.seed, *indices):  # a fixed polynomial hash: the same across runs and processes
            key = (key * 1_000_003 + i + 1) % (2**61 - 1)
        return torch.Generator().manual_seed(key)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([torch.as_tensor(it["pixels"]) for it in items]).float() / 255
        g = self.generator(items)
        batch: dict[str, torch.Tensor] = {}
        views = [self._augment(pixels, self.global_size, self.global_scale, g) for _ in range(self.num_global)]
        batch["global_views"] = torch.stack([v[0] for v in views])
        if self.clean_teacher_views:
            batch["teacher_views"] = torch.stack([v[1] for v in views])
        if self.num_local:
            batch["local_views"] = torch.stack(
                [self._augment(pixels, self.local_size, self.local_scale, g)[0] for _ in range(self.num_local)]
            )
        if self.mask_ratio:
            n, k = self.num_patches, max(1, round(self.mask_ratio * self.num_patches))
            scores = torch.rand(self.num_global, len(items), n, generator=g)
            batch["masks"] = scores.argsort(-1).argsort(-1) < k  # exactly k random patches per view
        if "teacher_features" in items[0]:
            names = items[0]["teacher_features"]
            batch["teacher_features"] = {n: torch.stack([it["teacher_features"][n] for it in items]) for n in names}
        labels = [it.get("labels") or {} for it in items]
        for task in labels[0]:
            batch[f"labels_{task}"] = torch.tensor([lab[task] for lab in labels])
        return batch
