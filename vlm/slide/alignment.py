"""Slide-report alignment: a slide encoder and a text encoder projected into one space (CLIP-style, as TITAN's
vision-language stage aligns slides with pathology reports).

Text encoders come from a registry of backends, named explicitly in a spec ``"backend:name"``:

- ``"hf:PATH_OR_ID"`` (or a bare path): any ``transformers`` text model (``AutoModel`` + ``AutoTokenizer``), pooled
  by masked mean or the first token;
- ``"open_clip:NAME_OR_DIR"``: the text tower of an open_clip model (an open_clip name, a config shipped in
  ``reportkd.vlm.clip``, ``hf-hub:`` / ``local-dir:`` ids, or a folder saved by this module), with open_clip's
  tokenizer.

:class:`SlideReportModel` saves to a folder whose top level is the slide encoder itself (``config.json`` +
``model.safetensors``: ``AutoModel.from_pretrained(folder)`` loads it alone), plus ``alignment.safetensors`` (the
projections and logit scale), ``alignment_config.json`` and ``text_encoder/``; it loads back with
:meth:`SlideReportModel.from_pretrained`. Weights are safetensors only; remote code stays off unless asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, BatchEncoding

from reportkd.registry import Registry

from .modeling_slide import SlideEncoderModel

ALIGNMENT_FORMAT = "reportkd.slide_report.v1"
TEXT_CONFIG = "text_encoder.json"
TEXT_ENCODERS: Registry[type[TextEncoder]] = Registry("text encoder backend")


class TextEncoder(nn.Module):
    """A text model that maps token ids to one vector per text.

    Subclasses set ``backend`` and ``output_dim`` and implement ``forward``, ``tokenize``, ``save`` and ``load``.
    """

    backend = ""
    output_dim: int

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        raise NotImplementedError

    def save(self, save_dir: str | Path) -> None:
        raise NotImplementedError


@TEXT_ENCODERS.register("hf")
class HFTextEncoder(TextEncoder):
    """A ``transformers`` text model with masked-mean or first-token (CLS) pooling.

    Args:
        model: The text model (its output has ``last_hidden_state``).
        tokenizer: Its tokenizer.
        pooling: ``"mean"`` or ``"cls"``.
        max_length: Truncation length of the tokenizer.
    """

    backend = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any, *, pooling: str = "mean", max_length: int = 256) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}.")
        self.model, self.tokenizer, self.pooling, self.max_length = model, tokenizer, pooling, max_length
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.output_dim = int(config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        w = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1).clamp_min(1)

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return BatchEncoding({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})

    def save(self, save_dir: str | Path) -> None:
        save_dir = Path(save_dir)
        self.model.save_pretrained(save_dir)
        self.tokenizer.save_pretrained(save_dir)
        (save_dir / TEXT_CONFIG).write_text(
            json.dumps({"backend": self.backend, "pooling": self.pooling, "max_length": self.max_length}, indent=2)
        )

    @classmethod
    def load(
        cls,
        name: str,
        *,
        pooling: str | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        **unused: Any,
    ) -> HFTextEncoder:
        """Loads a ``transformers`` model and tokenizer (safetensors only).

        Args:
            name: Local folder or hub id.
            pooling: ``"mean"`` / ``"cls"`` (default: the saved choice, else mean).
            max_length: Tokenizer truncation (default: the saved value, else 256).
            trust_remote_code: Allow custom modelling code (off by default).
        """
        saved = _saved_text_config(name)
        model = AutoModel.from_pretrained(name, use_safetensors=True, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        return cls(
            model,
            tokenizer,
            pooling=pooling or saved.get("pooling", "mean"),
            max_length=max_length or saved.get("max_length", 256),
        )


@TEXT_ENCODERS.register("open_clip")
class OpenCLIPTextEncoder(TextEncoder):
    """The text tower of an open_clip model (``TextTransformer``) with open_clip's BPE tokenizer.

    Args:
        tower: The text tower: ``forward(input_ids) -> (B, embed_dim)``.
        model_cfg: ``{"embed_dim": int, "text_cfg": {...}}`` that rebuilds the tower.
    """

    backend = "open_clip"

    def __init__(self, tower: nn.Module, model_cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.tower, self.model_cfg = (
            tower,
            {"embed_dim": model_cfg["embed_dim"], "text_cfg": dict(model_cfg["text_cfg"])},
        )
        self.output_dim = int(model_cfg["embed_dim"])
        self.context_length = int(self.model_cfg["text_cfg"].get("context_length", 77))

    @staticmethod
    def build_tower(model_cfg: Mapping[str, Any]) -> nn.Module:
        """A randomly initialised text tower from ``{"embed_dim", "text_cfg"}``."""
        from open_clip.model import _build_text_tower

        return _build_text_tower(model_cfg["embed_dim"], dict(model_cfg["text_cfg"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.tower(input_ids)

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        import open_clip

        if not hasattr(self, "_tokenizer"):
            self._tokenizer = open_clip.SimpleTokenizer(context_length=self.context_length)
        return BatchEncoding({"input_ids": self._tokenizer(list(texts))})

    def save(self, save_dir: str | Path) -> None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.tower.state_dict().items()}, str(save_dir / "model.safetensors"))
        (save_dir / TEXT_CONFIG).write_text(json.dumps({"backend": self.backend, **self.model_cfg}, indent=2))

    @classmethod
    def load(cls, name: str, *, pretrained: str | None = None, **unused: Any) -> OpenCLIPTextEncoder:
        """A folder saved by :meth:`save`, or the text tower of any model ``load_open_clip`` accepts.

        Args:
            name: Folder, open_clip model name / config, ``hf-hub:`` or ``local-dir:`` id.
            pretrained: open_clip pretrained tag or ``.safetensors`` file for a model name.
        """
        saved = _saved_text_config(name)
        if saved.get("backend") == cls.backend:
            enc = cls(cls.build_tower(saved), saved)
            enc.tower.load_state_dict(load_file(str(Path(name) / "model.safetensors")))
            return enc
        from ..clip.models import load_open_clip

        bundle = load_open_clip(name, pretrained=pretrained)
        cfg = {"embed_dim": bundle.model_cfg["embed_dim"], "text_cfg": bundle.model_cfg["text_cfg"]}
        if isinstance(getattr(bundle.model, "text", None), nn.Module):  # CustomTextCLIP
            return cls(bundle.model.text, cfg)
        enc = cls(cls.build_tower(cfg), cfg)
        source = bundle.model.state_dict()
        enc.tower.load_state_dict({k: source[k] for k in enc.tower.state_dict() if k in source}, strict=False)
        return enc


def _saved_text_config(name: str | Path) -> dict[str, Any]:
    path = Path(name) / TEXT_CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def load_text_encoder(spec: str, **kwargs: Any) -> TextEncoder:
    """A text encoder from ``"backend:name"`` (``hf:`` or ``open_clip:``), a saved folder, or a bare hf path / id.

    Args:
        spec: The text encoder (see the module docstring).
        **kwargs: Backend options (``pooling``, ``max_length``, ``pretrained``, ``trust_remote_code``).
    """
    backend, sep, name = spec.partition(":")
    if not sep or backend not in TEXT_ENCODERS:
        saved = _saved_text_config(spec)
        backend, name = saved.get("backend", "hf"), spec
    return TEXT_ENCODERS.get(backend).load(name, **kwargs)


class SlideReportModel(nn.Module):
    """Slide encoder + text encoder + linear projections into a shared space + learnable logit scale.

    Args:
        slide_encoder: The slide encoder.
        text_encoder: The text encoder.
        embed_dim: Width of the shared space (default: the slide encoder's hidden size).
        init_logit_scale: Initial ``log`` of the logit scale (CLIP: ``log(1 / 0.07)``).
    """

    def __init__(
        self,
        slide_encoder: SlideEncoderModel,
        text_encoder: TextEncoder,
        *,
        embed_dim: int | None = None,
        init_logit_scale: float = math.log(1 / 0.07),
    ) -> None:
        super().__init__()
        self.slide_encoder, self.text_encoder = slide_encoder, text_encoder
        self.embed_dim = embed_dim or slide_encoder.config.hidden_size
        self.slide_projection = nn.Linear(slide_encoder.config.hidden_size, self.embed_dim, bias=False)
        self.text_projection = nn.Linear(text_encoder.output_dim, self.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def encode_slide(
        self,
        features: torch.Tensor,
        grid: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        *,
        normalize: bool = True,
    ) -> torch.Tensor:
        """``(B, embed_dim)`` slide embeddings in the shared space."""
        x = self.slide_projection(self.slide_encoder(features, grid, patch_mask).slide_embeds)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(
        self,
        input_ids: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        *,
        normalize: bool = True,
    ) -> torch.Tensor:
        """``(B, embed_dim)`` text embeddings; ``input_ids`` may be the mapping :meth:`tokenize` returns."""
        if isinstance(input_ids, Mapping):
            input_ids, attention_mask = input_ids["input_ids"], input_ids.get("attention_mask")
        x = self.text_projection(self.text_encoder(input_ids, attention_mask))
        return F.normalize(x, dim=-1) if normalize else x

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        """Tokenises texts for :meth:`encode_text` (and the collator)."""
        return self.text_encoder.tokenize(texts)

    def forward(
        self,
        features: torch.Tensor,
        grid: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **unused: Any,
    ) -> dict[str, torch.Tensor]:
        """Normalised slide and text embeddings and the (exponentiated, clamped to 100) logit scale."""
        out = self.slide_encoder(features, grid, patch_mask)
        slide = F.normalize(self.slide_projection(out.slide_embeds), dim=-1)
        result = {
            "slide_features": slide,
            "slide_embeds": out.slide_embeds,
            "patch_embeds": out.patch_embeds,
            "logit_scale": self.logit_scale.exp().clamp(max=100),
        }
        if input_ids is not None:
            result["text_features"] = self.encode_text(input_ids, attention_mask)
        return result

    # -- persistence ---------------------------------------------------------------------------------------------
    def save_pretrained(self, save_dir: str | Path, *, model_card: str | None = None) -> Path:
        """Writes the model folder (see the module docstring) and an optional ``README.md`` model card."""
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        self.slide_encoder.save_pretrained(save_dir)
        self.text_encoder.save(save_dir / "text_encoder")
        head = {
            "slide_projection.weight": self.slide_projection.weight,
            "text_projection.weight": self.text_projection.weight,
            "logit_scale": self.logit_scale,
        }
        save_file({k: v.detach().contiguous().cpu() for k, v in head.items()}, str(save_dir / "alignment.safetensors"))
        (save_dir / "alignment_config.json").write_text(
            json.dumps(
                {"format": ALIGNMENT_FORMAT, "embed_dim": self.embed_dim, "text_backend": self.text_encoder.backend},
                indent=2,
            )
        )
        if model_card is not None:
            (save_dir / "README.md").write_text(model_card)
        return save_dir

    @classmethod
    def from_pretrained(cls, save_dir: str | Path, *, trust_remote_code: bool = False) -> SlideReportModel:
        """Loads a folder written by :meth:`save_pretrained`.

        Args:
            save_dir: The folder.
            trust_remote_code: Run code shipped in the folder (slide encoder and hf text encoder); off by default.
        """
        save_dir = Path(save_dir)
        config_path = save_dir / "alignment_config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{save_dir} has no alignment_config.json: not a SlideReportModel folder (a plain "
                "slide encoder loads with AutoModel.from_pretrained / load_slide_model)."
            )
        config = json.loads(config_path.read_text())
        slide = AutoModel.from_pretrained(save_dir, use_safetensors=True, trust_remote_code=trust_remote_code)
        text = TEXT_ENCODERS.get(config["text_backend"]).load(
            str(save_dir / "text_encoder"), trust_remote_code=trust_remote_code
        )
        model = cls(slide, text, embed_dim=config["embed_dim"])
        head = load_file(str(save_dir / "alignment.safetensors"))
        with torch.no_grad():
            model.slide_projection.weight.copy_(head["slide_projection.weight"])
            model.text_projection.weight.copy_(head["text_projection.weight"])
            model.logit_scale.copy_(head["logit_scale"])
        return model


def load_slide_model(path: str | Path, *, trust_remote_code: bool = False) -> SlideEncoderModel | SlideReportModel:
    """A :class:`SlideReportModel` folder or a plain saved :class:`SlideEncoderModel` (``AutoModel``).

    Args:
        path: The folder.
        trust_remote_code: Run code shipped in the folder (``auto_map``); off by default, so it is never run.
    """
    path = Path(path)
    if (path / "alignment_config.json").is_file():
        return SlideReportModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds neither a slide encoder (config.json) nor a slide-report model "
            "(alignment_config.json); save one with save_pretrained."
        )
    return AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code)
