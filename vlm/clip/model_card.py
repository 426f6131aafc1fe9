"""Model cards for distilled open_clip students (``README.md`` in the hub folder)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _table(metrics: Mapping[str, Any]) -> str:
    rows = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        rows.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(rows)


def render_model_card(
    *,
    model_name: str,
    student: str,
    teacher: str | None,
    losses: Mapping[str, float],
    dataset: str,
    metrics: Mapping[str, Any] | None = None,
    parameters: Mapping[str, int] | None = None,
    command: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Markdown model card with open_clip front matter, the distillation setup and the metrics.

    Args:
        model_name: Name of the saved model (repository name).
        student: Student architecture (open_clip name or config).
        teacher: Teacher name or path; None for a student trained alone.
        losses: Loss name → weight (only the active ones are listed).
        dataset: Training data description.
        metrics: Evaluation results (retrieval, zero-shot, linear probe).
        parameters: Parameter counts.
        command: The command that produced the model.
        extra: Further settings to record (temperature, masking…).
    """
    active = {k: v for k, v in losses.items() if v}
    lines = [
        "---",
        "library_name: open_clip",
        "pipeline_tag: zero-shot-image-classification",
        "license: apache-2.0",
        "tags:",
        "- clip",
        "- pathology",
        "- knowledge-distillation",
        "- reportkd",
        "---",
        f"# {model_name}",
        "",
        f"An open_clip image-text model ({student}) "
        + (f"distilled from `{teacher}`" if teacher else "trained without a teacher")
        + f" on {dataset} with reportkd (`reportkd.vlm.clip`).",
        "",
        "## Usage",
        "```python",
        "import open_clip",
        f"# 'hf-hub:ORG/{model_name}' once uploaded, or 'local-dir:PATH' for the saved folder",
        f"model, _, preprocess = open_clip.create_model_and_transforms('hf-hub:ORG/{model_name}')",
        f"tokenizer = open_clip.get_tokenizer('hf-hub:ORG/{model_name}')",
        "```",
        "",
        "## Distillation",
        f"- Teacher: `{teacher}`" if teacher else "- Teacher: none (contrastive loss only)",
        "- Losses (weight): " + ", ".join(f"`{k}` ({v:g})" for k, v in active.items()),
    ]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: `{json.dumps(value) if not isinstance(value, str) else value}`")
    if parameters:
        lines += ["", "## Size", _table(dict(parameters))]
    if metrics:
        lines += ["", "## Evaluation", _table(dict(metrics))]
    if command:
        lines += ["", "## Reproduce", "```bash", command, "```"]
    return "\n".join(lines) + "\n"
