"""Features files on disk: safetensors (the ``reportkd.features.v1`` format of :mod:`.features`), HDF5, and the
HDF5 / ``.pt`` files TRIDENT and CLAM write.

reportkd's HDF5 files carry the header twice: as root attributes (read back by reportkd) and in TRIDENT's layout
(attributes of the ``coords`` and ``features`` datasets), so TRIDENT's slide encoders read them. Both are written
atomically. ``load_features`` and ``read_features_header`` pick the reader from the file suffix.

Foreign layouts read by :func:`load_features` (read from mahmoodlab/TRIDENT ``trident/IO.py``: ``save_h5`` and
``coords_to_h5``, and ``WSI.extract_patch_features``; and from mahmoodlab/CLAM ``create_patches_fp.py`` /
``extract_features_fp.py``):

- TRIDENT ``.h5``: datasets ``features`` (N, D) and ``coords`` (N, 2) int64 level-0 top-left (x, y); attributes
  of ``coords``: ``patch_size``, ``patch_size_level0``, ``level0_magnification``, ``target_magnification``,
  ``overlap``, ``name``, ``savetodir``, ``level0_width``, ``level0_height``; of ``features``: ``name``,
  ``savetodir``, ``encoder``.
- CLAM ``.h5``: the same two datasets; the patch size comes from the ``coords`` attributes ``patch_size`` and
  ``downsample`` (or ``patch_level``) of its patching step when present, else from the spacing of the coordinates.
- ``.pt`` (TRIDENT ``--saveas pt``, CLAM ``pt_files/``): a tensor (N, D), read with ``torch.load(weights_only=True)``
  (never unpickles code); a dict with ``features``/``feats`` and ``coords`` is accepted too. Coordinates come from
  CLAM's sibling ``../h5_files/<slide>.h5`` or a ``<slide>.h5`` beside it when present; otherwise the patches are
  laid on a pseudo raster grid (``metadata["coords_source"] = "pseudo-grid"``, with a warning): fine for MIL and
  pooling, meaningless for a slide encoder's positions.
"""

from __future__ import annotations

import json
import logging
import math
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
PT_SUFFIX = ".pt"
_INT_KEYS = ("patch_size_level0", "embedding_dim", "num_patches")
logger = logging.getLogger(__name__)


def _magnification(mpp: Any) -> int | str:
    """Objective magnification of a µm/px value (10 / mpp: 0.5 µm/px is 20x), as TRIDENT stores it; "None" unknown."""
    try:
        return int(round(10.0 / float(mpp)))
    except (TypeError, ValueError, ZeroDivisionError):
        return "None"


def trident_attributes(sf: SlideFeatures, slide_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """TRIDENT's attributes of the ``coords`` and ``features`` datasets for ``sf``.

    Args:
        sf: The features.
        slide_id: The slide name.
    """
    meta = sf.metadata
    coords = {
        "patch_size": int(meta.get("patch_size", sf.patch_size_level0)),
        "patch_size_level0": int(sf.patch_size_level0),
        "level0_magnification": _magnification(meta.get("slide_mpp")),
        "target_magnification": _magnification(meta.get("target_mpp")),
        "overlap": 0,
        "name": slide_id,
        "savetodir": "None",
    }
    for key in ("level0_width", "level0_height"):
        if isinstance(meta.get(key), int):
            coords[key] = meta[key]
    return coords, {"name": slide_id, "savetodir": "None", "encoder": sf.encoder or "None"}


def save_slide_features_h5(path: str | Path, sf: SlideFeatures) -> Path:
    """Writes ``sf`` as HDF5, atomically: ``features`` and ``coords`` datasets, the header as root attributes and
    TRIDENT's attributes on the datasets (:func:`trident_attributes`)."""
    import h5py

    path = Path(path)
    header = encode_header(sf, path.name.removesuffix(H5_SUFFIX))
    coords_attrs, features_attrs = trident_attributes(sf, header["slide_id"])
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            feats = f.create_dataset("features", data=sf.features.detach().cpu().numpy())
            coords = f.create_dataset("coords", data=sf.coords.to(torch.long).cpu().numpy())
            for k, v in header.items():
                f.attrs[k] = v
            for dataset, attrs in ((coords, coords_attrs), (feats, features_attrs)):
                for k, v in attrs.items():
                    dataset.attrs[k] = v
    return path


def load_slide_features_h5(path: str | Path) -> SlideFeatures:
    """Reads an HDF5 features file: reportkd's (:func:`save_slide_features_h5`), TRIDENT's or CLAM's."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Features file {path} does not exist.")
    with reading_features(path), h5py.File(path, "r") as f:
        meta = {k: str(v) for k, v in f.attrs.items()}
        if meta.get("format") != FEATURES_FORMAT and "features" in f:  # TRIDENT / CLAM
            return _foreign_h5(f, path)
        check_header(meta, path)
        features, coords = np.asarray(f["features"]), np.asarray(f["coords"])
    return decode_header(meta, torch.from_numpy(features), torch.from_numpy(coords))


def _attr(v: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if isinstance(v, np.generic) else v


def _spacing(coords: np.ndarray) -> int | None:
    """The grid stride of level-0 coordinates: the gcd of the gaps between distinct x and y values."""
    values = [int(g) for i in range(2) for g in np.diff(np.unique(coords[:, i])) if g > 0] if len(coords) else []
    return math.gcd(*values) if values else None


def _features_2d(features: np.ndarray, path: Path) -> np.ndarray:
    if features.ndim == 3 and features.shape[0] == 1:  # (1, N, D), as some tools batch it
        features = features[0]
    if features.ndim != 2:
        raise ValueError(f"{path}: features must be (N, D) patch embeddings, got shape {tuple(features.shape)}.")
    return features


def _foreign_h5(f: Any, path: Path) -> SlideFeatures:
    """A TRIDENT or CLAM features file (layout in the module docstring)."""
    features = _features_2d(np.asarray(f["features"]), path)
    if "coords" not in f:
        raise ValueError(f"{path} has features but no coords dataset; write features with their patch coordinates.")
    coords = np.asarray(f["coords"]).astype(np.int64).reshape(-1, 2)
    c_attrs = {k: _attr(v) for k, v in f["coords"].attrs.items()}
    f_attrs = {k: _attr(v) for k, v in f["features"].attrs.items()}
    size = c_attrs.get("patch_size_level0")
    source = "trident" if size is not None else "clam"
    if size is None and c_attrs.get("patch_size") is not None:  # CLAM: the patch size at patch_level
        downsample = c_attrs.get("downsample")
        if isinstance(downsample, list) and downsample:
            size = round(float(c_attrs["patch_size"]) * float(downsample[0]))
        else:
            size = int(c_attrs["patch_size"]) * 2 ** int(c_attrs.get("patch_level", 0))
    if size is None:
        size = _spacing(coords) or 1
    encoder = f_attrs.get("encoder")
    metadata = {"source_format": source, **{k: v for k, v in c_attrs.items() if k != "savetodir"}}
    return SlideFeatures(
        features=torch.from_numpy(np.ascontiguousarray(features)), coords=torch.from_numpy(coords),
        patch_size_level0=int(size), slide_id=path.stem,  # the file name, as the tools name it after the slide
        encoder=str(encoder) if encoder and encoder != "None" else "", metadata=metadata,
    )  # fmt: skip


def _coords_beside(path: Path, n: int) -> tuple[np.ndarray, int, str] | None:
    """Coordinates of a ``.pt`` file from CLAM's ``../h5_files/<slide>.h5`` or a ``<slide>.h5`` beside it."""
    import h5py

    for h5 in (path.parent.parent / "h5_files" / f"{path.stem}.h5", path.with_suffix(H5_SUFFIX)):
        if not h5.is_file():
            continue
        with reading_features(h5), h5py.File(h5, "r") as f:
            if "coords" in f and len(f["coords"]) == n:
                coords = np.asarray(f["coords"]).astype(np.int64).reshape(-1, 2)
                size = _foreign_h5(f, h5).patch_size_level0 if "features" in f else _spacing(coords) or 1
                return coords, size, h5.name
    return None


def load_slide_features_pt(path: str | Path) -> SlideFeatures:
    """A ``.pt`` features file (TRIDENT / CLAM), read with ``torch.load(weights_only=True)``: tensors only, no code.

    Coordinates come from CLAM's ``../h5_files/<slide>.h5`` or a ``<slide>.h5`` beside the file when present, else
    a pseudo raster grid (see the module docstring).

    Args:
        path: The ``.pt`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Features file {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that needs code, or a corrupt file
        raise ValueError(
            f"{path} is not a tensor file that torch.load(weights_only=True) reads ({type(e).__name__}); save the "
            "features as a tensor, or as .h5 / .safetensors."
        ) from None
    coords, size, meta = None, None, {"source_format": "pt"}
    feats = obj.get("features", obj.get("feats")) if isinstance(obj, dict) else obj
    if isinstance(obj, dict):
        coords, size = obj.get("coords"), obj.get("patch_size_level0")
    if not isinstance(feats, torch.Tensor):
        raise ValueError(
            f"{path} holds {type(obj).__name__}, not an (N, D) features tensor or a dict with 'features'."
        )
    feats = torch.from_numpy(np.ascontiguousarray(_features_2d(feats.detach().float().numpy(), path)))
    if coords is None and (found := _coords_beside(path, len(feats))) is not None:
        coords, size, meta["coords_source"] = found
    if coords is None:
        side = max(1, math.ceil(math.sqrt(len(feats))))
        idx = np.arange(len(feats))
        coords, size, meta["coords_source"] = np.stack([idx % side, idx // side], 1), 1, "pseudo-grid"
        logger.warning("%s has no patch coordinates: patches laid on a pseudo grid (fine for MIL / pooling).", path)
    coords = torch.as_tensor(np.asarray(coords), dtype=torch.long).reshape(-1, 2)
    size = int(size) if size is not None else (_spacing(coords.numpy()) or 1)
    return SlideFeatures(features=feats, coords=coords, patch_size_level0=size, slide_id=path.stem, metadata=meta)


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


def _pt_header(path: Path) -> dict[str, str]:
    return {}  # a .pt file has no reportkd header (read_features_header refuses it)


def _save_pt(path: str | Path, sf: SlideFeatures) -> Path:
    raise ValueError("reportkd writes .safetensors or .h5 features; .pt files are read only (TRIDENT / CLAM).")


# format name → (suffix, save, load, header reader)
FEATURE_FORMATS: dict[str, tuple[str, Callable, Callable, Callable]] = {
    "safetensors": (FEATURES_SUFFIX, save_slide_features, load_slide_features, _safetensors_header),
    "h5": (H5_SUFFIX, save_slide_features_h5, load_slide_features_h5, _h5_header),
}
_BY_SUFFIX = {v[0]: v for v in FEATURE_FORMATS.values()}
_BY_SUFFIX[PT_SUFFIX] = (PT_SUFFIX, _save_pt, load_slide_features_pt, _pt_header)  # read only
READABLE_SUFFIXES = tuple(_BY_SUFFIX)


def _by_suffix(path: Path) -> tuple[str, Callable, Callable, Callable]:
    try:
        return _BY_SUFFIX[path.suffix]
    except KeyError:
        raise ValueError(f"{path}: unknown features file suffix; expected one of {sorted(_BY_SUFFIX)}") from None


def load_features(path: str | Path) -> SlideFeatures:
    """Loads a features file of any readable format (chosen by suffix): reportkd, TRIDENT or CLAM."""
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
