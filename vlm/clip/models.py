"""Loading and saving open_clip teachers and students.

A model is named the way open_clip names it, plus two local forms:

- an open_clip model name (``"ViT-B-32"``, or a config shipped here such as ``"reportkd-clip-student"``) with
  an optional ``pretrained`` tag or ``.safetensors`` file;
- ``"hf-hub:org/repo"`` (e.g. ``"hf-hub:wisdomik/QuiltNet-B-32"``) or ``"local-dir:/path"``;
- a directory written by :func:`save_open_clip` (open_clip's hub layout: ``open_clip_config.json`` +
  ``open_clip_model.safetensors``), which ``open_clip.create_model_and_transforms("local-dir:DIR")`` also loads;
- a JSON model config file (``embed_dim``, ``vision_cfg``, ``text_cfg``), registered with
  ``open_clip.add_model_config``, with ``pretrained`` pointing at a ``.safetensors`` checkpoint.

Only safetensors checkpoints are read from local paths (no pickle).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
CONFIG_FILENAME = "open_clip_config.json"
WEIGHTS_FILENAME = "open_clip_model.safetensors"
_registered: set[Path] = set()


def register_model_configs(*paths: str | Path) -> list[str]:
    """Registers the configs shipped in ``model_configs/`` (once) and any given JSON files or folders.

    Args:
        *paths: Extra JSON config files or folders of them.

    Returns:
        The model names the given paths (or the shipped folder, when none are given) provide.
    """
    targets = [Path(p).resolve() for p in paths] or [CONFIG_DIR.resolve()]
    if CONFIG_DIR.resolve() not in _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered.add(CONFIG_DIR.resolve())
    for path in targets:
        if not path.exists():
            raise FileNotFoundError(f"Model config {path} does not exist.")
        if path not in _registered:
            open_clip.add_model_config(path)
            _registered.add(path)
    files = [p for t in targets for p in ([t] if t.is_file() else sorted(t.glob("*.json")))]
    return [p.stem for p in files]


@dataclass
class OpenCLIPBundle:
    """An open_clip model with everything needed to feed it.

    Args:
        model: The open_clip model (``CLIP`` / ``CustomTextCLIP``).
        preprocess_train: Training image transform (open_clip's, with its augmentation).
        preprocess_val: Evaluation image transform (resize, centre crop, normalise).
        tokenizer: The model's tokenizer (a callable ``list[str] -> LongTensor``).
        name: The name it was loaded from.
        model_cfg: The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) needed to save it.
    """

    model: nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable
    name: str
    model_cfg: dict[str, Any] = field(default_factory=dict)


def _resolve_name(name_or_path: str) -> tuple[str, dict[str, Any] | None]:
    """Maps a user-facing name to an open_clip model name and (when local) its config."""
    register_model_configs()
    if name_or_path.startswith(("hf-hub:", "local-dir:")):
        return name_or_path, None
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_FILENAME).is_file():
            raise FileNotFoundError(
                f"{path} has no {CONFIG_FILENAME}: point at a directory written by save_open_clip (or "
                "open_clip's push_to_hf_hub), or at a JSON model config file."
            )
        return f"local-dir:{path}", None
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"Model config {path} does not exist.")
        cfg = json.loads(path.read_text())
        if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise ValueError(f"{path} is not an open_clip model config: it needs embed_dim, vision_cfg and text_cfg.")
        register_model_configs(path)
        return path.stem, cfg
    if name_or_path not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip model {name_or_path!r}. Use an open_clip name (see open_clip.list_models(); shipped "
            f"here: {', '.join(register_model_configs())}), 'hf-hub:org/repo', a directory written by "
            "save_open_clip, or a JSON model config file."
        )
    return name_or_path, None


def load_open_clip(
    name_or_path: str,
    *,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    **kwargs: Any,
) -> OpenCLIPBundle:
    """Loads an open_clip model with its transforms and tokenizer.

    Args:
        name_or_path: open_clip name, ``hf-hub:`` id, ``local-dir:`` / saved directory, or JSON config file.
        pretrained: open_clip pretrained tag (``"openai"``…) or a local ``.safetensors`` checkpoint; ignored for
            ``hf-hub:`` ids and saved directories, which carry their weights.
        device: Device to put the model on.
        precision: open_clip precision (``"fp32"``, ``"bf16"``, ``"amp"``…).
        **kwargs: Passed to ``open_clip.create_model_and_transforms`` (``force_image_size``…).
    """
    name, cfg = _resolve_name(str(name_or_path))
    if pretrained is not None and Path(pretrained).suffix and Path(pretrained).suffix != ".safetensors":
        raise ValueError(
            f"Refusing to load {pretrained}: only .safetensors checkpoints are read from local files (no pickle). "
            "Convert it with safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')."
        )
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, precision=precision, **kwargs
    )
    tokenizer = open_clip.get_tokenizer(name)
    if cfg is None:
        cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"Could not read the model config of {name_or_path!r}; save_open_clip will need one.")
    return OpenCLIPBundle(model, preprocess_train, preprocess_val, tokenizer, str(name_or_path), copy.deepcopy(cfg))


def unwrap_student(model: nn.Module) -> nn.Module:
    """The plain open_clip model inside a PEFT model, with LoRA weights merged into a copy."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def _base(model: nn.Module) -> nn.Module:
    """The open_clip model inside a PEFT model, without merging (for reading attributes)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_preprocess_cfg(model: nn.Module) -> dict[str, Any]:
    """The preprocessing open_clip stores on the model's visual tower (size, mean, std, interpolation…)."""
    visual = _base(model).visual
    cfg = dict(getattr(visual, "preprocess_cfg", {}))
    cfg.setdefault("mean", getattr(visual, "image_mean", None))
    cfg.setdefault("std", getattr(visual, "image_std", None))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if v is not None}


def save_open_clip(
    model: nn.Module,
    save_dir: str | Path,
    *,
    model_cfg: Mapping[str, Any],
    tokenizer: Any | None = None,
    model_card: str | None = None,
) -> Path:
    """Saves a model in open_clip's hub layout, loadable with ``create_model_and_transforms("local-dir:DIR")``.

    Writes ``open_clip_config.json`` (model and preprocessing config), ``open_clip_model.safetensors`` and,
    when given, the tokenizer files and a ``README.md`` model card. Upload the folder with
    ``huggingface_hub.upload_folder`` to load it as ``hf-hub:org/repo``. PEFT students are merged first.

    Args:
        model: The open_clip model (or a PEFT model around one).
        save_dir: Output folder (created).
        model_cfg: The open_clip model config (``OpenCLIPBundle.model_cfg``).
        tokenizer: Tokenizer with ``save_pretrained`` (HF tokenizers); open_clip's default BPE needs no files.
        model_card: Markdown model card (or render it from the saved folder: :func:`reportkd.hub.write_card`).
    """
    if not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError("model_cfg must be an open_clip model config with embed_dim, vision_cfg and text_cfg.")
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    plain = unwrap_student(model)
    state = {k: v.detach().contiguous().cpu() for k, v in plain.state_dict().items()}
    save_file(state, str(save_dir / WEIGHTS_FILENAME), metadata={"format": "pt"})
    config = {"model_cfg": dict(model_cfg), "preprocess_cfg": model_preprocess_cfg(plain)}
    (save_dir / CONFIG_FILENAME).write_text(json.dumps(config, indent=2))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(save_dir))
    if model_card is not None:
        (save_dir / "README.md").write_text(model_card)
    return save_dir


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``total``, ``visual``, ``text`` (everything else but ``logit_*``) and ``trainable``."""
    plain = unwrap_student(model)
    total = sum(p.numel() for p in plain.parameters())
    visual = sum(p.numel() for p in plain.visual.parameters())
    scales = sum(p.numel() for n, p in plain.named_parameters() if n.startswith("logit_"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "visual": visual, "text": total - visual - scales, "trainable": trainable}


def image_size_of(model: nn.Module) -> tuple[int, int]:
    """The ``(height, width)`` the model's visual tower expects."""
    size = getattr(_base(model).visual, "image_size", 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def context_length_of(model: nn.Module) -> int:
    """The text tower's context length."""
    plain = _base(model)
    length = getattr(plain, "context_length", None) or getattr(getattr(plain, "text", None), "context_length", None)
    if length is None:
        raise ValueError(f"Cannot find the context length of {type(plain).__name__}.")
    return int(length)


def dummy_inputs(model: nn.Module, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero images and start/end-token texts at the model's input sizes, on its device."""
    plain = _base(model)
    device = next(plain.parameters()).device
    image = torch.zeros(batch_size, 3, *image_size_of(plain), device=device)
    text = torch.zeros(batch_size, context_length_of(plain), dtype=torch.long, device=device)
    vocab = getattr(plain, "vocab_size", None) or getattr(getattr(plain, "text", None), "vocab_size", 0)
    text[:, 0], text[:, 1] = (49406, 49407) if vocab >= 49408 else (1, 2)  # CLIP BPE start / end of text
    return image, text


@torch.no_grad()
def count_flops(model: nn.Module) -> dict[str, int]:
    """Forward FLOPs of one image and one text at the model's input sizes (``torch.utils.flop_counter``)."""
    plain = _base(model)
    image, text = dummy_inputs(plain)
    was_training = plain.training
    plain.train()  # eval mode may take fused attention kernels that the counter does not see
    flops = {}
    for key, fn in (("image", lambda: plain.encode_image(image)), ("text", lambda: plain.encode_text(text))):
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        flops[key] = int(counter.get_total_flops())
    plain.train(was_training)
    flops["total"] = flops["image"] + flops["text"]
    return flops
