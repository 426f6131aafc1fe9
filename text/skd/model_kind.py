"""The ``causal_lm`` model kind: report-generating causal-LM students (SKD, GKD, SFT…), full models or LoRA adapters.
Registered by ``reportkd.text.skd`` and through the ``reportkd.model_kinds`` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportkd.hub import MODEL_FILES, ModelKind, read_config, register_model_kind

GENERATION_METRICS = ("field_accuracy", "exact_match", "rougeL", "bleu")  # + accuracy_<field>, in the model-index


def _causal_lm_architecture(config: dict[str, Any]) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = config.get("architectures") or []
    return bool(archs) and archs[0] in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _is_causal_lm(folder: Path) -> bool:
    if (folder / "adapter_config.json").is_file():
        return read_config(folder, "adapter_config.json").get("task_type") == "CAUSAL_LM"
    return _causal_lm_architecture(read_config(folder))


def _card_context(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    config = read_config(folder)
    adapter = read_config(folder, "adapter_config.json") if (folder / "adapter_config.json").is_file() else None
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


CAUSAL_LM_KIND = ModelKind(
    name="causal_lm", title="Report-generating causal language model (student)", detect=_is_causal_lm,
    files=(*MODEL_FILES, "adapter_config.json"), card_template="causal_lm.md", card_context=_card_context,
    required=("*.safetensors",), library_name="transformers", pipeline_tag="text-generation",
    tags=("text-generation",), eval_task_type="text-generation",
    metric_filter=lambda name: name in GENERATION_METRICS or name.startswith("accuracy_"),
)  # fmt: skip


def register_kinds() -> None:
    """Registers the ``causal_lm`` model kind (the ``reportkd.model_kinds`` entry point; idempotent)."""
    register_model_kind(CAUSAL_LM_KIND)
