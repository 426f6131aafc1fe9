"""Patch-feature extraction over many slides: resumable, atomic, one failure never stops the others.

For each slide: open it (OpenSlide, else tiffslide, else PIL), make or reuse its patch grid, read the patches in
DataLoader workers, embed them in batches and write ``OUT/features/<slide>.safetensors`` (or ``.h5``) by temp file
+ rename. Layout of ``out_dir``::

    features/<slide>.safetensors   patch features + coords (reportkd.features.v1)
    coords/<slide>.safetensors     patch grid (reportkd.coords.v1), reusable by any encoder (coords_dir=)
    previews/<slide>.png           tissue mask and patches over a thumbnail (save_previews=True)
    extract_summary.json           per-slide status, patches, seconds, reader, message (rewritten after each slide)
    extract.log                    the run's log, with tracebacks of failures

Statuses: ``done``; ``skipped`` (a complete features file of the same encoder and settings exists: a restarted
run resumes where it stopped); ``needs_mpp`` (no µm/px recorded and none given); ``no_tissue`` (no patch passes
the tissue threshold; nothing written); ``failed`` (unreadable/corrupt slide or any other error, logged). Only
``done`` and ``skipped`` slides have features: they are the run's successes (``ExtractSummary.succeeded``).

Example::

    from reportkd.vlm.encoders import get_encoder
    from reportkd.vlm.wsi import extract_features
    summary = extract_features(["a.svs", "b.svs"], "runs/feats", get_encoder("uni_v1", device="cuda"))
    summary.counts  # {"done": 2, "skipped": 0, ...}
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reportkd.utils import atomic_path, write_json

from .dataset import PatchDataset, make_patch_loader
from .features import SlideFeatures
from .formats import FEATURE_FORMATS, read_features_header
from .reader import MissingMPPError, SlideReader, SlideReadError, missing_mpp_message, open_slide
from .tiling import PatchGrid, load_patch_grid, make_patch_grid, render_patch_grid, resolve_target_mpp, save_patch_grid
from .tissue import compute_tissue_mask

logger = logging.getLogger(__name__)
run_log = logging.getLogger(__name__ + ".run")  # file-only: attached to OUT/extract.log during a run
run_log.propagate = False
run_log.setLevel(logging.INFO)

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".qptiff")
STATUSES = ("done", "skipped", "needs_mpp", "no_tissue", "failed")


@dataclass
class SlideSpec:
    """One slide to process.

    Args:
        path: The slide file.
        mpp: Level-0 µm/px that overrides the slide's own (e.g. from a slide list); None uses the slide's.
        slide_id: Output name; the file stem by default.
    """

    path: Path
    mpp: float | None = None
    slide_id: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.slide_id = self.slide_id or self.path.stem


@dataclass
class SlideResult:
    """What happened to one slide."""

    slide_id: str
    path: str
    status: str
    num_patches: int = 0
    seconds: float = 0.0
    reader: str = ""
    slide_mpp: float | None = None
    mpp_source: str = ""
    message: str = ""
    reader_note: str = ""
    features: str = ""


@dataclass
class ExtractSummary:
    """Results of an extraction run."""

    results: list[SlideResult] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Number of slides per status (every status, zeros included)."""
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    @property
    def succeeded(self) -> int:
        """Slides that have features now (``done`` or ``skipped``); a ``no_tissue`` slide is not a success."""
        c = self.counts
        return c["done"] + c["skipped"]

    def describe(self) -> str:
        """One line: how many slides succeeded, failed, had no tissue or lack µm/px."""
        c = self.counts
        return (
            f"{self.succeeded} of {len(self.results)} slide(s) succeeded (done {c['done']}, skipped {c['skipped']}); "
            f"failed {c['failed']}, no tissue {c['no_tissue']}, need µm/px {c['needs_mpp']}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "counts": self.counts, "slides": [asdict(r) for r in self.results]}


def find_slides(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Slide files (by extension, see ``SLIDE_EXTENSIONS``) in ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Slides folder {folder} does not exist.")
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in SLIDE_EXTENSIONS)


PATH_COLUMNS = ("path", "slide", "slide_path", "wsi")  # header names of a slide list's path column (wsi: TRIDENT)


def read_slide_list(path: str | Path) -> list[SlideSpec]:
    """Slides from a text/CSV file: one ``path`` or ``path,mpp`` per line (``#`` comments, optional header
    ``path,mpp``); relative paths are relative to the list's folder. TRIDENT's lists (a header naming the ``wsi``
    and ``mpp`` columns, in any order, other columns ignored) are read too."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Slide list {path} does not exist.")
    specs = []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    path_col, mpp_col = 0, 1
    for i, row in enumerate(csv.reader(lines)):
        row = [c.strip() for c in row]
        names = [c.lower() for c in row]
        if i == 0 and (set(names) & set(PATH_COLUMNS) or "mpp" in names):  # a header row
            path_col = next((j for j, c in enumerate(names) if c in PATH_COLUMNS), 0)
            mpp_col = names.index("mpp") if "mpp" in names else None
            continue
        p = Path(row[path_col]).expanduser()
        mpp = None
        if mpp_col is not None and len(row) > mpp_col and row[mpp_col]:
            try:
                mpp = float(row[mpp_col])
            except ValueError:
                raise ValueError(f"{path}, line {i + 1}: µm/px {row[mpp_col]!r} is not a number") from None
        specs.append(SlideSpec(p if p.is_absolute() else path.parent / p, mpp))
    return specs


def clean_stale_temp_files(folder: Path) -> int:
    """Removes temp files a killed run left (``.<name>.<random>.tmp`` from ``atomic_path``); returns the count."""
    n = 0
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _as_specs(slides: Iterable[str | Path | SlideSpec]) -> list[SlideSpec]:
    specs = [s if isinstance(s, SlideSpec) else SlideSpec(Path(s)) for s in slides]
    seen: dict[str, Path] = {}
    for s in specs:
        if s.slide_id in seen:
            raise ValueError(
                f"Two slides share the output name {s.slide_id!r}: {seen[s.slide_id]} and {s.path}. "
                "Rename one (outputs are named after the file stem)."
            )
        seen[s.slide_id] = s.path
    return specs


class _Extractor:
    """One run's settings and state (see :func:`extract_features`)."""

    def __init__(self, out_dir: Path, encoder, fmt: str, settings: dict[str, Any], opts: dict[str, Any]) -> None:
        self.out, self.encoder, self.settings, self.opts = out_dir, encoder, settings, opts
        self.suffix, self.save = FEATURE_FORMATS[fmt][0], FEATURE_FORMATS[fmt][1]
        self.features_dir, self.coords_dir = out_dir / "features", out_dir / "coords"

    def existing(self, path: Path, spec: SlideSpec) -> str | None:
        """None when ``path`` is a complete file of this run's encoder and settings; else why not."""
        try:
            h = read_features_header(path)
        except ValueError as e:
            return f"unreadable ({e})"
        want: dict[str, Any] = {"encoder": self.encoder.name, "random_weights": self.encoder.random, **self.settings}
        user_mpp = spec.mpp or (self.opts["slide_mpp"] if h.get("mpp_source") != "slide" else None)
        if user_mpp is not None:  # a µm/px given now must be the one the file was made with
            want["slide_mpp"] = float(user_mpp)
        for k, v in want.items():
            got = h.get(k)
            if isinstance(v, float) and isinstance(got, (int, float)):
                same = math.isclose(float(got), v, rel_tol=1e-6)
            else:
                same = got == v
            if not same:
                return f"made with {k}={got!r}, this run uses {v!r}"
        return None

    def grid(self, reader: SlideReader, spec: SlideSpec) -> PatchGrid:
        if reader.mpp is None:
            raise MissingMPPError(missing_mpp_message(reader.path.name, reader.backend))
        g = self._reuse_grid(spec, {**self.settings, "slide_mpp": float(reader.mpp)})
        mask = None
        if g is None:
            mask = compute_tissue_mask(reader)
            g = make_patch_grid(
                reader,
                patch_size=self.settings["patch_size"],
                target_mpp=self.settings["target_mpp"],
                tissue_threshold=self.settings["tissue_threshold"],
                mask=mask,
                slide_id=spec.slide_id,
            )
            save_patch_grid(self.coords_dir / f"{spec.slide_id}.safetensors", g)
        preview = self.out / "previews" / f"{spec.slide_id}.png"
        if self.opts["save_previews"] and not preview.is_file():
            with atomic_path(preview) as tmp:
                render_patch_grid(reader, g, mask=mask or compute_tissue_mask(reader)).save(tmp, format="PNG")
        return g

    def _reuse_grid(self, spec: SlideSpec, want: dict[str, Any]) -> PatchGrid | None:
        """The slide's grid from ``coords_dir`` (must match) or from this run's ``coords/`` (if it matches)."""
        own = self.coords_dir / f"{spec.slide_id}.safetensors"
        user = self.opts["coords_dir"] / f"{spec.slide_id}.safetensors" if self.opts["coords_dir"] else None
        if user is not None and user.is_file():
            g = load_patch_grid(user)
            if not g.matches(**want):
                raise ValueError(
                    f"coordinates {user} were made with {g.settings()}, this run asks for {want}; match the settings "
                    "or drop --coords-dir"
                )
            if user.resolve() != own.resolve():
                save_patch_grid(own, g)
            return g
        if own.is_file():
            try:
                g = load_patch_grid(own)
                if g.matches(**want):
                    return g
                logger.info("%s: coordinates made with other settings (%s); recomputing", spec.slide_id, g.settings())
            except (ValueError, OSError) as e:
                logger.warning("%s: unreadable coordinates %s (%s); recomputing", spec.slide_id, own, e)
        return None

    def embed(self, spec: SlideSpec, grid: PatchGrid, backend: str) -> torch.Tensor:
        from tqdm.auto import tqdm

        ds = PatchDataset.from_grid(spec.path, grid, transform=self.encoder.transform, backend=backend)
        loader = make_patch_loader(
            ds, batch_size=self.opts["batch_size"], num_workers=self.opts["num_workers"], device=self.encoder.device
        )
        feats = torch.empty(len(ds), self.encoder.embedding_dim, dtype=torch.float32)
        bar = tqdm(total=len(ds), desc=spec.slide_id, unit="patch", leave=False, disable=not self.opts["progress"])
        try:
            for pixels, index in loader:
                feats[index] = self.encoder.encode(pixels).cpu()
                bar.update(len(index))
        finally:
            bar.close()
            ds.close()
        return feats

    def run_one(self, spec: SlideSpec) -> SlideResult:
        out_path = self.features_dir / f"{spec.slide_id}{self.suffix}"
        res = SlideResult(spec.slide_id, str(spec.path), "failed", features=str(out_path))
        if out_path.is_file() and not self.opts["overwrite"]:
            why = self.existing(out_path, spec)
            if why is None:
                h = read_features_header(out_path)
                res.status, res.num_patches, res.message = "skipped", int(h["num_patches"]), "complete features exist"
                res.reader, res.slide_mpp = str(h.get("reader", "")), h.get("slide_mpp")
                res.mpp_source = str(h.get("mpp_source", ""))
                return res
            if not why.startswith("unreadable"):
                res.message = f"{out_path} exists, {why}; pass --overwrite (overwrite=True) or use another --out"
                return res
            logger.warning("%s: %s; recomputing", out_path, why)
        t0 = time.perf_counter()
        try:
            reader = open_slide(
                spec.path, mpp=spec.mpp or self.opts["slide_mpp"], override_mpp=spec.mpp is not None,
                backend=self.opts["backend"],
            )  # fmt: skip
        except (SlideReadError, FileNotFoundError) as e:
            res.message = str(e)
            return res
        res.reader, res.slide_mpp, res.mpp_source = reader.backend, reader.mpp, reader.mpp_source
        if reader.fallback_reasons:  # e.g. a plain TIFF: OpenSlide refuses it, tiffslide reads it
            res.reader_note = f"read with {reader.backend} ({'; '.join(reader.fallback_reasons)})"
        try:
            return self._tile_and_embed(spec, reader, res, out_path, t0)
        except MissingMPPError as e:
            res.status, res.message = "needs_mpp", str(e)
            return res
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # decoding errors of a damaged file surface here, not at open
            run_log.exception("%s failed", spec.path)
            hint = (
                ""
                if isinstance(e, ValueError)
                else f" (reading with {reader.backend}: is the file corrupt or truncated?)"
            )
            res.message = f"{type(e).__name__}: {e}{hint}"
            return res
        finally:
            reader.close()

    def _tile_and_embed(self, spec: SlideSpec, reader: SlideReader, res: SlideResult, out_path: Path, t0: float):
        grid = self.grid(reader, spec)
        reader.close()  # workers open their own handles
        res.num_patches = len(grid)
        if len(grid) == 0:
            res.status = "no_tissue"
            res.message = (
                f"no patch has >= {self.settings['tissue_threshold']:.0%} tissue (tissue share "
                f"{grid.metadata.get('tissue_share', 0):.2%}), nothing written; a lower --tissue-threshold keeps more"
            )
            return res
        feats = self.embed(
            spec, grid, reader.backend
        )  # the backend that opened it here (coords may come from elsewhere)
        meta = {
            **grid.feature_metadata(),
            "encoder_source": self.encoder.source,
            "random_weights": self.encoder.random,
            "coords_file": f"coords/{spec.slide_id}.safetensors",
            "slide_file": spec.path.name,
        }
        sf = SlideFeatures(
            features=feats,
            coords=torch.from_numpy(grid.coords),
            patch_size_level0=grid.patch_size_level0,
            slide_id=spec.slide_id,
            encoder=self.encoder.name,
            metadata=meta,
        )
        self.save(out_path, sf)
        res.status, res.seconds = "done", round(time.perf_counter() - t0, 3)
        return res


def extract_features(
    slides: Sequence[str | Path | SlideSpec],
    out_dir: str | Path,
    encoder,
    *,
    patch_size: int = 224,
    target_mpp: float | None = None,
    magnification: float | None = None,
    tissue_threshold: float = 0.25,
    slide_mpp: float | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    fmt: str = "safetensors",
    coords_dir: str | Path | None = None,
    overwrite: bool = False,
    save_previews: bool = False,
    backend: str | None = None,
    progress: bool = True,
    on_slide_end: Callable[[SlideResult], None] | None = None,
) -> ExtractSummary:
    """Extracts patch features of every slide into ``out_dir`` (see the module docstring for the layout).

    Args:
        slides: Slide files or :class:`SlideSpec` (with a per-slide µm/px).
        out_dir: Output folder.
        encoder: An :class:`~reportkd.vlm.encoders.EncoderBundle` or a name for ``get_encoder``.
        patch_size: Patch side in pixels at the target resolution.
        target_mpp: Target µm/px (default 0.5); exclusive with ``magnification``.
        magnification: Target magnification (20 → 0.5 µm/px).
        tissue_threshold: Minimal tissue fraction of a kept patch.
        slide_mpp: Level-0 µm/px for slides that record none (``--mpp``).
        batch_size: Patches per encoder call.
        num_workers: DataLoader reading processes (each opens its own slide handle).
        fmt: "safetensors" or "h5".
        coords_dir: Folder of coordinates files to reuse (e.g. another encoder's ``OUT/coords``).
        overwrite: Recompute slides whose features already exist.
        save_previews: Write ``previews/<slide>.png`` (mask and patches over a thumbnail).
        backend: Force a reader backend ("openslide", "tiffslide", "pil").
        progress: Show progress bars.
        on_slide_end: Called with each slide's result (after its files are written).
    """
    from tqdm.auto import tqdm

    if fmt not in FEATURE_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FEATURE_FORMATS)}, got {fmt!r}")
    if slide_mpp is not None and not slide_mpp > 0:
        raise ValueError(f"slide µm/px (--mpp) must be positive, got {slide_mpp}")
    if patch_size <= 0 or batch_size <= 0 or num_workers < 0:
        raise ValueError(
            f"need patch_size > 0, batch_size > 0, num_workers >= 0; got {patch_size}, {batch_size}, {num_workers}"
        )
    if not 0.0 <= tissue_threshold <= 1.0:
        raise ValueError(f"tissue_threshold must be in [0, 1], got {tissue_threshold}")
    if isinstance(encoder, str):
        from reportkd.vlm.encoders import get_encoder

        encoder = get_encoder(encoder)
    specs = _as_specs(slides)
    out = Path(out_dir)
    settings = {
        "patch_size": int(patch_size),
        "target_mpp": resolve_target_mpp(target_mpp, magnification),
        "tissue_threshold": float(tissue_threshold),
    }
    opts = {
        "slide_mpp": slide_mpp, "batch_size": batch_size, "num_workers": num_workers, "overwrite": overwrite,
        "coords_dir": Path(coords_dir) if coords_dir else None, "save_previews": save_previews, "backend": backend,
        "progress": progress,
    }  # fmt: skip
    ex = _Extractor(out, encoder, fmt, settings, opts)
    summary = ExtractSummary(
        settings={**settings, "encoder": encoder.name, "encoder_source": encoder.source, "format": fmt,
                  "slide_mpp_fallback": slide_mpp, "batch_size": batch_size, "num_workers": num_workers},
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "extract.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg_logger = logging.getLogger("reportkd.vlm")  # library warnings (at their usual level) go to the file too
    pkg_logger.addHandler(handler)
    run_log.addHandler(handler)  # the run's own record: every slide's status, failures with tracebacks
    try:
        stale = sum(clean_stale_temp_files(d) for d in (ex.features_dir, ex.coords_dir, out / "previews", out))
        run_log.info("start: %d slides, encoder %s (%s), %s", len(specs), encoder.name, encoder.source, settings)
        if stale:
            run_log.info("removed %d partial file(s) left by an interrupted run", stale)
        for spec in tqdm(specs, desc="slides", unit="slide", disable=not progress or len(specs) < 2):
            try:
                res = ex.run_one(spec)
            except (KeyboardInterrupt, SystemExit):
                run_log.warning("interrupted during %s", spec.path)
                raise
            except Exception as e:  # one slide's failure must not stop the others
                run_log.exception("%s failed", spec.path)
                res = SlideResult(spec.slide_id, str(spec.path), "failed", message=f"{type(e).__name__}: {e}")
            note = f" — {res.message}" if res.message else ""
            run_log.info("%s: %s, %d patches, %.1f s%s", res.slide_id, res.status, res.num_patches, res.seconds, note)
            if res.status == "failed":
                logger.warning(
                    "%s: %s — %s (details: %s)", res.slide_id, res.status, res.message[:200], handler.baseFilename
                )
            summary.results.append(res)
            write_json(out / "extract_summary.json", summary.to_dict())
            if on_slide_end is not None:
                on_slide_end(res)
        run_log.info("end: %s", summary.counts)
    finally:
        pkg_logger.removeHandler(handler)
        run_log.removeHandler(handler)
        handler.close()
    return summary
