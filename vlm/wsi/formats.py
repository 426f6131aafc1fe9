"""Features files on disk: safetensors (the ``reportkd.features.v1`` format of :mod:`.features`) or HDF5.

The HDF5 variant holds the same content for tools that expect it (CLAM/TRIDENT-style ``features`` and ``coords``
datasets); the header keys of the safetensors format become root attributes. Both are written atomically.
``load_features`` and ``read_features_header`` pick the reader from the file suffix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reportkd.utils import atomic_path

from .features import (
    CORE_KEYS,
    FEATURES_FORMAT,
    FEATURES_SUFFIX,
    SlideFeatures,
    check_header,
    decode_header,
    encode_header,
    load_slide_features,
    reading_features,
    save_slide_features,
)

H5_SUFFIX = ".h5"
_INT_KEYS = ("patch_size_level0", "embedding_dim", "num_patches")


def save_slide_features_h5(path: str | Path, sf: SlideFeatures) -> Path:
    """Writes ``sf`` as HDF5 (``features``, ``coords`` datasets; header as root attributes), atomically."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=sf.features.detach().cpu().numpy())
            f.create_dataset("coords", data=sf.coords.to(torch.long).cpu().numpy())
            for k, v in encode_header(sf, path.name.removesuffix(H5_SUFFIX)).items():
                f.attrs[k] = v
    return path


def load_slide_features_h5(path: str | Path) -> SlideFeatures:
    """Reads a file written by :func:`save_slide_features_h5` (refuses other HDF5 files)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Features file {path} does not exist.")
    with reading_features(path), h5py.File(path, "r") as f:
        meta = {k: str(v) for k, v in f.attrs.items()}
        check_header(meta, path)
        features, coords = np.asarray(f["features"]), np.asarray(f["coords"])
    return decode_header(meta, torch.from_numpy(features), torch.from_numpy(coords))


def _parse(v: str) -> Any:
    try:
        return json.loads(v)
    except (json.JSONDecodeError, TypeError):
        return v


def _safetensors_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _h5_header(path: Path) -> dict[str, str]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: str(v) for k, v in f.attrs.items()}


# format name → (suffix, save, load, header reader)
FEATURE_FORMATS: dict[str, tuple[str, Callable, Callable, Callable]] = {
    "safetensors": (FEATURES_SUFFIX, save_slide_features, load_slide_features, _safetensors_header),
    "h5": (H5_SUFFIX, save_slide_features_h5, load_slide_features_h5, _h5_header),
}
_BY_SUFFIX = {v[0]: v for v in FEATURE_FORMATS.values()}


def _by_suffix(path: Path) -> tuple[str, Callable, Callable, Callable]:
    try:
        return _BY_SUFFIX[path.suffix]
    except KeyError:
        raise ValueError(f"{path}: unknown features file suffix; expected one of {sorted(_BY_SUFFIX)}") from None


def load_features(path: str | Path) -> SlideFeatures:
    """Loads a features file of either format (chosen by suffix)."""
    return _by_suffix(Path(path))[2](path)


def read_features_header(path: str | Path) -> dict[str, Any]:
    """The header of a features file (JSON values decoded) without reading the tensors.

    Raises:
        ValueError: Not a reportkd features file.
        FeaturesFileError: Unreadable (e.g. truncated); also a ``ValueError``.
    """
    path = Path(path)
    reader = _by_suffix(path)[3]
    with reading_features(path):
        raw = reader(path)
    if raw.get("format") != FEATURES_FORMAT:
        raise ValueError(f"{path} is not a reportkd features file (format={raw.get('format')!r})")
    return {k: (int(v) if k in _INT_KEYS else v if k in CORE_KEYS else _parse(v)) for k, v in raw.items()}
