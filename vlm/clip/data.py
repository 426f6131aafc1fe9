"""Image-caption data sets and the collator that feeds teacher and student their own inputs.

Sources (:func:`load_image_text_dataset`):

- ``"synthetic"`` or ``"synthetic:n=2000,size=64,seed=0"``: the embedded synthetic H&E generator;
- a CSV / TSV / JSONL annotation file with an image-path column and a caption column (paths relative to the
  file, or to ``image_root``);
- a folder with a ``metadata.jsonl`` / ``metadata.csv`` (the ``datasets`` imagefolder layout, ``file_name``
  column);
- a ``datasets.Dataset`` with an image column (PIL images or paths) and a caption column.

Items are ``{"image": PIL.Image, "caption": str, "label": int (-100 when missing), "group": str | None}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..synthetic_tiles import SyntheticHistology

IGNORE_INDEX = -100


class ImageTextDataset(Dataset):
    """Image-caption pairs from in-memory records.

    Args:
        records: Dicts with an image (PIL image or path) and a caption.
        image_column: Key of the image.
        caption_column: Key of the caption.
        label_column: Optional key of an integer class label.
        group_column: Optional key grouping equivalent captions (for retrieval metrics).
        image_root: Folder that relative image paths are relative to.
        classes: Optional class names (index = label).
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]] | Any,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        label_column: str | None = "label",
        group_column: str | None = "group",
        image_root: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.records = records
        self.image_column, self.caption_column = image_column, caption_column
        self.label_column, self.group_column = label_column, group_column
        self.image_root = Path(image_root) if image_root is not None else None
        self.classes = list(classes) if classes is not None else None
        if len(records) == 0:
            raise ValueError("The image-text data set is empty.")
        first = records[0]
        for key in (image_column, caption_column):
            if key not in first:
                raise KeyError(f"Records have no {key!r} column; they have {sorted(first)}. Set image_column / "
                               "caption_column.")  # fmt: skip

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, value: Any) -> Image.Image:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and "path" in value:  # datasets Image(decode=False)
            value = value["path"]
        path = Path(value)
        if not path.is_absolute() and self.image_root is not None:
            path = self.image_root / path
        if not path.is_file():
            raise FileNotFoundError(f"Image {path} does not exist; check image_root and the image column.")
        with Image.open(path) as img:
            return img.convert("RGB")

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        label = rec.get(self.label_column) if self.label_column else None
        label = IGNORE_INDEX if label is None or label != label else int(label)
        group = rec.get(self.group_column) if self.group_column else None
        return {"image": self._image(rec[self.image_column]), "caption": str(rec[self.caption_column]),
                "label": label, "group": None if group is None else str(group)}  # fmt: skip


def _read_annotations(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if name.endswith((".csv", ".tsv")):
        import pandas as pd

        return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",").to_dict("records")
    raise ValueError(f"Unsupported annotation file {path.name!r}: use .csv, .tsv or .jsonl.")


def _parse_synthetic(spec: str) -> dict[str, int]:
    options = {"n": 2000, "size": 64, "seed": 0}
    _, _, rest = spec.partition(":")
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        if key.strip() not in options:
            raise ValueError(f"Unknown synthetic option {key!r} in {spec!r}; use n=, size=, seed=.")
        options[key.strip()] = int(value)
    return options


def load_image_text_dataset(
    source: str | os.PathLike | Any,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    label_column: str | None = "label",
    group_column: str | None = "group",
    image_root: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Loads image-caption pairs (see the module docstring for the accepted sources).

    Args:
        source: ``"synthetic[:n=..,size=..,seed=..]"``, an annotation file, an imagefolder-style folder, or a
            ``datasets.Dataset``.
        image_column: Column holding images or image paths (``file_name`` for imagefolder metadata).
        caption_column: Column holding captions.
        label_column: Optional integer class-label column.
        group_column: Optional column naming equivalent captions.
        image_root: Folder for relative image paths (default: the annotation file's folder).
        classes: Class names for the labels (zero-shot evaluation).
    """
    if isinstance(source, str) and source.split(":")[0] == "synthetic":
        opts = _parse_synthetic(source)
        return SyntheticHistology(opts["n"], image_size=opts["size"], seed=opts["seed"])
    kwargs = dict(image_column=image_column, caption_column=caption_column, label_column=label_column,
                  group_column=group_column, classes=classes)  # fmt: skip
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            meta = [p for p in (path / "metadata.jsonl", path / "metadata.csv") if p.is_file()]
            if not meta:
                raise FileNotFoundError(f"{path} has no metadata.jsonl or metadata.csv (columns file_name, caption).")
            kwargs["image_column"] = "file_name" if image_column == "image" else image_column
            return ImageTextDataset(_read_annotations(meta[0]), image_root=image_root or path, **kwargs)
        if not path.is_file():
            raise FileNotFoundError(f"No data set at {path}: give 'synthetic', an annotation file or a folder.")
        return ImageTextDataset(_read_annotations(path), image_root=image_root or path.parent, **kwargs)
    if hasattr(source, "column_names"):  # datasets.Dataset
        return ImageTextDataset(source, image_root=image_root, **kwargs)
    raise TypeError(f"Cannot load image-text pairs from {type(source).__name__}.")


def _same_preprocessing(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return a is not None and b is not None and a == b


def _same_tokenizer(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b) or getattr(a, "context_length", None) != getattr(b, "context_length", None):
        return False
    name = lambda t: getattr(getattr(t, "tokenizer", None), "name_or_path", None)  # noqa: E731
    return name(a) == name(b)


@dataclass
class CLIPCollator:
    """Collates image-caption items into student (and, when they differ, teacher) tensors.

    Output keys: ``pixel_values``, ``input_ids``, ``class_labels`` (-100 when missing; not ``labels``, which the
    ``Trainer`` would count as loss targets), and
    ``teacher_pixel_values`` / ``teacher_input_ids`` when the teacher's preprocessing / tokenizer differ from the
    student's (other image size or normalisation, other vocabulary or context length).

    Args:
        preprocess: Student image transform (PIL → tensor).
        tokenizer: Student tokenizer (``list[str] -> LongTensor``).
        teacher_preprocess: Teacher image transform; None shares the student's.
        teacher_tokenizer: Teacher tokenizer; None shares the student's.
    """

    preprocess: Callable
    tokenizer: Callable
    teacher_preprocess: Callable | None = None
    teacher_tokenizer: Callable | None = None

    @classmethod
    def for_models(cls, student: Any, teacher: Any | None = None, *, train: bool = False) -> CLIPCollator:
        """A collator for two :class:`~reportkd.vlm.clip.models.OpenCLIPBundle` objects.

        Args:
            student: The student bundle.
            teacher: The teacher bundle (None: student only).
            train: Use open_clip's training transforms (random resized crops) instead of the evaluation ones; teacher
                and student then share one augmented tensor, so their preprocessing must match.
        """
        from .models import model_preprocess_cfg

        pick = (lambda b: b.preprocess_train) if train else (lambda b: b.preprocess_val)  # noqa: E731
        if teacher is None:
            return cls(pick(student), student.tokenizer)
        same_pp = _same_preprocessing(model_preprocess_cfg(student.model), model_preprocess_cfg(teacher.model))
        if train and not same_pp:
            raise ValueError(
                "Teacher and student preprocess differently, so random training augmentation would show them "
                "different crops: use train=False (evaluation transforms) or give both the same image size."
            )
        return cls(
            pick(student),
            student.tokenizer,
            teacher_preprocess=None if same_pp else pick(teacher),
            teacher_tokenizer=None if _same_tokenizer(student.tokenizer, teacher.tokenizer) else teacher.tokenizer,
        )

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [it["image"] for it in items]
        captions = [it["caption"] for it in items]
        batch = {
            "pixel_values": torch.stack([self.preprocess(img) for img in images]),
            "input_ids": self.tokenizer(captions),
            "class_labels": torch.tensor([int(it.get("label", IGNORE_INDEX)) for it in items], dtype=torch.long),
        }
        if self.teacher_preprocess is not None:
            batch["teacher_pixel_values"] = torch.stack([self.teacher_preprocess(img) for img in images])
        if self.teacher_tokenizer is not None:
            batch["teacher_input_ids"] = self.teacher_tokenizer(captions)
        return batch


def image_tiles(
    path: str | os.PathLike,
    *,
    tile_size: int = 224,
    max_tiles: int = 16,
    level: int = 0,
    min_tissue: float = 0.5,
) -> list[Image.Image]:
    """Cuts tissue tiles from a slide or a large image (a simple grid; whole-slide pipelines live elsewhere).

    Plain images and non-pyramidal TIFFs are read with PIL; ``.svs`` / ``.ndpi`` / ``.mrxs`` use OpenSlide
    (``pip install openslide-python openslide-bin``) when installed; without it, PIL decodes the base level of
    small ``.svs`` files. A tile counts as tissue when at least ``min_tissue`` of its
    pixels are not background (saturation above 0.07 and not near-white).

    Args:
        path: Slide or image file.
        tile_size: Tile side in pixels at ``level``.
        max_tiles: Stop after this many tiles.
        level: Pyramid level (OpenSlide only).
        min_tissue: Minimal tissue fraction of a kept tile.
    """
    import numpy as np

    path = Path(path)
    slide = None
    if path.suffix.lower() in (".svs", ".ndpi", ".mrxs", ".scn", ".vms"):
        try:
            import openslide

            slide = openslide.OpenSlide(str(path))
        except ImportError:
            if path.suffix.lower() != ".svs" or level != 0:
                raise ImportError(
                    f"Reading {path.suffix} slides needs OpenSlide: pip install openslide-python openslide-bin."
                ) from None
            # Without OpenSlide, PIL decodes the base page of small SVS files (all of it, in memory).
    if slide is not None:
        width, height = slide.level_dimensions[level]
        scale = slide.level_downsamples[level]
        read = lambda x, y: slide.read_region((int(x * scale), int(y * scale)), level,  # noqa: E731
                                              (tile_size, tile_size)).convert("RGB")  # fmt: skip
    else:
        with Image.open(path) as img:
            if img.width * img.height > 200_000_000:
                raise ValueError(f"{path} is too large to decode whole: install openslide-python openslide-bin.")
            image = img.convert("RGB")
        width, height = image.size
        read = lambda x, y: image.crop((x, y, x + tile_size, y + tile_size))  # noqa: E731
    tiles = []
    for y in range(0, height - tile_size + 1, tile_size):
        for x in range(0, width - tile_size + 1, tile_size):
            tile = read(x, y)
            hsv = np.asarray(tile.convert("HSV"), dtype=np.float32) / 255
            tissue = ((hsv[..., 1] > 0.07) & (hsv[..., 2] < 0.92)).mean()
            if tissue >= min_tissue:
                tiles.append(tile)
                if len(tiles) >= max_tiles:
                    return tiles
    return tiles
