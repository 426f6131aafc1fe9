"""The ``mtcnn`` model kind: how ``reportkd push`` recognises a saved MtCNN (or ensemble, or a HiSAN: same report
classifier interface), what it uploads and what its card says. Registered by ``reportkd.text.mtcnn`` and through the
``reportkd.model_kinds`` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportkd.hub import MODEL_FILES, ModelKind, read_config, register_model_kind
from reportkd.hub.cards import read_optional_json


def _is_mtcnn(folder: Path) -> bool:
    return read_config(folder).get("model_type") in ("mtcnn", "mtcnn_ensemble", "hisan")


def _card_context(folder: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    config = read_config(folder)
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
        "model_type": config.get("model_type"), "attention_heads": config.get("attention_heads"),
        "attention_dim_per_head": config.get("attention_dim_per_head"), "words_per_line": config.get("words_per_line"),
        "ships_code": bool(config.get("auto_map")),
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


# the code save_pretrained ships (auto_map), so plain transformers loads a student with trust_remote_code=True
CODE_FILES = ("configuration_mtcnn.py", "modeling_mtcnn.py")

MTCNN_KIND = ModelKind(
    name="mtcnn", title="MtCNN multitask report classifier", detect=_is_mtcnn,
    files=(*MODEL_FILES, *CODE_FILES, "thresholds.json"), card_template="mtcnn.md", card_context=_card_context,
    required=("config.json", "*.safetensors"), library_name="transformers", pipeline_tag="text-classification",
    tags=("mtcnn", "text-classification", "selective-prediction"), eval_task_type="text-classification",
)  # fmt: skip


def register_kinds() -> None:
    """Registers the ``mtcnn`` model kind (the ``reportkd.model_kinds`` entry point; idempotent)."""
    register_model_kind(MTCNN_KIND)
