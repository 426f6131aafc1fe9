"""Model kinds: how to recognise a saved model folder and what its card says.

Adding a kind is one call::

    register_model_kind(ModelKind(
        name="slide_encoder", title="Slide encoder (patch features → slide embedding)",
        detect=lambda folder: (folder / "slide_encoder_config.json").is_file(),
        template="slide_encoder.md", library_name="pytorch", pipeline_tag="feature-extraction",
        collect=my_collect,  # folder -> extra template variables ("arch", "load_code", …)
    ))

Detection asks every registered kind; exactly one must claim the folder (or pass ``kind=`` explicitly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..registry import Registry
from .cards import BASE_TAGS, common_context, eval_results_for, hub_id, read_optional_json


@dataclass(frozen=True)
class ModelKind:
    """A kind of saved model the toolkit produces.

    Args:
        name: Registry key (``"mtcnn"``, ``"causal_lm"``, ``"open_clip"``…).
        title: What the card calls it.
        detect: ``folder -> bool``: whether a saved folder is of this kind (cheap: look at file names and configs).
        template: Card template: a file name in ``reportkd/cards/`` or a path.
        collect: ``(folder, context) -> dict``: kind-specific template variables; may also override the common ones
            (``library_name``, ``base_model``, ``pipeline_tag``, ``tags``, ``eval_results``).
        library_name: Front matter ``library_name``.
        pipeline_tag: Front matter ``pipeline_tag``.
        tags: Extra front matter tags.
        required: Files that must be present to push (names or glob patterns, each must match a file).
        eval_task_type: ``model-index`` task type of the metrics.
        include: Glob patterns (may reach into subfolders) uploaded too when they match, e.g. a slide-report
            model's ``text_encoder/**/*``.
    """

    name: str
    title: str
    detect: Callable[[Path], bool]
    template: str
    collect: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None
    library_name: str | None = None
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    eval_task_type: str | None = None
    metric_filter: Callable[[str], bool] | None = field(default=None, compare=False)
    include: tuple[str, ...] = ()


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")
# Modules that register further kinds when imported (kept lazy: they pull in their model code).
KIND_PLUGINS: list[str] = ["reportkd.vlm.slide.model_card"]


def load_kind_plugins() -> None:
    """Imports :data:`KIND_PLUGINS` so their kinds can be detected (a plugin that fails to import is skipped)."""
    import importlib
    import logging

    for module in KIND_PLUGINS:
        try:
            importlib.import_module(module)
        except ImportError as e:  # pragma: no cover - optional parts
            logging.getLogger(__name__).debug("model-kind plugin %s not loaded: %s", module, e)


def register_model_kind(kind: ModelKind, *, override: bool = False) -> ModelKind:
    """Registers a model kind (refuses an existing name unless ``override``).

    Args:
        kind: The kind.
        override: Replace a kind of the same name.
    """
    return MODEL_KINDS.register(kind.name, kind, override=override)


def detect_model_kind(folder: str | Path) -> ModelKind:
    """The single registered kind that claims ``folder``.

    Args:
        folder: A saved model folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory: pass the folder a model was saved to.")
    load_kind_plugins()
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
    """``kind`` resolved by name, or detected from ``folder`` when None."""
    if isinstance(kind, ModelKind):
        return kind
    if kind:
        load_kind_plugins()
        return MODEL_KINDS.get(kind)
    return detect_model_kind(folder)


def card_context(folder: str | Path, repo_id: str, kind: ModelKind, license: str | None = None) -> dict[str, Any]:
    """The template variables of a saved folder: the common ones and the kind's own.

    Args:
        folder: The saved model folder.
        repo_id: The repository named in the card.
        kind: The model kind.
        license: Licence in the front matter (default: ``distillation.json``'s, else ``other``).
    """
    folder = Path(folder)
    ctx = common_context(folder, repo_id, kind.title)
    ctx.update(kind.collect(folder, ctx) if kind.collect else {})
    ctx["license"] = license or ctx["license"]
    ctx["hub_base_model"] = hub_id(ctx.get("base_model"))
    return ctx


def render_context(kind: ModelKind, ctx: dict[str, Any]) -> ModelCard:
    """Renders ``kind``'s template with the variables ``ctx`` (see :func:`card_context`) into a model card.

    Args:
        kind: The model kind.
        ctx: Template variables.
    """
    from ..cards import template_path

    dataset = (ctx["datasets"] or ["held-out split"])[0]
    eval_results = ctx.get("eval_results")
    if eval_results is None and kind.eval_task_type:
        eval_results = eval_results_for(
            ctx["metrics"], task_type=kind.eval_task_type, dataset=dataset, names=kind.metric_filter
        )
    tags = [*BASE_TAGS, *kind.tags, *ctx.get("tags", []), *([ctx["method_key"]] if ctx["method_key"] else [])]
    card_data = ModelCardData(
        license=ctx["license"],
        library_name=ctx.get("library_name", kind.library_name),
        pipeline_tag=ctx.get("pipeline_tag", kind.pipeline_tag),
        tags=list(dict.fromkeys(tags)),
        base_model=ctx.get("hub_base_model", hub_id(ctx.get("base_model"))),
        datasets=[d for d in ctx["datasets"] if hub_id(d)] or None,
        model_name=ctx["model_name"] if eval_results else None,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(card_data, template_path=str(template_path(kind.template)), **ctx)


def render_card(
    folder: str | Path, repo_id: str, *, kind: str | ModelKind | None = None, license: str | None = None
) -> ModelCard:
    """The model card of a saved folder, rendered from its kind's template.

    Args:
        folder: The saved model folder.
        repo_id: The repository it is pushed to (``org/name``), used in the card's loading examples.
        kind: The model kind (detected when None).
        license: Licence in the front matter (default: ``distillation.json``'s, else ``other``).
    """
    kind = get_model_kind(kind, folder)
    return render_context(kind, card_context(folder, repo_id, kind, license))


# -- built-in kinds ----------------------------------------------------------------------------------------------
GENERATION_METRICS = ("field_accuracy", "exact_match", "rougeL", "bleu")  # + accuracy_<field>, in the model-index


def _config(folder: Path) -> dict[str, Any]:
    return read_optional_json(folder, "config.json") or {}


def _is_mtcnn(folder: Path) -> bool:
    return _config(folder).get("model_type") in ("mtcnn", "mtcnn_ensemble")


def _collect_mtcnn(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    config = _config(folder)
    labels = config.get("task_labels") or {}
    names = list(config.get("tasks") or labels)
    thresholds = read_optional_json(folder, "thresholds.json")
    th_tasks = (thresholds or {}).get("tasks") or {}
    test = (ctx["metrics"].get("tasks") or {}) if isinstance(ctx["metrics"].get("tasks"), dict) else {}
    rows = []
    for task in names:
        th, t = th_tasks.get(task, {}), test.get(task, {})
        rows.append({
            "task": task, "num_classes": len(labels.get(task, [])), "classes": list(labels.get(task, [])),
            "threshold": th.get("threshold"), "cal_coverage": th.get("coverage"), "cal_accuracy": th.get("accuracy"),
            "reached": th.get("reached", True), "test_accuracy": t.get("accuracy"), "test_coverage": t.get("coverage"),
            "test_selective_accuracy": t.get("selective_accuracy"),
        })  # fmt: skip
    arch = {
        "embedding_dim": config.get("embedding_dim"), "num_filters": config.get("num_filters"),
        "kernel_sizes": config.get("kernel_sizes") or [], "vocab_size": config.get("vocab_size"),
        "max_length": config.get("max_length"), "num_members": config.get("num_members") or 1,
    }  # fmt: skip
    eval_results = []
    if test:
        from huggingface_hub import EvalResult

        dataset = (ctx["datasets"] or ["held-out split"])[0]
        for task, t in test.items():
            for metric in ("accuracy", "coverage", "selective_accuracy"):
                if isinstance(t.get(metric), (int, float)):
                    eval_results.append(EvalResult(
                        task_type="text-classification", dataset_type=dataset, dataset_name=dataset,
                        metric_type=metric, metric_name=f"{task} {metric}", metric_value=float(t[metric]),
                    ))  # fmt: skip
    return {
        "tasks": rows,
        "task_names": names,
        "arch": arch,
        "abstain_class": bool(config.get("abstain_class")),
        "thresholds": thresholds,
        "task_rows_have_test": bool(test),
        "eval_split": ctx["metrics"].get("split"),
        "eval_results": eval_results,
    }


def _causal_lm_architecture(config: dict[str, Any]) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = config.get("architectures") or []
    return bool(archs) and archs[0] in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _is_causal_lm(folder: Path) -> bool:
    adapter = read_optional_json(folder, "adapter_config.json")
    if adapter is not None:
        return adapter.get("task_type") == "CAUSAL_LM"
    return _causal_lm_architecture(_config(folder))


def _collect_causal_lm(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    config = _config(folder)
    adapter = read_optional_json(folder, "adapter_config.json")
    out: dict[str, Any] = {
        "arch": {
            "architecture": (config.get("architectures") or [None])[0],
            "model_type": config.get("model_type"),
            "hidden_size": config.get("hidden_size"),
            "num_hidden_layers": config.get("num_hidden_layers"),
            "vocab_size": config.get("vocab_size"),
        },  # fmt: skip
        "adapter": None,
    }
    if adapter is not None:
        target = adapter.get("target_modules") or []
        out["adapter"] = {
            "peft_type": adapter.get("peft_type"), "r": adapter.get("r"), "lora_alpha": adapter.get("lora_alpha"),
            "target_modules": sorted(target) if isinstance(target, list) else [str(target)],
            "base_model_name_or_path": adapter.get("base_model_name_or_path"),
        }  # fmt: skip
        out["library_name"] = "peft"
        out["base_model"] = adapter.get("base_model_name_or_path") or ctx["base_model"]
        out["tags"] = ["lora"]
    return out


def _is_open_clip(folder: Path) -> bool:
    return (folder / "open_clip_config.json").is_file()


def open_clip_architecture(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``arch`` variables of the open_clip card from an open_clip model config (``embed_dim``, towers)."""
    vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}

    def tower(c: dict[str, Any], extra: str) -> str:
        if "hf_model_name" in c or "timm_model_name" in c:
            return str(c.get("hf_model_name") or c.get("timm_model_name"))
        return f"transformer, {c.get('layers', '?')} layers × width {c.get('width', '?')}{extra}"

    image = f", {vision.get('image_size', '?')} px images, patch {vision.get('patch_size', '?')}"
    return {
        "embed_dim": cfg.get("embed_dim", "?"),
        "vision": tower(vision, image),
        "text": tower(text, f", context {text.get('context_length', '?')} tokens"),
    }


def _collect_open_clip(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    cfg = (read_optional_json(folder, "open_clip_config.json") or {}).get("model_cfg") or {}
    return {"arch": open_clip_architecture(cfg)}


register_model_kind(ModelKind(
    name="mtcnn", title="MtCNN multitask report classifier", detect=_is_mtcnn, template="mtcnn.md",
    collect=_collect_mtcnn, library_name="transformers", pipeline_tag="text-classification",
    tags=("mtcnn", "text-classification", "selective-prediction"), required=("config.json", "*.safetensors"),
    eval_task_type="text-classification",
))  # fmt: skip
register_model_kind(ModelKind(
    name="causal_lm", title="Report-generating causal language model (student)", detect=_is_causal_lm,
    template="causal_lm.md", collect=_collect_causal_lm, library_name="transformers", pipeline_tag="text-generation",
    tags=("text-generation",), required=("*.safetensors",), eval_task_type="text-generation",
    metric_filter=lambda name: name in GENERATION_METRICS or name.startswith("accuracy_"),
))  # fmt: skip
register_model_kind(ModelKind(
    name="open_clip", title="open_clip image-text model (student)", detect=_is_open_clip, template="open_clip.md",
    collect=_collect_open_clip, library_name="open_clip", pipeline_tag="zero-shot-image-classification",
    tags=("clip", "vision-language"), required=("open_clip_config.json", "open_clip_model.safetensors"),
    eval_task_type="zero-shot-image-classification", metric_filter=lambda name: not name.startswith("num_"),
))  # fmt: skip
