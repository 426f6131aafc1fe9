"""Whole-slide readers: OpenSlide, tiffslide and PIL behind one small interface, picked by :func:`open_slide`.

``open_slide(path)`` tries the registered backends in order (OpenSlide, then tiffslide, then PIL) and returns the
first that opens the file; a file none can read raises :class:`SlideReadError` listing why each refused it.
Every reader reports level-0 microns per pixel (``mpp``) and where it came from (``mpp_source``):

1. ``mpp=`` passed to :func:`open_slide` with ``override_mpp=True`` (a per-slide value from a slide list);
2. the slide's own properties (``openslide.mpp-x``, ``tiffslide.mpp-x`` or the TIFF resolution tags);
3. ``mpp=`` as a fallback for slides that record none (``reportkd extract --mpp``);
4. ``10 / objective power`` when only the magnification is recorded (approximate; logged).

A slide with none of these has ``mpp = None``; tiling it raises :class:`MissingMPPError`, whose message names
the ``--mpp`` flag. OpenSlide and tiffslide are optional (the ``wsi`` extra) and imported only when used.

Example::

    from reportkd.vlm.wsi import open_slide
    with open_slide("slide.svs") as slide:
        patch = slide.read_region((1024, 2048), level=0, size=(224, 224))  # (224, 224, 3) uint8 RGB
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reportkd.registry import Registry

logger = logging.getLogger(__name__)

MPP_RANGE = (0.02, 20.0)  # plausible level-0 µm/px of a microscope scan; values outside are ignored
DEFAULT_BACKENDS: tuple[str, ...] = ("openslide", "tiffslide", "pil")


class SlideReadError(RuntimeError):
    """A slide no backend can open or read (missing, corrupt, truncated or unsupported)."""


class MissingMPPError(ValueError):
    """A slide records no microns per pixel and none was given."""


def missing_mpp_message(name: str, backend: str) -> str:
    """The error text for a slide without µm/px: names the ``--mpp`` flag and the Python argument."""
    return (
        f"{name}: the slide records no microns per pixel (read with {backend}), so the patch size at the requested "
        "resolution is unknown. Pass the scan's level-0 µm/px: `reportkd extract ... --mpp 0.5` (0.5 is a typical "
        "20x scan, 0.25 a 40x scan), a `path,mpp` line in --slide-list, or open_slide(path, mpp=0.5)."
    )


class SlideReader(ABC):
    """One open slide: pyramid geometry, µm/px and region reads as RGB uint8 arrays.

    Subclasses implement :meth:`_open`, :meth:`read_region` and fill the geometry in ``_open``.

    Args:
        path: The slide file.
        mpp: Level-0 µm/px used when the slide records none (or always, with ``override_mpp``).
        override_mpp: Use ``mpp`` even when the slide records its own value.
    """

    backend: str = ""

    def __init__(self, path: str | Path, mpp: float | None = None, *, override_mpp: bool = False) -> None:
        self.path = Path(path)
        self.level_dimensions: list[tuple[int, int]] = []
        self.level_downsamples: list[float] = []
        self.properties: dict[str, Any] = {}
        self.fallback_reasons: list[str] = []  # why earlier backends refused the file (set by open_slide)
        self._open()
        if not self.level_dimensions:
            raise SlideReadError("no image levels")
        recorded = _plausible_mpp(self._recorded_mpp(), self.path)
        objective = self._objective_power()
        self.magnification: float | None = objective
        if mpp is not None and (override_mpp or recorded is None):
            self.mpp, self.mpp_source = float(mpp), "user"
        elif recorded is not None:
            self.mpp, self.mpp_source = recorded, "slide"
        elif objective:
            self.mpp, self.mpp_source = 10.0 / objective, "objective-power"
            logger.warning("%s records no µm/px; using 10/objective power = %.3f (approximate)", self.path, self.mpp)
        else:
            self.mpp, self.mpp_source = None, "missing"

    @abstractmethod
    def _open(self) -> None:
        """Opens the file and fills ``level_dimensions``, ``level_downsamples`` and ``properties``."""

    @abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Reads a (height, width, 3) uint8 RGB array.

        Args:
            location: Top-left (x, y) in level-0 pixels.
            level: Pyramid level to read from.
            size: (width, height) in pixels of ``level``. Areas outside the slide come back white.
        """

    def _recorded_mpp(self) -> float | None:
        return None

    def _objective_power(self) -> float | None:
        return None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (reading it loses no resolution)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + 1e-3):
                best = i if d >= self.level_downsamples[best] else best
        return best

    def get_thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide as an RGB array whose longer side is at most ``max_size``."""
        w, h = self.dimensions
        scale = max(w, h) / max_size
        level = self.best_level_for_downsample(max(scale, 1.0))
        lw, lh = self.level_dimensions[level]
        img = Image.fromarray(self.read_region((0, 0), level, (lw, lh)))
        img.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
        return np.asarray(img)

    def info(self) -> dict[str, Any]:
        """Geometry and resolution as a JSON-serialisable dict."""
        return {
            "reader": self.backend,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(float(d), 6) for d in self.level_downsamples],
            "slide_mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "magnification": self.magnification,
        }

    def close(self) -> None:  # noqa: B027 (optional hook: backends without a handle keep it)
        """Releases the file handle."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, levels={self.level_dimensions}, mpp={self.mpp})"


READERS: Registry[type[SlideReader]] = Registry("slide reader")


def register_reader(name: str, *, override: bool = False):
    """Class decorator registering a :class:`SlideReader` backend under ``name`` (refuses duplicates)."""

    def deco(cls: type[SlideReader]) -> type[SlideReader]:
        cls.backend = name
        READERS.register(name, cls, override=override)
        return cls

    return deco


def _plausible_mpp(value: Any, path: Path) -> float | None:
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(mpp) or mpp <= 0:
        return None
    if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        logger.warning("%s: ignoring implausible recorded resolution of %.4g µm/px (not a microscope scan)", path, mpp)
        return None
    return mpp


def _float_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """RGBA/LA/L → RGB uint8; fully transparent pixels (outside the scanned area) become white."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        rgb = arr[..., :3].copy()
        rgb[arr[..., 3] == 0] = 255
        return rgb
    return np.ascontiguousarray(arr[..., :3])


@register_reader("openslide")
class OpenSlideReader(SlideReader):
    """OpenSlide (Aperio SVS, Hamamatsu, MIRAX, Leica, pyramidal TIFF, ...). Needs ``pip install 'reportkd[wsi]'``."""

    def _open(self) -> None:
        try:
            import openslide
        except ImportError as e:  # openslide-bin missing shows up as an ImportError/OSError too
            raise ImportError(f"openslide is not installed ({e}); pip install 'reportkd[wsi]'") from None
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as e:
            raise SlideReadError(str(e)) from None
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.properties = dict(self._slide.properties)

    def _recorded_mpp(self) -> float | None:
        return _float_or_none(self.properties.get("openslide.mpp-x"))

    def _objective_power(self) -> float | None:
        return _float_or_none(self.properties.get("openslide.objective-power"))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        img = self._slide.read_region((int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1])))
        return _to_rgb(np.asarray(img))

    def get_thumbnail(self, max_size: int) -> np.ndarray:
        return _to_rgb(np.asarray(self._slide.get_thumbnail((max_size, max_size)).convert("RGB")))

    def close(self) -> None:
        if getattr(self, "_slide", None) is not None:
            self._slide.close()
            self._slide = None


@register_reader("tiffslide")
class TiffSlideReader(SlideReader):
    """tiffslide (pure Python on tifffile): SVS, generic pyramidal and plain TIFF. Needs ``pip install tiffslide``."""

    def _open(self) -> None:
        try:
            import tiffslide
        except ImportError as e:
            raise ImportError(f"tiffslide is not installed ({e}); pip install 'reportkd[wsi]'") from None
        try:
            self._slide = tiffslide.TiffSlide(str(self.path))
        except Exception as e:  # tifffile raises TiffFileError, ValueError, KeyError... on bad files
            raise SlideReadError(f"{type(e).__name__}: {e}") from None
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.properties = {k: v for k, v in self._slide.properties.items() if v is not None}

    def _recorded_mpp(self) -> float | None:
        return _float_or_none(self.properties.get("tiffslide.mpp-x"))

    def _objective_power(self) -> float | None:
        return _float_or_none(self.properties.get("tiffslide.objective-power"))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        x, y, sw, sh = int(location[0]), int(location[1]), int(size[0]), int(size[1])
        d, (lw, lh) = self.level_downsamples[level], self.level_dimensions[level]
        lx, ly = int(math.floor(x / d)), int(math.floor(y / d))
        if lx >= 0 and ly >= 0 and lx + sw <= lw and ly + sh <= lh:
            return _to_rgb(self._slide.read_region((x, y), level, (sw, sh), as_array=True))
        return self._read_padded(x, y, level, sw, sh)  # tiffslide pads with black; slides' background is white

    def _read_padded(self, x: int, y: int, level: int, sw: int, sh: int) -> np.ndarray:
        """Regions crossing the slide border: read the inside part, pad with white."""
        out = np.full((sh, sw, 3), 255, np.uint8)
        d = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(math.floor(x / d)), int(math.floor(y / d))
        ix0, iy0, ix1, iy1 = max(lx, 0), max(ly, 0), min(lx + sw, lw), min(ly + sh, lh)
        if ix1 > ix0 and iy1 > iy0:
            part = self._slide.read_region(
                (int(round(ix0 * d)), int(round(iy0 * d))), level, (ix1 - ix0, iy1 - iy0), as_array=True
            )
            part = _to_rgb(part)[: iy1 - iy0, : ix1 - ix0]
            out[iy0 - ly : iy0 - ly + part.shape[0], ix0 - lx : ix0 - lx + part.shape[1]] = part
        return out

    def get_thumbnail(self, max_size: int) -> np.ndarray:
        return _to_rgb(np.asarray(self._slide.get_thumbnail((max_size, max_size)).convert("RGB")))

    def close(self) -> None:
        if getattr(self, "_slide", None) is not None:
            self._slide.close()
            self._slide = None


@register_reader("pil")
class PILReader(SlideReader):
    """PIL: plain images and single-level TIFFs, decoded whole into memory once per handle (one per worker).

    Only for images that fit in memory; pyramidal slides should go through OpenSlide or tiffslide.
    """

    max_pixels = 1_000_000_000

    def _open(self) -> None:
        try:
            with Image.open(self.path) as img:
                if img.width * img.height > self.max_pixels:
                    raise SlideReadError(
                        f"{self.path.name} is {img.width}x{img.height} px, too large to decode whole with PIL; "
                        "install OpenSlide or tiffslide (pip install 'reportkd[wsi]')."
                    )
                tags = dict(getattr(img, "tag_v2", {}) or {})
                self._image = np.asarray(img.convert("RGB"))
        except SlideReadError:
            raise
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), DecompressionBombError
            raise SlideReadError(f"{type(e).__name__}: {e}") from None
        h, w = self._image.shape[:2]
        self.level_dimensions, self.level_downsamples = [(w, h)], [1.0]
        self.properties = {f"tiff.{k}": v for k, v in tags.items() if k in (282, 283, 296)}
        self._tags = tags

    def _recorded_mpp(self) -> float | None:
        xres, unit = _float_or_none(self._tags.get(282)), self._tags.get(296)
        if xres is None:
            return None
        per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit) if unit is not None else 2)  # inch is the TIFF default
        return per_unit / xres if per_unit else None

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if level != 0:
            raise ValueError(f"{self.path.name} has a single level (PIL reader); got level={level}")
        x, y, sw, sh = int(location[0]), int(location[1]), int(size[0]), int(size[1])
        h, w = self._image.shape[:2]
        if 0 <= x and 0 <= y and x + sw <= w and y + sh <= h:
            return self._image[y : y + sh, x : x + sw].copy()
        out = np.full((sh, sw, 3), 255, np.uint8)
        ix0, iy0, ix1, iy1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = self._image[iy0:iy1, ix0:ix1]
        return out

    def close(self) -> None:
        self._image = np.zeros((0, 0, 3), np.uint8)


def open_slide(
    path: str | Path,
    *,
    mpp: float | None = None,
    override_mpp: bool = False,
    backend: str | None = None,
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
) -> SlideReader:
    """Opens a slide with the first backend that can read it.

    Args:
        path: Slide file (.svs, .tif, .ndpi, .mrxs, ... or a plain image).
        mpp: Level-0 µm/px for slides that record none (or always, with ``override_mpp``).
        override_mpp: Use ``mpp`` even when the slide records its own value.
        backend: Force one backend (a name in ``READERS``); ``None`` tries ``backends`` in order.
        backends: Fallback order when ``backend`` is None.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SlideReadError: No backend can open it; the message lists each backend's reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Slide {path} does not exist.")
    if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number of µm/px, got {mpp}")
    names = (backend,) if backend else backends
    reasons = []
    for name in names:
        cls = READERS.get(name)
        try:
            reader = cls(path, mpp, override_mpp=override_mpp)
        except (ImportError, SlideReadError) as e:
            reasons.append(f"{name}: {e}")
            continue
        except Exception as e:  # a damaged file can break a backend anywhere in its parser
            reasons.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if reasons:
            logger.info("%s: read with %s (%s)", path.name, name, "; ".join(reasons))
        reader.fallback_reasons = reasons
        return reader
    raise SlideReadError(
        f"Cannot read slide {path}: " + " | ".join(reasons) + ". The file may be corrupt, truncated or not a "
        "slide; check it opens in a viewer (QuPath) and that the wsi extra is installed (pip install 'reportkd[wsi]')."
    )
