"""The per-slide features file: patch embeddings + their grid coordinates (``reportkd.features.v1``).

One safetensors file per slide, written atomically (temp file then rename) so a killed run never leaves a
partial file that looks complete. Tensors:

- ``features``: float (N, D) patch embeddings (float32 or float16);
- ``coords``: int64 (N, 2) top-left (x, y) of each patch in level-0 pixels.

String metadata (safetensors header): ``format``, ``slide_id``, ``encoder``, ``embedding_dim``, ``num_patches``,
``patch_size`` (pixels at the target resolution), ``patch_size_level0`` (grid stride in level-0 pixels),
``target_mpp``, ``slide_mpp`` and any extra keys the writer adds. Grid indices for slide encoders are
``coords // patch_size_level0`` (see :func:`coords_to_grid`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from reportkd.errors import RuntimeFailure
from reportkd.utils import atomic_path

FEATURES_FORMAT = "reportkd.features.v1"
FEATURES_SUFFIX = ".safetensors"


class FeaturesFileError(RuntimeFailure, ValueError):
    """A features file that cannot be read (truncated, corrupt, not safetensors / HDF5); exit code 1 on the CLI.

    Also a ``ValueError``, as :func:`~reportkd.vlm.wsi.read_features_header` documents for unreadable files.
    """


@contextmanager
def reading_features(path: str | Path) -> Iterator[None]:
    """Turns a reader's error on ``path`` into a :class:`FeaturesFileError` naming the file and the fix.

    Args:
        path: the features file being read (a missing file and a foreign header keep their own errors).
    """
    try:
        yield
    except (FileNotFoundError, ValueError):  # ValueError: a foreign header (check_header) or already ours
        raise
    except Exception as e:
        raise FeaturesFileError(
            f"cannot read features file {path} ({type(e).__name__}: {e}); it is truncated or corrupt: delete it and "
            "rerun `reportkd extract` (it recomputes missing slides)"
        ) from e


@dataclass
class SlideFeatures:
    """Patch features of one slide.

    Args:
        features: (N, D) patch embeddings.
        coords: (N, 2) int64 top-left (x, y) in level-0 pixels.
        patch_size_level0: grid stride in level-0 pixels.
        slide_id: slide name (file stem by default).
        encoder: name of the patch encoder that produced ``features``.
        metadata: other key/values stored in the file header (JSON-serialisable).
    """

    features: torch.Tensor
    coords: torch.Tensor
    patch_size_level0: int
    slide_id: str = ""
    encoder: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(self.features.shape)}")
        if self.coords.shape != (self.features.shape[0], 2):
            raise ValueError(
                f"coords must be (N, 2) with N={self.features.shape[0]} as in features, got {tuple(self.coords.shape)}"
            )
        if int(self.patch_size_level0) <= 0:
            raise ValueError(f"patch_size_level0 must be positive, got {self.patch_size_level0}")

    @property
    def grid(self) -> torch.Tensor:
        """(N, 2) integer grid positions (col, row)."""
        return coords_to_grid(self.coords, self.patch_size_level0)


def coords_to_grid(coords: torch.Tensor | np.ndarray, patch_size_level0: int) -> torch.Tensor:
    """Level-0 pixel coordinates → integer (col, row) grid indices, shifted so the minimum is 0."""
    c = torch.as_tensor(np.asarray(coords), dtype=torch.long)
    if c.numel() == 0:
        return c.reshape(0, 2)
    g = torch.div(c, int(patch_size_level0), rounding_mode="floor")
    return g - g.min(dim=0).values


CORE_KEYS = ("format", "slide_id", "encoder", "patch_size_level0", "embedding_dim", "num_patches")


def encode_header(sf: SlideFeatures, default_slide_id: str) -> dict[str, str]:
    """The string header of a features file (any container: safetensors metadata, HDF5 attributes).

    Args:
        sf: The features.
        default_slide_id: Slide id when ``sf.slide_id`` is empty (the file stem).
    """
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in sf.metadata.items()}
    meta.update(
        format=FEATURES_FORMAT,
        slide_id=sf.slide_id or default_slide_id,
        encoder=sf.encoder,
        embedding_dim=str(sf.features.shape[1]),
        num_patches=str(sf.features.shape[0]),
        patch_size_level0=str(int(sf.patch_size_level0)),
    )
    return meta


def check_header(meta: dict[str, str], path: Path) -> None:
    """Refuses a file whose header is not ``reportkd.features.v1``."""
    if meta.get("format") != FEATURES_FORMAT:
        raise ValueError(
            f"{path} is not a reportkd features file (format={meta.get('format')!r}, expected "
            f"{FEATURES_FORMAT!r}); write it with `reportkd extract` or save_slide_features."
        )


def decode_header(meta: dict[str, str], features: torch.Tensor, coords: torch.Tensor) -> SlideFeatures:
    """``SlideFeatures`` from tensors and a header written by :func:`encode_header` (JSON values decoded)."""
    extra = {}
    for k, v in meta.items():
        if k in CORE_KEYS:
            continue
        try:
            extra[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            extra[k] = v
    return SlideFeatures(
        features=features,
        coords=coords.long(),
        patch_size_level0=int(meta["patch_size_level0"]),
        slide_id=meta.get("slide_id", ""),
        encoder=meta.get("encoder", ""),
        metadata=extra,
    )


def save_slide_features(path: str | Path, sf: SlideFeatures) -> Path:
    """Write ``sf`` to ``path`` atomically (temp file then rename)."""
    path = Path(path)
    meta = encode_header(sf, path.name.removesuffix(FEATURES_SUFFIX))
    tensors = {"features": sf.features.contiguous(), "coords": sf.coords.to(torch.long).contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_slide_features(path: str | Path) -> SlideFeatures:
    """Read a features file written by :func:`save_slide_features` (refuses other safetensors files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Features file {path} does not exist.")
    with reading_features(path), safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        check_header(meta, path)
        features, coords = f.get_tensor("features"), f.get_tensor("coords")
    return decode_header(meta, features, coords)
