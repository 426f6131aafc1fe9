"""Patch-encoder registry: names → factories returning an :class:`EncoderBundle` (model, transform, dim, precision).

Names resolve in this order:

1. a registered name (``uni_v1``, ``conch_v1``, ``resnet50_trunc``, ``random-tiny-cnn``, ...; see
   :func:`list_encoders`), added with ``@register_encoder("name")``;
2. a scheme prefix: ``timm:NAME`` (timm, also ``timm:hf-hub:org/name``), ``open_clip:ARCH``, ``hf-hub:org/name``
   (an open_clip hub model) and ``hf:org/name`` (transformers ``AutoModel``; ``trust_remote_code`` stays off);
3. an alias in a user weights map whose value is ``{"encoder": NAME, "weights": PATH}``;
4. a folder saved by a distilled patch-encoder student (``config.json`` with ``model_type:
   reportkd_patch_encoder`` + ``model.safetensors``, see ``reportkd.vlm.patch``): ``get_encoder("runs/x/student")``.

Weights: ``weights=`` (a file or folder; safetensors preferred) > the user weights map (a JSON file ``{"uni_v1":
"/models/uni/pytorch_model.bin"}`` given by ``weights_map=`` / ``--encoder-weights FILE.json`` or the
``REPORTKD_ENCODER_WEIGHTS`` environment variable; relative paths are relative to the JSON file) > the hub.
``random_init=True`` builds the architecture with random weights (speed tests and demos only).

Example::

    from reportkd.vlm.encoders import get_encoder
    enc = get_encoder("uni_v1", weights="/models/uni/pytorch_model.bin", device="cuda")
    feats = enc.encode(torch.stack([enc.transform(img) for img in patches]))  # (N, 1024) float32
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reportkd.registry import Registry

WEIGHTS_ENV = "REPORTKD_ENCODER_WEIGHTS"
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class EncoderWeightsError(FileNotFoundError):
    """Encoder weights that cannot be found, downloaded or loaded; the message says where to get them."""


@dataclass
class EncoderBundle:
    """A patch encoder ready for inference.

    Args:
        name: Registry name (recorded in features files).
        model: ``(B, 3, H, W)`` normalised pixels → ``(B, embedding_dim)``; in eval mode, frozen.
        transform: PIL image → ``(3, H, W)`` tensor (resize, crop, normalise).
        embedding_dim: Output width.
        precision: Inference dtype (autocast when not float32).
        source: Where the weights came from: ``"hub:<id>"``, ``"file:<path>"`` or ``"random"``.
        device: Where ``model`` lives.
        channels_last: Feed NHWC tensors (faster for CNNs with oneDNN/cuDNN).
        info: Architecture notes and the weights' address.
    """

    name: str
    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    embedding_dim: int
    precision: torch.dtype = torch.float32
    source: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def random(self) -> bool:
        """True when the weights are random (features carry no meaning)."""
        return self.source == "random"

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeds a batch of transformed patches; returns float32 ``(B, embedding_dim)`` on the model's device.

        Args:
            pixels: ``(B, 3, H, W)`` output of ``transform``, stacked.
        """
        x = pixels.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        use_autocast = self.precision != torch.float32
        ctx = torch.autocast(self.device.type, dtype=self.precision) if use_autocast else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = self.model(x)
        return out.float()


# name → factory(weights: Path | None, random_init: bool, **kwargs) -> EncoderBundle
ENCODERS: Registry[Callable[..., EncoderBundle]] = Registry("patch encoder")
# scheme → factory(identifier: str, weights, random_init, **kwargs) -> EncoderBundle
ENCODER_SCHEMES: Registry[Callable[..., EncoderBundle]] = Registry("patch encoder scheme")


def register_encoder(name: str, factory: Callable[..., EncoderBundle] | None = None, *, override: bool = False):
    """Registers an encoder factory under ``name`` (refuses duplicates); usable as a decorator.

    The factory takes ``weights`` (a local file/folder or None for the hub) and ``random_init`` keyword arguments
    (plus its own options) and returns an :class:`EncoderBundle`. Its docstring's first line is the description
    shown by :func:`list_encoders`.

    Args:
        name: Registry key (what ``--encoder`` takes).
        factory: The factory; omit to decorate.
        override: Replace an existing entry instead of raising.
    """
    return ENCODERS.register(name, factory, override=override)


def register_encoder_scheme(scheme: str, factory: Callable[..., EncoderBundle] | None = None, *, override=False):
    """Registers a ``scheme:identifier`` builder (``timm``, ``open_clip``, ``hf``, ...); refuses duplicates."""
    return ENCODER_SCHEMES.register(scheme, factory, override=override)


def list_encoders() -> dict[str, str]:
    """Registered encoder names → one-line descriptions."""
    return {n: ((ENCODERS.get(n).__doc__ or "").strip().splitlines() or [""])[0] for n in ENCODERS.names()}


def load_weights_map(source: str | Path | dict | None = None) -> dict[str, Any]:
    """The user weights map: ``{name: path}`` or ``{alias: {"encoder": name, "weights": path, "kwargs": {}}}``.

    Args:
        source: A dict, a JSON file, or None to read the file named by ``REPORTKD_ENCODER_WEIGHTS`` (empty if unset).
    """
    if isinstance(source, dict):
        return dict(source)
    source = source or os.environ.get(WEIGHTS_ENV)
    if not source:
        return {}
    path = Path(source)
    if not path.is_file():
        raise EncoderWeightsError(f"Encoder weights map {path} does not exist (from weights_map= or ${WEIGHTS_ENV}).")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"Encoder weights map {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"Encoder weights map {path} must be a JSON object {{name: path}}, got {type(raw).__name__}")

    def _abs(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (path.parent / q).resolve())

    out: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, str):
            out[name] = _abs(value) if value else None
        elif isinstance(value, dict) and "encoder" in value:
            out[name] = {**value, "weights": _abs(value["weights"]) if value.get("weights") else None}
        else:
            raise ValueError(
                f'Encoder weights map {path}: entry {name!r} must be a path or {{"encoder": ..., "weights": ...}}'
            )
    return out


PATCH_ENCODER_TYPE = "reportkd_patch_encoder"


def build_patch_backbone(timm_model: str, timm_kwargs: dict[str, Any]) -> nn.Module:
    """A random-init timm backbone without classifier (``num_classes=0``): a patch-encoder student's architecture.

    Args:
        timm_model: timm architecture name.
        timm_kwargs: Its keyword arguments (``img_size``, ``patch_size``, ``embed_dim``…).
    """
    import timm

    return timm.create_model(timm_model, pretrained=False, num_classes=0, **timm_kwargs)


def is_patch_encoder_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder saved by a patch-encoder student (``config.json`` of that model type)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == PATCH_ENCODER_TYPE
    except (json.JSONDecodeError, AttributeError):
        return False


def load_patch_encoder_folder(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone (weights loaded strictly, safetensors only) and ``config.json`` of a saved student folder.

    Args:
        folder: A folder with ``config.json`` (``model_type: reportkd_patch_encoder``) and ``model.safetensors``.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not is_patch_encoder_folder(folder):
        raise EncoderWeightsError(
            f"{folder} is not a saved patch encoder (config.json with model_type {PATCH_ENCODER_TYPE!r}); pass a "
            "folder written by reportkd.vlm.patch (e.g. <output_dir>/student)."
        )
    config = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise EncoderWeightsError(f"{folder} has no model.safetensors; save the student with save_pretrained.")
    backbone = build_patch_backbone(config["timm_model"], config.get("timm_kwargs", {}))
    backbone.load_state_dict(load_file(str(weights)))
    return backbone, config


def _folder_factory(folder: Path) -> Callable[..., EncoderBundle]:
    def factory(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
        """A distilled patch-encoder student saved as a folder."""
        if weights is not None or random_init:
            raise ValueError(f"{folder} is a saved student with its own weights: drop --encoder-weights/random_init.")
        from .transforms import PatchTransform

        backbone, config = load_patch_encoder_folder(folder)
        size = int(config["image_size"])
        transform = PatchTransform(size, crop=size, mean=tuple(config["mean"]), std=tuple(config["std"]))
        return EncoderBundle(str(folder), backbone, transform, int(config["embedding_dim"]), torch.float32,
                             f"file:{folder}", info={"timm_model": config["timm_model"]})  # fmt: skip

    return factory


def _resolve(name: str) -> Callable[..., EncoderBundle]:
    if name not in ENCODERS and is_patch_encoder_folder(name):
        return _folder_factory(Path(name))
    if name in ENCODERS:
        return ENCODERS.get(name)
    if name.startswith("hf-hub:"):
        return lambda **kw: ENCODER_SCHEMES.get("open_clip")(name, **kw)
    scheme, sep, ident = name.partition(":")
    if sep and scheme in ENCODER_SCHEMES:
        return lambda **kw: ENCODER_SCHEMES.get(scheme)(ident, **kw)
    raise KeyError(
        f"Unknown patch encoder {name!r}. Registered: {', '.join(ENCODERS.names())}. Or use a scheme: "
        f"{', '.join(s + ':NAME' for s in ENCODER_SCHEMES.names())}, hf-hub:ORG/NAME (open_clip)."
    )


def get_encoder(
    name: str,
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str | torch.dtype | None = None,
    weights_map: str | Path | dict | None = None,
    random_init: bool = False,
    channels_last: bool | None = None,
    **kwargs: Any,
) -> EncoderBundle:
    """Builds a patch encoder, frozen and in eval mode on ``device``.

    Args:
        name: Registered name, ``scheme:identifier`` or an alias from the weights map.
        weights: Local weights file or folder (overrides the weights map and the hub).
        device: Target device.
        precision: "fp32", "fp16", "bf16" or a dtype; default: the encoder's recommended precision on CUDA and
            float32 elsewhere.
        weights_map: User map (dict or JSON file); default: ``$REPORTKD_ENCODER_WEIGHTS``.
        random_init: Random weights, no download (speed tests, demos).
        channels_last: Override the encoder's NHWC preference.
        **kwargs: Passed to the factory.
    """
    wmap = load_weights_map(weights_map)
    target, entry = name, wmap.get(name)
    if isinstance(entry, dict):
        target = entry["encoder"]
        weights = weights or entry.get("weights")
        kwargs = {**entry.get("kwargs", {}), **kwargs}
    elif entry and weights is None:
        weights = entry
    factory = _resolve(target)
    if weights is not None and random_init:
        raise ValueError("Pass either weights or random_init=True, not both.")
    if weights is not None and not Path(weights).exists():
        raise EncoderWeightsError(f"Weights for encoder {name!r} not found at {weights}.")
    bundle = factory(weights=Path(weights) if weights is not None else None, random_init=random_init, **kwargs)
    device = torch.device(device)
    dtype = _precision(precision, bundle.precision, device)
    model = bundle.model.eval().requires_grad_(False)
    cl = bundle.channels_last if channels_last is None else channels_last
    model = model.to(device=device, memory_format=torch.channels_last) if cl else model.to(device)
    return replace(bundle, name=name, model=model, precision=dtype, device=device, channels_last=cl)


def _precision(precision: str | torch.dtype | None, recommended: torch.dtype, device: torch.device) -> torch.dtype:
    if precision is None:
        return recommended if device.type == "cuda" else torch.float32
    if isinstance(precision, torch.dtype):
        return precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]
