"""Layer matching declared as data and resolved through forward hooks (torchdistill-style).

A :class:`LayerMatch` names a student module and a teacher module by their ``named_modules`` paths, what to
compare (``"hidden"``: the module's output; ``"attention"``: the attention map of an attention module), the loss
and its weight. :class:`LayerCapture` puts forward hooks on the named modules and collects what they produce, so
any layer becomes a distillation point without touching model code.

Attention maps are recomputed from the attention module's inputs (open_clip calls ``nn.MultiheadAttention`` with
``need_weights=False``), for ``nn.MultiheadAttention``, open_clip's ``Attention`` and timm-style attention
(a ``qkv`` linear layer with ``num_heads``).

Example (YAML)::

    layer_matches:
      - {student: visual.transformer.resblocks.2, teacher: visual.transformer.resblocks.3, kind: hidden, weight: 1.0}
      - {student: visual.transformer.resblocks.2.attn, teacher: visual.transformer.resblocks.3.attn,
         kind: attention, tokens: cls, weight: 1.0}
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

HookKind = Literal["hidden", "attention"]
_HIDDEN_LOSSES = ("mse", "cosine", "smooth_l1")
_TOKENS = ("all", "cls", "mean")


@dataclass(frozen=True)
class LayerMatch:
    """One student layer matched to one teacher layer.

    Args:
        student: Module path in the student (``dict(model.named_modules())`` key), e.g.
            ``"visual.transformer.resblocks.1"``. PEFT wrapping is looked through.
        teacher: Module path in the teacher.
        kind: ``"hidden"`` compares module outputs; ``"attention"`` compares attention maps of attention modules.
        weight: Loss weight.
        loss: Hidden states: ``"mse"``, ``"cosine"`` or ``"smooth_l1"``; attention maps: ``"kl"`` (teacher to
            student, per query row; the default ``"mse"`` turns into ``"kl"`` for attention matches).
        projection: Hidden states: learn ``nn.Linear(student_width, teacher_width)`` when the widths differ.
        tokens: ``"all"`` compares every token (vision patch grids of different sizes are resized to the
            student's); ``"cls"`` the first token (attention: the CLS row over patches, resized to the student's
            grid, so different patch sizes work); ``"mean"`` the token average (hidden states only). Text towers
            with different context lengths or tokenizers need ``"mean"``.
    """

    student: str
    teacher: str
    kind: HookKind = "hidden"
    weight: float = 1.0
    loss: str = "mse"
    projection: bool = True
    tokens: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in ("hidden", "attention"):
            raise ValueError(f"LayerMatch kind must be 'hidden' or 'attention', got {self.kind!r}.")
        if not self.weight >= 0:
            raise ValueError(f"LayerMatch weight must be >= 0, got {self.weight}.")
        if self.kind == "hidden" and self.loss not in _HIDDEN_LOSSES:
            raise ValueError(f"Hidden-state loss must be one of {_HIDDEN_LOSSES}, got {self.loss!r}.")
        if self.kind == "attention" and self.loss == "mse":
            object.__setattr__(self, "loss", "kl")  # the dataclass default; attention maps always use KL
        if self.kind == "attention" and self.loss != "kl":
            raise ValueError(f"Attention maps are compared with loss='kl', got {self.loss!r}.")
        if self.tokens not in _TOKENS or (self.kind == "attention" and self.tokens == "mean"):
            allowed = _TOKENS if self.kind == "hidden" else ("all", "cls")
            raise ValueError(f"tokens must be one of {allowed} for {self.kind} matches, got {self.tokens!r}.")

    @property
    def name(self) -> str:
        """A unique, readable key: ``"<kind>:<student path>"``."""
        return f"{self.kind}:{self.student}"

    @property
    def module_key(self) -> str:
        """``name`` usable as an ``nn.ModuleDict`` key."""
        return self.name.replace(".", "_").replace(":", "__")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> LayerMatch:
        """Builds a match from a mapping, naming unknown keys in the error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"Unknown LayerMatch keys {unknown}; allowed: {sorted(known)}.")
        missing = [k for k in ("student", "teacher") if k not in spec]
        if missing:
            raise ValueError(f"LayerMatch needs {missing}: the module paths in the student and the teacher.")
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_layer_matches(spec: str | Sequence[Mapping[str, Any] | LayerMatch] | None) -> list[LayerMatch]:
    """Turns a list of mappings (or a JSON / YAML string of one) into :class:`LayerMatch` objects.

    Args:
        spec: ``None``, a list of mappings / matches, or a JSON or YAML string holding such a list.
    """
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            import yaml

            spec = yaml.safe_load(spec)
        if not isinstance(spec, list):
            raise ValueError("layer_matches must be a list of {student, teacher, kind, ...} mappings.")
    matches = [m if isinstance(m, LayerMatch) else LayerMatch.from_dict(m) for m in spec]
    names = [m.name for m in matches]
    if len(set(names)) != len(names):
        raise ValueError(f"Each student layer may be matched once per kind; duplicates in {names}.")
    return matches


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``, looking through PEFT and DDP wrappers; the error suggests close paths.

    Args:
        model: The model.
        path: A ``named_modules`` path.
    """
    candidates = [model]
    if hasattr(model, "get_base_model"):
        candidates.append(model.get_base_model())
    if hasattr(model, "module"):
        candidates.append(model.module)
    for root in candidates:
        modules = dict(root.named_modules())
        if path in modules:
            return modules[path]
    names = list(dict(candidates[-1].named_modules()))
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    hint = f" Close names: {close}." if close else f" Some names: {names[1:8]}."
    raise KeyError(f"No module {path!r} in {type(model).__name__}.{hint} Use a path from model.named_modules().")


# ---------------------------------------------------------------------------------------------------------------
# Attention maps from attention-module inputs
# ---------------------------------------------------------------------------------------------------------------
def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def attention_from_inputs(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """Recomputes the ``(B, heads, L_q, L_k)`` attention probabilities of an attention module from its inputs.

    Args:
        module: ``nn.MultiheadAttention``, open_clip ``Attention`` (``in_proj_weight`` + ``num_heads``) or a
            timm-style attention module (``qkv`` linear + ``num_heads``).
        args: Positional inputs the module was called with.
        kwargs: Keyword inputs (``attn_mask``…).
    """
    if isinstance(module, nn.MultiheadAttention):
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        if not module.batch_first:
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        d, h = module.embed_dim, module.num_heads
        if module._qkv_same_embed_dim:
            w_q, w_k = module.in_proj_weight[:d], module.in_proj_weight[d : 2 * d]
        else:
            w_q, w_k = module.q_proj_weight, module.k_proj_weight
        b_q = b_k = None
        if module.in_proj_bias is not None:
            b_q, b_k = module.in_proj_bias[:d], module.in_proj_bias[d : 2 * d]
        q, k = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k)
        mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)
        scale, q_norm, k_norm = (d // h) ** -0.5, None, None
    elif hasattr(module, "in_proj_weight") and hasattr(module, "num_heads"):
        if getattr(module, "logit_scale", None) is not None:
            raise NotImplementedError(
                "Attention maps of scaled-cosine attention are not supported; match another layer."
            )
        x = args[0] if args else kwargs["x"]
        q, k, _ = F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
        h = module.num_heads
        mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        scale, q_norm, k_norm = module.scale, getattr(module, "ln_q", None), getattr(module, "ln_k", None)
    elif hasattr(module, "qkv") and hasattr(module, "num_heads"):
        x = args[0] if args else kwargs["x"]
        q, k, _ = module.qkv(x).chunk(3, dim=-1)
        h = module.num_heads
        mask = kwargs.get("attn_mask")
        scale = getattr(module, "scale", (q.shape[-1] // h) ** -0.5)
        q_norm, k_norm = getattr(module, "q_norm", None), getattr(module, "k_norm", None)
    else:
        raise TypeError(
            f"Cannot compute attention maps of {type(module).__name__}: point an 'attention' LayerMatch at an "
            "nn.MultiheadAttention, open_clip Attention or timm Attention module (e.g. '...resblocks.0.attn')."
        )
    bsz, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    q = q.reshape(bsz, lq, h, -1).transpose(1, 2)
    k = k.reshape(bsz, lk, h, -1).transpose(1, 2)
    if q_norm is not None:
        q, k = q_norm(q), k_norm(k)
    scores = (q * scale) @ k.transpose(-1, -2)
    mask = _additive_mask(mask, scores.dtype)
    if mask is not None:
        scores = scores + (mask.view(bsz, h, lq, lk) if mask.dim() == 3 else mask)
    return scores.float().softmax(dim=-1)


def _first_tensor(output: Any) -> torch.Tensor:
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    if isinstance(output, Mapping):
        for value in output.values():
            if torch.is_tensor(value):
                return value
    raise TypeError(f"A hooked module returned {type(output).__name__}; a 'hidden' match needs a tensor output.")


class LayerCapture:
    """Forward hooks that collect hidden states or attention maps of named modules.

    ``captured[f"{kind}:{path}"]`` holds the latest value; call :meth:`clear` before each forward and
    :meth:`remove` (or use the object as a context manager) to take the hooks off. Set ``enabled = False`` to
    skip the work (forward passes whose layers are not needed); :meth:`recording` records for one block only,
    so hooks left on a model cost nothing outside it.

    Args:
        model: The model to hook.
        requests: ``(path, kind)`` pairs.
    """

    def __init__(self, model: nn.Module, requests: Iterable[tuple[str, HookKind]]) -> None:
        self.captured: dict[str, torch.Tensor] = {}
        self.enabled = True
        self._handles = []
        for path, kind in dict.fromkeys(requests):
            module = resolve_module(model, path)
            key = f"{kind}:{path}"
            if kind == "attention":
                if not (
                    isinstance(module, nn.MultiheadAttention)
                    or hasattr(module, "in_proj_weight")
                    or hasattr(module, "qkv")
                ):
                    raise TypeError(
                        f"{path!r} is a {type(module).__name__}, not an attention module: point 'attention' matches "
                        "at e.g. 'visual.transformer.resblocks.0.attn'."
                    )
                hook = self._attention_hook(key)
            else:
                hook = self._hidden_hook(key)
            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def _hidden_hook(self, key: str):
        def hook(module, args, kwargs, output):
            if self.enabled:
                self.captured[key] = _first_tensor(output)

        return hook

    def _attention_hook(self, key: str):
        def hook(module, args, kwargs, output):
            if self.enabled:
                self.captured[key] = attention_from_inputs(module, args, kwargs)

        return hook

    def clear(self) -> None:
        self.captured = {}

    @contextlib.contextmanager
    def recording(self, enabled: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Records into a fresh dict (yielded) inside the block, then stops recording and lets go of it.

        Args:
            enabled: Record at all (False: the hooks stay idle, the dict stays empty).
        """
        self.captured = {}
        self.enabled = enabled
        try:
            yield self.captured
        finally:
            self.enabled = False
            self.captured = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# ---------------------------------------------------------------------------------------------------------------
# Token alignment
# ---------------------------------------------------------------------------------------------------------------
def _square_grid(num_patches: int) -> int | None:
    side = math.isqrt(num_patches)
    return side if side * side == num_patches else None


def resize_patch_tokens(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Resizes ``(B, 1 + g*g, D)`` vision tokens (CLS + square patch grid) to ``num_tokens`` = ``1 + h*h``."""
    if tokens.shape[1] == num_tokens:
        return tokens
    src, dst = _square_grid(tokens.shape[1] - 1), _square_grid(num_tokens - 1)
    if src is None or dst is None:
        raise ValueError(
            f"Cannot align {tokens.shape[1]} teacher tokens with {num_tokens} student tokens (not CLS + square "
            "patch grids, e.g. text of different context lengths): use tokens='cls' or tokens='mean'."
        )
    cls, grid = tokens[:, :1], tokens[:, 1:]
    b, _, d = grid.shape
    grid = grid.transpose(1, 2).reshape(b, d, src, src)
    grid = F.interpolate(grid.float(), size=(dst, dst), mode="bilinear", align_corners=False).to(tokens.dtype)
    return torch.cat([cls, grid.reshape(b, d, dst * dst).transpose(1, 2)], dim=1)


def select_tokens(hidden: torch.Tensor, tokens: str) -> torch.Tensor:
    """``(B, L, D)`` → ``(B, L, D)`` (``"all"``), ``(B, D)`` (``"cls"``: first token; ``"mean"``: average)."""
    if hidden.dim() == 2 or tokens == "all":
        return hidden
    return hidden[:, 0] if tokens == "cls" else hidden.mean(dim=1)


def cls_attention_grid(attention: torch.Tensor, grid: int | None = None) -> torch.Tensor:
    """``(B, H, L, L)`` attention → ``(B, g, g)`` CLS-to-patch attention averaged over heads, renormalised.

    Args:
        attention: Attention probabilities with a CLS token first and a square patch grid after it.
        grid: Resize to a ``grid x grid`` patch grid (default: keep).
    """
    row = attention[:, :, 0, 1:].mean(dim=1)
    side = _square_grid(row.shape[-1])
    if side is None:
        raise ValueError(f"{row.shape[-1]} patch tokens do not form a square grid; CLS attention needs one.")
    maps = row.reshape(-1, 1, side, side)
    if grid is not None and grid != side:
        maps = F.interpolate(maps, size=(grid, grid), mode="area" if grid < side else "bilinear")
    maps = maps[:, 0].clamp_min(0)
    return maps / maps.flatten(1).sum(-1).clamp_min(1e-12)[:, None, None]
