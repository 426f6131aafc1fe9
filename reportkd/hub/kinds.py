"""Model kinds: how a saved model folder is recognised, which of its files may be uploaded, what its card says.

Each family registers its own kind from its own package (the core names none), as peft registers its methods::

    # reportkd/vlm/slide/model_kind.py, called from reportkd/vlm/slide/__init__.py
    register_model_kind(ModelKind(
        name="slide_encoder", title="Slide encoder (patch features → slide embedding)",
        detect=lambda folder: read_config(folder).get("model_type") == "reportkd_slide_encoder",
        files=(*MODEL_FILES, "alignment_config.json", *under("text_encoder", MODEL_FILES)),
        card_template="slide_encoder.md", card_context=my_context,  # (folder, ctx) -> extra template variables
    ))

So that ``reportkd push DIR`` can recognise a folder without importing every family, each family also declares an
entry point in the ``reportkd.model_kinds`` group (``pyproject.toml``), named after its kind, pointing to a function
that registers it; :func:`load_model_kinds` calls them lazily, the first time a kind is looked up. A kind that fails
to load is logged at WARNING level (its name and the error) and the others still work.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from ..registry import Registry

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "reportkd.model_kinds"
# Tokenizer files (``save_pretrained`` of slow, fast and sentencepiece tokenizers).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "*.tiktoken", "chat_template.jinja", "chat_template.json")  # fmt: skip
# What every transformers-style model folder may upload: weights (safetensors only), configs, tokenizer, provenance
# (distillation.json) and metrics (eval_results.json). The card (README.md) is always allowed.
MODEL_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "generation_config.json",
               "distillation.json", "eval_results.json", *TOKENIZER_FILES)  # fmt: skip


def under(folder: str, patterns: Sequence[str]) -> tuple[str, ...]:
    """``patterns`` inside the subfolder ``folder`` (``under("text_encoder", MODEL_FILES)``).

    Args:
        folder: Subfolder (relative, ``/``-separated).
        patterns: File patterns (``*`` never crosses a ``/``; ``**`` does).
    """
    return tuple(f"{folder.strip('/')}/{p}" for p in patterns)


@dataclass(frozen=True)
class ModelKind:
    """A kind of saved model folder the toolkit produces.

    Args:
        name: Registry key (``"mtcnn"``, ``"causal_lm"``, ``"open_clip"``, ``"slide_encoder"``…).
        title: What the card calls it.
        detect: ``folder -> bool``: whether a saved folder is of this kind (cheap: file names and configs).
        files: The allow-list: patterns of the relative paths a push uploads (``*`` stays within a folder, ``**``
            crosses folders). Anything else is left out, with a warning. See :data:`MODEL_FILES`, :func:`under`.
        card_template: Card template: a file name in ``reportkd/cards/`` or a path.
        card_context: ``(folder, ctx) -> dict``: kind-specific template variables; may also override the common
            ones (``library_name``, ``base_model``, ``pipeline_tag``, ``tags``, ``eval_results``).
        required: Patterns that must each match an uploaded file (a push without them is refused).
        library_name: Front matter ``library_name``.
        pipeline_tag: Front matter ``pipeline_tag``.
        tags: Extra front matter tags.
        eval_task_type: ``model-index`` task type of the metrics (None: no model-index unless the context has one).
        metric_filter: Which flat metric names enter the model-index (None: all numeric ones).
    """

    name: str
    title: str
    detect: Callable[[Path], bool]
    files: tuple[str, ...]
    card_template: str
    card_context: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None
    required: tuple[str, ...] = ()
    library_name: str | None = None
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = ()
    eval_task_type: str | None = None
    metric_filter: Callable[[str], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for pattern in (*self.files, *self.required):
            if pattern.startswith("/") or ".." in pattern.split("/"):
                raise ValueError(f"Model kind {self.name!r}: file pattern {pattern!r} must stay inside the folder.")

    def allows(self, rel_path: str) -> bool:
        """Whether the allow-list names ``rel_path`` (relative, ``/``-separated)."""
        return matches_any(rel_path, self.files)


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")


def register_model_kind(kind: ModelKind, *, override: bool = False) -> ModelKind:
    """Registers a model kind; refuses a different kind under an existing name (the same object again is a no-op).

    Args:
        kind: The kind.
        override: Replace a kind of the same name.
    """
    return MODEL_KINDS.register(kind.name, kind, override=override)


@cache
def _entry_points() -> tuple[Any, ...]:
    from importlib.metadata import entry_points

    return tuple(entry_points(group=ENTRY_POINT_GROUP))


_failed: set[str] = set()


def load_model_kinds(name: str | None = None) -> None:
    """Calls the ``reportkd.model_kinds`` entry points not loaded yet (only ``name``'s when given).

    A kind whose entry point fails is logged at WARNING level with the error, once, and skipped.

    Args:
        name: Load only the entry point of this kind.
    """
    for ep in _entry_points():
        if (name is not None and ep.name != name) or ep.name in MODEL_KINDS or ep.name in _failed:
            continue
        try:
            ep.load()()
        except Exception as e:  # a broken or half-installed family must not break the others
            _failed.add(ep.name)
            logger.warning("model kind %r (%s) failed to load: %s: %s; folders of that kind cannot be pushed.",
                           ep.name, ep.value, type(e).__name__, e)  # fmt: skip
            continue
        if ep.name not in MODEL_KINDS:
            _failed.add(ep.name)
            logger.warning("model kind entry point %r (%s) registered no kind of that name.", ep.name, ep.value)


def detect_model_kind(folder: str | Path) -> ModelKind:
    """The single registered kind that claims ``folder``.

    Args:
        folder: A saved model folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory: pass the folder a model was saved to.")
    load_model_kinds()
    matches = [MODEL_KINDS.get(n) for n in MODEL_KINDS.names() if MODEL_KINDS.get(n).detect(folder)]
    if not matches:
        raise ValueError(
            f"{folder} is not a model folder reportkd knows (files: {sorted(p.name for p in folder.iterdir())[:12]}). "
            f"Known kinds: {', '.join(MODEL_KINDS.names())}. Save the model with save_pretrained / save_open_clip, "
            "or register its kind with reportkd.hub.register_model_kind."
        )
    if len(matches) > 1:
        raise ValueError(
            f"{folder} looks like several model kinds ({', '.join(k.name for k in matches)}); "
            "pass kind= (CLI: --kind)."
        )
    return matches[0]


def get_model_kind(kind: str | ModelKind | None, folder: str | Path) -> ModelKind:
    """``kind`` itself, the registered kind of that name, or the kind detected from ``folder`` when None.

    Args:
        kind: A kind, a kind name or None.
        folder: The saved model folder (for detection).
    """
    if isinstance(kind, ModelKind):
        return kind
    if kind:
        load_model_kinds(kind)
        if kind not in MODEL_KINDS:
            load_model_kinds()
        return MODEL_KINDS.get(kind)
    return detect_model_kind(folder)


# -- helpers for kinds ---------------------------------------------------------------------------------------------
def read_config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    """``folder/name`` as a dict; ``{}`` when absent or not a JSON object (detection must not raise)."""
    try:
        data = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=512)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(rel_path: str, pattern: str) -> bool:
    """Whether a relative ``/``-separated path matches a pattern (``*`` and ``?`` stay within a folder, ``**``
    crosses folders; a pattern without ``/`` only matches top-level files)."""
    return _pattern_regex(pattern).match(rel_path) is not None


def matches_any(rel_path: str, patterns: Sequence[str]) -> bool:
    """Whether ``rel_path`` matches one of ``patterns`` (see :func:`matches`)."""
    return any(matches(rel_path, p) for p in patterns)
