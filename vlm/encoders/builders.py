"""Builders shared by the encoder entries: timm, open_clip and transformers models, local weights, pooling heads.

Also registers the generic schemes ``timm:NAME``, ``open_clip:ARCH`` (and ``hf-hub:ORG/NAME``) and ``hf:ID``.
Heavy libraries (timm, open_clip, transformers) are imported inside the builders.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import EncoderBundle, EncoderWeightsError, register_encoder_scheme
from .transforms import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchTransform

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` (preferred) or a tensors-only torch file (``weights_only=True``).

    Args:
        path: A checkpoint file, or a folder holding one of ``model.safetensors``, ``pytorch_model.bin``, ...
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in CHECKPOINT_NAMES if (path / n).is_file()), None)
        if found is None:
            raise EncoderWeightsError(
                f"No checkpoint in folder {path}; expected one of {', '.join(CHECKPOINT_NAMES)}."
            )
        path = found
    if not path.is_file():
        raise EncoderWeightsError(f"Checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    logger.info("%s is a torch pickle; loading tensors only (weights_only=True). Prefer .safetensors.", path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderWeightsError(
            f"Cannot load {path} as a tensors-only checkpoint ({type(e).__name__}: {e}). Convert it to safetensors "
            "(safetensors.torch.save_file(state_dict, 'model.safetensors')) on a machine you trust."
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and len(obj) <= 4:
            obj = obj[key]
    if not isinstance(obj, dict):
        raise EncoderWeightsError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors.")
    return obj


def load_weights_into(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    name: str,
    path: Path,
    url: str = "",
    ignore: tuple[str, ...] = (),
) -> None:
    """Loads ``state_dict`` strictly, after stripping ``module.`` / ``model.`` prefixes and dropping ``ignore`` keys.

    Raises:
        EncoderWeightsError: Missing or unexpected keys (the checkpoint is not this architecture).
    """
    for prefix in ("module.", "model."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore)} if ignore else state_dict
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise EncoderWeightsError(f"{path} does not fit the {name} architecture: {str(e)[:500]}") from None
    if missing or unexpected:
        raise EncoderWeightsError(
            f"{path} does not fit the {name} architecture: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}. Is it the {name} checkpoint"
            + (f" ({url})" if url else "")
            + "?"
        )


def hub_offline() -> bool:
    """True when Hugging Face downloads are switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def hub_error(name: str, hub_id: str, url: str, err: BaseException | None = None) -> EncoderWeightsError:
    """The error for weights that could not come from the hub: says how to load them offline."""
    why = "downloads are off (HF_HUB_OFFLINE)" if err is None else f"{type(err).__name__}: {str(err)[:300]}"
    return EncoderWeightsError(
        f"Could not load the {name} weights from the hub ({hub_id}): {why}. Gated models need access granted on "
        f"the model page and `hf auth login`. Offline: download them ({url or hub_id}) and pass "
        f"`--encoder-weights PATH` / get_encoder({name!r}, weights=PATH), or list them in a JSON map "
        f'{{"{name}": "/path/to/weights"}} given by `--encoder-weights MAP.json` or $REPORTKD_ENCODER_WEIGHTS.'
    )


def from_hub(name: str, hub_id: str, url: str, load: Any) -> Any:
    """Calls ``load()`` (a hub download) and turns any failure into a :class:`EncoderWeightsError`."""
    if hub_offline():
        raise hub_error(name, hub_id, url)
    try:
        return load()
    except Exception as e:
        raise hub_error(name, hub_id, url, e) from e


class ClsMeanPool(nn.Module):
    """ViT tokens → ``[CLS, mean of patch tokens]`` (Virchow's embedding); skips ``num_prefix`` class/register tokens.

    Args:
        backbone: A timm ViT built with ``global_pool=""`` (returns all tokens).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_prefix = int(getattr(backbone, "num_prefix_tokens", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone(x)
        return torch.cat([tokens[:, 0], tokens[:, self.num_prefix :].mean(dim=1)], dim=-1)


class FirstOutput(nn.Module):
    """Wraps a module whose output may be a tuple (open_clip towers) and returns the first element."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out[0] if isinstance(out, tuple) else out


class HFImagePool(nn.Module):
    """A transformers vision model → one vector per image.

    Args:
        model: The model.
        pool: "image_embeds" (CLIP projection), "image_features" (``get_image_features``), "cls" (first token of
            ``last_hidden_state``), "mean" (mean of the other tokens) or "pooler" (``pooler_output``).
    """

    def __init__(self, model: nn.Module, pool: str) -> None:
        super().__init__()
        if pool not in ("image_embeds", "image_features", "cls", "mean", "pooler"):
            raise ValueError(f"unknown pool {pool!r}")
        self.model, self.pool = model, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "image_features":
            out = self.model.get_image_features(pixel_values=x)
            return out if torch.is_tensor(out) else out.pooler_output
        out = self.model(pixel_values=x)
        if self.pool == "image_embeds":
            return out.image_embeds
        if self.pool == "pooler":
            return out.pooler_output
        h = out.last_hidden_state
        return h[:, 0] if self.pool == "cls" else h[:, 1:].mean(dim=1)


def build_timm(
    name: str,
    *,
    arch: str,
    hub_id: str,
    timm_kwargs: dict[str, Any],
    embedding_dim: int,
    transform: PatchTransform,
    precision: torch.dtype = torch.float32,
    url: str = "",
    weights: Path | None = None,
    random_init: bool = False,
    pool: str = "model",
    ignore_keys: tuple[str, ...] = (),
) -> EncoderBundle:
    """A timm encoder: ``arch`` + ``timm_kwargs`` for local/random weights, ``hub_id`` when downloading.

    Args:
        pool: "model" (the model's own output) or "cls_mean" (Virchow: CLS ⊕ mean patch token).
        ignore_keys: Checkpoint key prefixes to drop (e.g. a classifier head).
    """
    import timm

    if weights is None and not random_init:
        model = from_hub(name, hub_id, url, lambda: timm.create_model(hub_id, pretrained=True, **timm_kwargs))
        source = f"hub:{hub_id}"
    else:
        model = timm.create_model(arch, pretrained=False, **timm_kwargs)
        source = "random"
        if weights is not None:
            sd = load_state_dict_file(weights)
            load_weights_into(model, sd, name=name, path=weights, url=url, ignore=ignore_keys)
            source = f"file:{weights}"
    if pool == "cls_mean":
        model = ClsMeanPool(model)
    info = {"arch": arch, "timm_kwargs": {k: _describe(v) for k, v in timm_kwargs.items()}, "hub_id": hub_id}
    return EncoderBundle(name, model, transform, embedding_dim, precision, source, info={**info, "url": url})


def _describe(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else getattr(v, "__name__", str(v))


def build_open_clip(
    name: str,
    *,
    arch: str,
    hub_id: str | None,
    embedding_dim: int | None = None,
    precision: torch.dtype = torch.float32,
    url: str = "",
    weights: Path | None = None,
    random_init: bool = False,
    pretrained: str | None = None,
) -> EncoderBundle:
    """The image tower of an open_clip model (projected embedding, not normalised)."""
    import open_clip

    if weights is None and not random_init and (hub_id or pretrained):
        ident = hub_id or f"{arch}/{pretrained}"
        load = (
            (lambda: open_clip.create_model_from_pretrained(hub_id)[0])
            if hub_id
            else (lambda: open_clip.create_model(arch, pretrained=pretrained))
        )
        model, source = from_hub(name, ident, url, load), f"hub:{ident}"
    elif weights is None and not random_init:
        raise EncoderWeightsError(f"open_clip:{arch} needs weights=PATH, pretrained=TAG or random_init=True.")
    else:
        model, source = open_clip.create_model(arch, pretrained=None, device=torch.get_default_device()), "random"
        if weights is not None:
            load_weights_into(model, load_state_dict_file(weights), name=name, path=weights, url=url)
            source = f"file:{weights}"
    visual = model.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(getattr(visual, "image_mean", None) or OPENAI_CLIP_MEAN)
    std = tuple(getattr(visual, "image_std", None) or OPENAI_CLIP_STD)
    transform = PatchTransform(size, mean=mean, std=std, interpolation="bicubic")
    dim = embedding_dim or int(getattr(visual, "output_dim", 0) or _infer_dim(FirstOutput(visual), size))
    return EncoderBundle(name, FirstOutput(visual), transform, dim, precision, source, info={"arch": arch, "url": url})


def build_hf(
    name: str,
    *,
    model_cls: str,
    hub_id: str,
    config: Any | None,
    pool: str,
    embedding_dim: int | None,
    transform: PatchTransform | None,
    precision: torch.dtype = torch.float32,
    url: str = "",
    weights: Path | None = None,
    random_init: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    ignore_keys: tuple[str, ...] = (),
) -> EncoderBundle:
    """A transformers vision model (``trust_remote_code`` off).

    Args:
        model_cls: Class name in ``transformers`` (e.g. "ViTModel", "CLIPVisionModelWithProjection", "AutoModel").
        config: Config for random init or a single weights file; None reads it from the hub / weights folder.
        pool: See :class:`HFImagePool`.
        transform: None derives it from the image processor of ``hub_id`` / the weights folder.
    """
    import transformers

    cls = getattr(transformers, model_cls)
    kw = dict(model_kwargs or {})
    if weights is not None and weights.is_dir():
        model, info = cls.from_pretrained(
            str(weights), local_files_only=True, trust_remote_code=False, output_loading_info=True, **kw
        )
        bad = list(info.get("missing_keys", [])) + [str(m) for m in info.get("mismatched_keys", [])]
        if bad:  # transformers would only warn and leave those weights random
            raise EncoderWeightsError(
                f"{weights} does not fit the {name} architecture ({model_cls}): {len(bad)} missing or mismatched "
                f"weights, e.g. {bad[:3]}. Is it the {name} checkpoint" + (f" ({url})?" if url else "?")
            )
        source = f"file:{weights}"
    elif weights is not None or random_init:
        if config is None:
            config = from_hub(name, hub_id, url, lambda: transformers.AutoConfig.from_pretrained(hub_id))
        model = cls.from_config(config, **kw) if model_cls.startswith("Auto") else cls(config, **kw)
        source = "random"
        if weights is not None:
            load_weights_into(
                model, load_state_dict_file(weights), name=name, path=weights, url=url, ignore=ignore_keys
            )
            source = f"file:{weights}"
    else:
        model = from_hub(name, hub_id, url, lambda: cls.from_pretrained(hub_id, trust_remote_code=False, **kw))
        source = f"hub:{hub_id}"
    if transform is None:
        local = weights is not None and weights.is_dir()
        transform = _hf_transform(str(weights) if local else hub_id, name, url, local=local)
    wrapped = HFImagePool(model, pool)
    local_dir = weights is not None and weights.is_dir()  # a saved model may be a variant: measure its width
    dim = _infer_dim(wrapped, transform.output_size or 224) if local_dir or not embedding_dim else embedding_dim
    return EncoderBundle(name, wrapped, transform, dim, precision, source, info={"model_cls": model_cls, "url": url})


def _hf_transform(source: str, name: str, url: str, *, local: bool) -> PatchTransform:
    from transformers import AutoImageProcessor

    load = lambda: AutoImageProcessor.from_pretrained(source, local_files_only=local)  # noqa: E731
    proc = load() if local else from_hub(name, source, url, load)
    size = getattr(proc, "size", None) or {}
    crop = getattr(proc, "crop_size", None) or {}
    side = int(size.get("shortest_edge") or size.get("height") or 224)
    crop_side = int(crop.get("height") or side) if getattr(proc, "do_center_crop", False) else side
    mean = tuple(getattr(proc, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(proc, "image_std", None) or IMAGENET_STD)
    return PatchTransform(side, crop=crop_side, mean=mean, std=std, interpolation="bicubic")


def _infer_dim(model: nn.Module, size: int) -> int:
    with torch.inference_mode():
        return int(model.eval()(torch.zeros(1, 3, size, size)).shape[-1])


# ---------------------------------------------------------------- generic schemes


@register_encoder_scheme("timm")
def timm_scheme(identifier: str, *, weights: Path | None = None, random_init: bool = False, **kwargs) -> EncoderBundle:
    """``timm:NAME``: any timm model with its head removed (``num_classes=0``) and its own eval transform."""
    import timm
    from timm.data import resolve_model_data_config

    timm_kwargs = {"num_classes": 0, **kwargs}
    if weights is None and not random_init:
        model = from_hub(
            identifier, identifier, "", lambda: timm.create_model(identifier, pretrained=True, **timm_kwargs)
        )
        source = f"hub:{identifier}"
    else:
        model = timm.create_model(identifier, pretrained=False, **timm_kwargs)
        source = "random"
        if weights is not None:
            load_weights_into(
                model, load_state_dict_file(weights), name=identifier, path=weights, ignore=("head.", "fc.")
            )
            source = f"file:{weights}"
    cfg = resolve_model_data_config(model)
    crop = int(cfg["input_size"][-1])
    size = int(round(crop / float(cfg.get("crop_pct", 1.0) or 1.0)))
    interp = cfg.get("interpolation", "bicubic")
    transform = PatchTransform(
        size,
        crop=crop,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=interp if interp in ("bilinear", "bicubic", "nearest", "lanczos") else "bicubic",
    )
    is_cnn = not hasattr(model, "patch_embed")
    dim = _infer_dim(model, crop)
    return EncoderBundle(f"timm:{identifier}", model, transform, dim, torch.float32, source, channels_last=is_cnn)


@register_encoder_scheme("open_clip")
def open_clip_scheme(
    identifier: str, *, weights: Path | None = None, random_init: bool = False, pretrained: str | None = None
) -> EncoderBundle:
    """``open_clip:ARCH`` (with ``weights=``, ``pretrained=TAG`` or random) or ``hf-hub:ORG/NAME`` (downloaded)."""
    hub_id = identifier if identifier.startswith("hf-hub:") else None
    arch = identifier.removeprefix("hf-hub:") if hub_id else identifier
    return build_open_clip(
        identifier, arch=arch, hub_id=hub_id, weights=weights, random_init=random_init, pretrained=pretrained
    )


@register_encoder_scheme("hf")
def hf_scheme(
    identifier: str, *, weights: Path | None = None, random_init: bool = False, pool: str | None = None
) -> EncoderBundle:
    """``hf:ORG/NAME``: transformers ``AutoModel`` (CLS token, or ``get_image_features`` for CLIP-like models)."""
    from transformers import AutoConfig

    local = weights is not None and weights.is_dir()
    src = str(weights) if local else identifier
    load = lambda: AutoConfig.from_pretrained(src, trust_remote_code=False, local_files_only=local)  # noqa: E731
    config = load() if local else from_hub(identifier, src, "", load)
    is_clip = hasattr(config, "vision_config") and hasattr(config, "projection_dim")
    return build_hf(
        f"hf:{identifier}",
        model_cls="AutoModel",
        hub_id=identifier,
        config=config,
        pool=pool or ("image_features" if is_clip else "cls"),
        embedding_dim=None,
        transform=None,
        weights=weights,
        random_init=random_init,
    )
