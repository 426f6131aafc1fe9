"""One embedding per slide from patch-features files: a saved slide encoder or a registered one (``reportkd embed``).

Inputs are features files of any readable layout (reportkd ``.safetensors`` / ``.h5``, TRIDENT ``.h5``, CLAM / TRIDENT
``.pt``; see :mod:`reportkd.vlm.wsi.formats`). The slide encoder is a folder saved by a reportkd slide encoder
(``SlideEncoderModel.save_pretrained``; loaded through reportkd's registered classes, no code from the folder) or a
name in :data:`SLIDE_ENCODERS` (``mean``: the mean patch feature, the usual baseline).

Output: one file for all slides, ``.h5`` or ``.npz``: ``embeddings`` ``(N, D)`` float32, ``slide_ids`` ``(N,)`` and
the settings (format ``reportkd.slide_embeddings.v1``, encoder, its fingerprint, source files) as HDF5 root attributes
/ a JSON ``meta`` entry. It is written atomically at the end. Work in progress lives in ``<out>.work/`` (one
``<slide>.npy`` per finished slide, written atomically, and the settings): a killed run started again with the same
encoder skips the slides it finished; the folder is removed once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reportkd.registry import Registry
from reportkd.utils import atomic_path

from ..wsi.features import SlideFeatures
from ..wsi.formats import load_features

EMBEDDINGS_FORMAT = "reportkd.slide_embeddings.v1"
OUTPUT_SUFFIXES = (".h5", ".npz")
logger = logging.getLogger(__name__)


@dataclass
class SlideEmbedder:
    """Slides → embeddings.

    Args:
        name: What ``--slide-encoder`` named (recorded in the output).
        embed: One slide's features → ``(D,)`` float32 embedding.
        fingerprint: Identifies the weights (a changed encoder does not resume another's work).
        input_dim: Patch-feature width the encoder needs (None: any).
    """

    name: str
    embed: Callable[[SlideFeatures], torch.Tensor]
    fingerprint: str
    input_dim: int | None = None


# name → factory(device) -> SlideEmbedder
SLIDE_ENCODERS: Registry[Callable[..., SlideEmbedder]] = Registry("slide encoder")


def register_slide_encoder(name: str, factory: Callable[..., SlideEmbedder] | None = None, *, override: bool = False):
    """Registers ``factory(device=...) -> SlideEmbedder`` under ``name`` (refuses duplicates); usable as a decorator.

    Args:
        name: What ``--slide-encoder`` takes.
        factory: The factory; omit to decorate.
        override: Replace an existing entry.
    """
    return SLIDE_ENCODERS.register(name, factory, override=override)


@register_slide_encoder("mean")
def mean_embedder(device: str | torch.device = "cpu") -> SlideEmbedder:
    """Mean patch feature of each slide (no weights): the baseline every slide encoder should beat."""
    return SlideEmbedder("mean", lambda sf: sf.features.float().mean(0), "mean")


def load_slide_embedder(name_or_dir: str | Path, *, device: str | torch.device = "cpu") -> SlideEmbedder:
    """A registered slide encoder, or one saved by reportkd (``SlideEncoderModel.save_pretrained``).

    Args:
        name_or_dir: A name in :data:`SLIDE_ENCODERS` or a saved folder.
        device: Where the encoder runs.
    """
    folder = Path(name_or_dir)
    if str(name_or_dir) in SLIDE_ENCODERS and not folder.is_dir():
        return SLIDE_ENCODERS.get(str(name_or_dir))(device=device)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"Slide encoder {name_or_dir!r} is neither a registered name ({', '.join(SLIDE_ENCODERS.names())}) nor a "
            "folder saved by a reportkd slide encoder (config.json + model.safetensors)."
        )
    config = json.loads((folder / "config.json").read_text())
    from .configuration_slide import SlideEncoderConfig

    if config.get("model_type") != SlideEncoderConfig.model_type:
        raise ValueError(
            f"{folder} holds a {config.get('model_type')!r} model, not a reportkd slide encoder "
            f"({SlideEncoderConfig.model_type!r}); give a folder written by SlideEncoderModel.save_pretrained."
        )
    from reportkd.abstention import weights_fingerprint

    from .modeling_slide import SlideEncoderModel

    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"{folder} has no model.safetensors; re-save the slide encoder with save_pretrained.")
    model = SlideEncoderModel.from_pretrained(folder, use_safetensors=True).to(device).eval()

    @torch.inference_mode()
    def embed(sf: SlideFeatures) -> torch.Tensor:
        out = model(sf.features.to(device), sf.grid.to(device))
        return out.slide_embeds[0].float().cpu()

    return SlideEmbedder(str(name_or_dir), embed, weights_fingerprint(folder) or "unknown", model.config.input_dim)


def _settings(embedder: SlideEmbedder, files: Mapping[str, Path]) -> dict[str, Any]:
    listing = hashlib.sha256(json.dumps(sorted(map(str, files.values()))).encode()).hexdigest()[:16]
    return {
        "format": EMBEDDINGS_FORMAT, "encoder": embedder.name, "encoder_fingerprint": embedder.fingerprint,
        "num_slides": len(files), "files_sha256": listing,
    }  # fmt: skip


def _check_output(out: Path, overwrite: bool) -> Path:
    if not out.name.endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"--out {out}: give a .h5 or .npz file name.")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a .h5 or .npz file name.")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out} already exists; pass --overwrite to replace it, or choose another file.")
    return out.with_name(out.name + ".work")


def embed_slides(
    files: Mapping[str, str | Path],
    embedder: SlideEmbedder,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Embeds every slide and writes ``out`` (``.h5`` / ``.npz``); resumes from ``<out>.work/`` (module docstring).

    Args:
        files: slide_id → features file (e.g. :func:`~reportkd.vlm.slide.data.features_files`).
        embedder: The slide encoder (:func:`load_slide_embedder`).
        out: Output file; refused when it exists unless ``overwrite``.
        overwrite: Replace ``out`` and discard unfinished work of other settings.
        progress: Show a progress bar.

    Returns:
        ``{"out", "slides", "computed", "resumed", "dim"}``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    work = _check_output(out, overwrite)
    if not files:
        raise ValueError("No features files to embed.")
    files = {k: Path(v) for k, v in sorted(files.items())}
    settings = _settings(embedder, files)
    stamp = work / "settings.json"
    if work.is_dir():
        old = json.loads(stamp.read_text()) if stamp.is_file() else None
        if old != settings:
            if not overwrite:
                raise ValueError(
                    f"{work} holds unfinished work of other settings (encoder or slides differ); pass --overwrite "
                    "to discard it, or remove the folder."
                )
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=1))
    computed = resumed = 0
    for slide_id, path in tqdm(files.items(), desc="Embedding slides", unit="slide", disable=not progress):
        target = work / f"{_safe(slide_id)}.npy"
        if target.is_file():
            resumed += 1
            continue
        sf = load_features(path)
        if embedder.input_dim is not None and sf.features.shape[1] != embedder.input_dim:
            raise ValueError(
                f"{path}: {sf.features.shape[1]}-d patch features, but the slide encoder {embedder.name} takes "
                f"{embedder.input_dim}-d ones; embed features of the patch encoder it was trained on."
            )
        if len(sf.features) == 0:
            raise ValueError(f"{path} has no patches; re-extract the slide or leave it out.")
        vector = np.asarray(embedder.embed(sf), dtype=np.float32).reshape(-1)
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.save(f, vector)
        computed += 1
    ids = list(files)
    embeddings = np.stack([np.load(work / f"{_safe(i)}.npy") for i in ids])
    meta = {**settings, "sources": {i: str(p) for i, p in files.items()}}
    save_slide_embeddings(out, ids, embeddings, meta)
    shutil.rmtree(work)
    return {"out": str(out), "slides": len(ids), "computed": computed, "resumed": resumed, "dim": embeddings.shape[1]}


def _safe(slide_id: str) -> str:
    """A file name for a slide id (ids with path separators or odd characters get a hash suffix)."""
    clean = "".join(c if c.isalnum() or c in "-_." else "_" for c in slide_id)
    if clean != slide_id or clean.startswith("."):
        clean = f"{clean.lstrip('.')}-{hashlib.sha256(slide_id.encode()).hexdigest()[:8]}"
    return clean


def save_slide_embeddings(
    path: str | Path, ids: Sequence[str], embeddings: np.ndarray, meta: Mapping[str, Any]
) -> Path:
    """Writes slide embeddings atomically as ``.h5`` (``embeddings``, ``slide_ids``, root attributes) or ``.npz``.

    Args:
        path: Output file.
        ids: Slide ids, in row order.
        embeddings: ``(N, D)`` array.
        meta: Settings (JSON-serialisable).
    """
    path = Path(path)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    with atomic_path(path) as tmp:
        if path.suffix == ".h5":
            try:
                import h5py
            except ImportError:
                raise ImportError("Writing .h5 needs h5py: pip install 'reportkd[wsi]', or write .npz.") from None
            with h5py.File(tmp, "w") as f:
                f.create_dataset("embeddings", data=embeddings)
                f.create_dataset("slide_ids", data=np.asarray(list(ids), dtype=object), dtype=h5py.string_dtype())
                for k, v in meta.items():
                    f.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
        else:
            with open(tmp, "wb") as f:
                np.savez(f, embeddings=embeddings, slide_ids=np.asarray(list(ids), dtype=str), meta=json.dumps(meta))
    return path


def load_slide_embeddings(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """``(slide_ids, embeddings (N, D), meta)`` of a file written by :func:`save_slide_embeddings`.

    Args:
        path: The ``.h5`` or ``.npz`` file.
    """
    path = Path(path)
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as f:
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["slide_ids"][()]]
            meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            return ids, np.asarray(f["embeddings"]), meta
    with np.load(path, allow_pickle=False) as data:
        return [str(s) for s in data["slide_ids"]], data["embeddings"], json.loads(str(data["meta"]))
