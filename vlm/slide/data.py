"""Slide data sets (features files or synthetic slides) and the collator that pads ragged grids.

An item is a dict with ``slide_id``, ``features (N, D)``, ``coords (N, 2)`` level-0 pixels, ``patch_size_level0``,
``label`` (int, -100 when missing), ``report`` (str or None) and, for cross-magnification (XMAG) distillation, the
same slide at the teacher's magnification: ``teacher_features``, ``teacher_coords``, ``teacher_patch_size_level0``.

:class:`SlideCollator` pads a batch to its largest slide and returns ``features (B, N, D)``, ``grid (B, N, 2)``,
``patch_mask (B, N)`` (True for real patches), ``class_labels (B,)`` and, when present, tokenised reports
(``input_ids`` / ``attention_mask``) and the teacher's padded inputs plus ``teacher_to_student (B, N_t)``: the index
of the student patch whose cell holds each teacher patch (-1 for none), which aligns a fine teacher grid with a
coarse student grid. Training crops (``crop_size``) are square windows of student grid cells, TITAN's region crops;
the teacher gets the same level-0 window.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..wsi.features import FEATURES_SUFFIX, SlideFeatures
from ..wsi.formats import H5_SUFFIX, PT_SUFFIX, load_features

IGNORE_INDEX = -100
SUFFIXES = (FEATURES_SUFFIX, H5_SUFFIX, PT_SUFFIX)  # reportkd extract's formats, and TRIDENT / CLAM .pt files
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def read_slide_labels(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"slide_id", "label", "split"?, "report"?}`` of a CSV / TSV / JSONL labels file.

    Args:
        path: The file; columns ``slide_id`` and ``label`` are required, ``split`` (train / val / test) and
            ``report`` optional. Empty labels become None.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Labels file {path} does not exist.")
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    if not rows:
        raise ValueError(f"Labels file {path} has no rows.")
    missing = [c for c in ("slide_id", "label") if c not in rows[0]]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing}; it has {sorted(rows[0])}. Expected slide_id,label[,split][,report]."
        )
    out = []
    for r in rows:
        split = r.get("split")
        if split not in (None, "") and str(split).lower() not in SPLIT_ALIASES:
            raise ValueError(f"{path}: split {split!r} of {r['slide_id']} is not one of train / val / test.")
        label = r["label"]
        out.append(
            {
                "slide_id": str(r["slide_id"]),
                "label": None if label in (None, "") else str(label),
                "split": SPLIT_ALIASES[str(split).lower()] if split not in (None, "") else None,
                "report": r.get("report") or None,
            }
        )
    return out


def class_names_of(labels: Sequence[str | None]) -> list[str]:
    """Sorted distinct labels (numerically when all are integers); None is skipped."""
    names = {str(x) for x in labels if x is not None}
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


class SlideDataset(Dataset):
    """Slides from features files or in memory, with optional labels, reports and teacher-magnification slides.

    Args:
        slides: ``SlideFeatures`` or paths of features files (loaded lazily, cached when ``cache``).
        labels: slide_id → ``{"label": str | None, "report": str | None}``; slides without an entry keep -100.
        teacher_slides: slide_id → the same slide at the teacher's magnification (XMAG distillation).
        classes: Class names in label order (default: :func:`class_names_of` the given labels).
        cache: Keep loaded files in memory.
    """

    def __init__(
        self,
        slides: Sequence[SlideFeatures | str | Path],
        *,
        labels: Mapping[str, Mapping[str, Any]] | None = None,
        teacher_slides: Mapping[str, SlideFeatures | str | Path] | None = None,
        classes: Sequence[str] | None = None,
        cache: bool = True,
    ) -> None:
        if len(slides) == 0:
            raise ValueError("The slide data set is empty: no features files / slides were given.")
        self.slides = list(slides)
        self.labels = dict(labels or {})
        self.teacher_slides = dict(teacher_slides) if teacher_slides is not None else None
        self.classes = (
            list(classes) if classes is not None else class_names_of([v.get("label") for v in self.labels.values()])
        )
        self._index = {c: i for i, c in enumerate(self.classes)}
        self.cache = cache
        self._cache: dict[tuple[str, int], SlideFeatures] = {}

    @classmethod
    def from_folder(
        cls,
        features_dir: str | Path,
        *,
        labels: str | Path | Sequence[Mapping[str, Any]] | None = None,
        teacher_features_dir: str | Path | None = None,
        split: str | None = None,
        classes: Sequence[str] | None = None,
    ) -> SlideDataset:
        """Slides of a folder of features files (``reportkd extract`` output), matched to labels by slide_id.

        Args:
            features_dir: Folder of ``<slide_id>.safetensors`` (or ``.h5``) features files.
            labels: Labels file (see :func:`read_slide_labels`) or its rows; with labels only listed slides are kept.
            teacher_features_dir: Same slides at the teacher's magnification (XMAG); matched by file name.
            split: Keep only this split of the labels file.
            classes: Class names (default: all labels of the file, so every split shares one label map).
        """
        files = features_files(features_dir)
        rows = read_slide_labels(labels) if isinstance(labels, (str, Path)) else list(labels or [])
        table = {r["slide_id"]: r for r in rows}
        classes = classes if classes is not None else (class_names_of([r["label"] for r in rows]) if rows else [])
        if split is not None:
            table = {k: r for k, r in table.items() if r.get("split") == SPLIT_ALIASES.get(split, split)}
        ids = [k for k in files if k in table] if rows else list(files)
        if rows and not ids:
            raise ValueError(
                f"No slide of {features_dir} is listed (split={split!r}) in the labels: check slide_id "
                f"values (e.g. {next(iter(files))!r}) against the file's."
            )
        teacher = None
        if teacher_features_dir is not None:
            t_files = features_files(teacher_features_dir)
            teacher = {k: t_files.get(k) for k in ids}
            if missing := [k for k, p in teacher.items() if p is None]:
                raise FileNotFoundError(
                    f"{len(missing)} slide(s) have no teacher features in {teacher_features_dir}, e.g. "
                    f"{missing[0]!r}: extract both magnifications for every slide."
                )
        return cls([files[k] for k in ids], labels=table, teacher_slides=teacher, classes=classes)

    def __len__(self) -> int:
        return len(self.slides)

    def _load(self, slide: SlideFeatures | str | Path, key: tuple[str, int]) -> SlideFeatures:
        if isinstance(slide, SlideFeatures):
            return slide
        if key in self._cache:
            return self._cache[key]
        sf = load_features(slide)
        if not sf.slide_id:
            sf.slide_id = _stem(Path(slide))
        if self.cache:
            self._cache[key] = sf
        return sf

    def slide_features(self, i: int) -> SlideFeatures:
        """The ``SlideFeatures`` of item ``i``."""
        return self._load(self.slides[i], ("student", i))

    def __getitem__(self, i: int) -> dict[str, Any]:
        sf = self.slide_features(i)
        info = self.labels.get(sf.slide_id, {})
        label = info.get("label")
        if label is not None and str(label) not in self._index:
            raise KeyError(f"Label {label!r} of {sf.slide_id} is not among the classes {self.classes}.")
        item = {
            "slide_id": sf.slide_id,
            "features": sf.features,
            "coords": sf.coords,
            "patch_size_level0": sf.patch_size_level0,
            "report": info.get("report"),
            "label": self._index[str(label)] if label is not None else IGNORE_INDEX,
        }
        if self.teacher_slides is not None:
            t = self._load(self.teacher_slides[sf.slide_id], ("teacher", i))
            item.update(
                teacher_features=t.features, teacher_coords=t.coords, teacher_patch_size_level0=t.patch_size_level0
            )
        return item


def _stem(path: Path) -> str:
    return next((path.name.removesuffix(s) for s in SUFFIXES if path.name.endswith(s)), path.stem)


def features_files(folder: str | Path) -> dict[str, Path]:
    """slide_id → features file (``.safetensors``, ``.h5`` or TRIDENT / CLAM ``.pt``) of a folder; the
    ``features/`` subfolder of a ``reportkd extract --out`` folder is used when the folder itself holds none.

    Args:
        folder: A features folder (or an extraction output folder).
    """
    folder = Path(folder)
    files = {_stem(p): p for suffix in SUFFIXES for p in sorted(folder.glob(f"*{suffix}"))}
    if not files and (folder / "features").is_dir():
        return features_files(folder / "features")
    if not files:
        raise FileNotFoundError(f"No features files (*.safetensors / *.h5 / *.pt) in {folder}; write them with "
                                "`reportkd extract --out DIR` and pass DIR/features.")  # fmt: skip
    return files


def _parse_spec(spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, spec.split(",")):
        if "=" not in part:
            raise ValueError(f"Bad synthetic option {part!r}: use key=value, e.g. synthetic:n=200,seed=0.")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def synthetic_dataset(spec: str = "", *, grid: str = "fine", teacher_grid: str | None = None) -> SlideDataset:
    """A :class:`SlideDataset` of synthetic slides.

    Args:
        spec: ``"n=200,seed=0"`` style options: ``n``, ``seed`` and :class:`SyntheticSlideWorld` fields
            (``num_classes``, ``dim``, ``coarse_factor``, ``class_separation``, ``world_seed``) and
            :func:`make_synthetic_slides` arguments (``min_side``, ``max_side``, ``holes``, ``noise``…).
        grid: The student's grid: ``"fine"`` or ``"coarse"``.
        teacher_grid: The teacher's grid when it differs (``"fine"`` for XMAG), else None.
    """
    from .synthetic import SyntheticSlideWorld, make_synthetic_slides

    opts = _parse_spec(spec)
    world_keys = {"num_classes", "dim", "coarse_dim", "coarse_factor", "num_tissue_types", "class_separation"}
    world_opts = {k: opts.pop(k) for k in list(opts) if k in world_keys}
    if "world_seed" in opts:
        world_opts["seed"] = opts.pop("world_seed")
    if "tumour_fraction" in opts:
        opts["tumour_fraction"] = tuple(opts["tumour_fraction"])
    n = int(opts.pop("n", 200))
    for name, value in (("grid", grid), ("teacher_grid", teacher_grid)):
        if value not in ("fine", "coarse") and not (name == "teacher_grid" and value is None):
            raise ValueError(f"{name} must be 'fine' or 'coarse', got {value!r}.")
    slides = make_synthetic_slides(n, world=SyntheticSlideWorld(**world_opts), **opts)
    labels = {s.slide_id: {"label": s.class_name, "report": s.report} for s in slides}
    classes = SyntheticSlideWorld(**world_opts).classes
    teacher = {s.slide_id: getattr(s, teacher_grid) for s in slides} if teacher_grid else None
    return SlideDataset([getattr(s, grid) for s in slides], labels=labels, teacher_slides=teacher, classes=classes)


def load_slide_dataset(
    source: str,
    *,
    labels: str | Path | None = None,
    teacher_features: str | Path | None = None,
    split: str | None = None,
    grid: str = "fine",
    teacher_grid: str | None = None,
) -> SlideDataset:
    """``"synthetic[:opts]"`` (see :func:`synthetic_dataset`) or a folder of features files.

    Args:
        source: The data source.
        labels: Labels file of a folder source.
        teacher_features: Teacher-magnification features folder (XMAG) of a folder source.
        split: Split of the labels file to keep.
        grid: Synthetic only: the student's grid.
        teacher_grid: Synthetic only: the teacher's grid when it differs.
    """
    if source == "synthetic" or source.startswith("synthetic:"):
        return synthetic_dataset(source.partition(":")[2], grid=grid, teacher_grid=teacher_grid)
    return SlideDataset.from_folder(source, labels=labels, teacher_features_dir=teacher_features, split=split)


# ---------------------------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------------------------
def _cells(coords: torch.Tensor, patch_size: int) -> torch.Tensor:
    return torch.div(coords.long(), int(patch_size), rounding_mode="floor")


def pad_slides(features: Sequence[torch.Tensor], cells: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pads ragged slides: ``features (B, N, D)``, ``grid (B, N, 2)`` (shifted to start at 0), ``patch_mask``.

    Args:
        features: Per slide ``(N_i, D)``.
        cells: Per slide ``(N_i, 2)`` integer grid cells.
    """
    n = max(f.shape[0] for f in features)
    feats = torch.stack([F.pad(f.float(), (0, 0, 0, n - f.shape[0])) for f in features])
    grid = torch.stack([F.pad(c - c.min(0).values, (0, 0, 0, n - c.shape[0])) for c in cells])
    mask = torch.stack([torch.arange(n) < f.shape[0] for f in features])
    return {"features": feats, "grid": grid, "patch_mask": mask}


def _cell_keys(cells: torch.Tensor) -> torch.Tensor:
    return cells[:, 0] * (1 << 31) + cells[:, 1]


def map_to_student_cells(
    student_cells: torch.Tensor, teacher_coords: torch.Tensor, student_patch: int
) -> torch.Tensor:
    """Index of the student patch whose cell holds each teacher patch (by its top-left corner), -1 for none."""
    keys = _cell_keys(student_cells)
    order = keys.argsort()
    sorted_keys = keys[order]
    query = _cell_keys(_cells(teacher_coords, student_patch))
    pos = torch.searchsorted(sorted_keys, query).clamp_max(len(keys) - 1)
    found = sorted_keys[pos] == query
    return torch.where(found, order[pos], torch.full_like(pos, -1))


@dataclass
class SlideCollator:
    """Pads slides (and teacher-magnification slides), crops training regions, tokenises reports.

    Args:
        tokenize: ``list[str] -> Mapping`` of ``input_ids`` (+ ``attention_mask``), e.g.
            ``SlideReportModel.tokenize``; None leaves reports out.
        crop_size: Side of a random square crop in student grid cells (None: whole slides).
        max_patches: Random subset of at most this many student patches (after cropping; None: all).
        teacher_max_patches: The same for teacher patches.
        text_key: Item key of the text.
    """

    tokenize: Callable[[list[str]], Mapping[str, torch.Tensor]] | None = None
    crop_size: int | None = None
    max_patches: int | None = None
    teacher_max_patches: int | None = None
    text_key: str = "report"

    def __post_init__(self) -> None:
        for name in ("crop_size", "max_patches", "teacher_max_patches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}.")

    def _subset(self, n: int, limit: int | None) -> torch.Tensor | None:
        if limit is None or n <= limit:
            return None
        return torch.randperm(n)[:limit].sort().values

    def _one(self, item: Mapping[str, Any]) -> dict[str, Any]:
        feats, coords, ps = item["features"], item["coords"].long(), int(item["patch_size_level0"])
        cells = _cells(coords, ps)
        window = None
        if self.crop_size is not None:
            anchor = cells[torch.randint(len(cells), ()).item()]
            lo = anchor - torch.randint(self.crop_size, (2,))
            keep = ((cells >= lo) & (cells < lo + self.crop_size)).all(-1)
            feats, coords, cells = feats[keep], coords[keep], cells[keep]
            window = (lo * ps, (lo + self.crop_size) * ps)
        if (idx := self._subset(len(cells), self.max_patches)) is not None:
            feats, coords, cells = feats[idx], coords[idx], cells[idx]
        out = {"features": feats, "cells": cells}
        if "teacher_features" in item:
            t_feats, t_coords = item["teacher_features"], item["teacher_coords"].long()
            if window is not None:
                keep = ((t_coords >= window[0]) & (t_coords < window[1])).all(-1)
                t_feats, t_coords = t_feats[keep], t_coords[keep]
            if (idx := self._subset(len(t_coords), self.teacher_max_patches)) is not None:
                t_feats, t_coords = t_feats[idx], t_coords[idx]
            if len(t_coords) == 0:
                raise ValueError(
                    f"Slide {item.get('slide_id')}: no teacher patch inside the student's region; check "
                    "that both features files come from the same slide and coordinate frame."
                )
            out.update(
                teacher_features=t_feats,
                teacher_cells=_cells(t_coords, int(item["teacher_patch_size_level0"])),
                teacher_to_student=map_to_student_cells(cells, t_coords, ps),
            )
        return out

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        slides = [self._one(it) for it in items]
        batch = pad_slides([s["features"] for s in slides], [s["cells"] for s in slides])
        batch["class_labels"] = torch.tensor([int(it.get("label", IGNORE_INDEX)) for it in items])
        if "teacher_features" in slides[0]:
            teacher = pad_slides([s["teacher_features"] for s in slides], [s["teacher_cells"] for s in slides])
            batch.update({f"teacher_{k}": v for k, v in teacher.items()})
            n = teacher["features"].shape[1]
            batch["teacher_to_student"] = torch.stack(
                [F.pad(s["teacher_to_student"], (0, n - len(s["teacher_to_student"])), value=-1) for s in slides]
            )
        if self.tokenize is not None:
            texts = [it.get(self.text_key) for it in items]
            if any(t is None for t in texts):
                missing = next(it.get("slide_id") for it, t in zip(items, texts) if t is None)
                raise ValueError(
                    f"Slide {missing} has no {self.text_key!r} text; alignment needs a report per slide "
                    "(add a report column to the labels file)."
                )
            batch.update(dict(self.tokenize(texts)))
        return batch
