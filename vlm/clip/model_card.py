"""Model cards for distilled open_clip students (``README.md`` in the hub folder), from the shared template.

The card of a saved folder is best rendered from the folder itself (``reportkd.hub.write_card`` /
``reportkd push``: architecture from ``open_clip_config.json``, metrics from ``eval_results.json``, provenance from
``distillation.json``). :func:`render_model_card` renders the same template from arguments, before saving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reportkd.hub import DistillationInfo
from reportkd.hub.cards import context_from_info
from reportkd.hub.kinds import MODEL_KINDS, open_clip_architecture, render_context


def distillation_info(
    *,
    student: str,
    teacher: str | None,
    losses: Mapping[str, float],
    dataset: str,
    command: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> DistillationInfo:
    """Provenance of a CLIP student for its card (``distillation.json``).

    Args:
        student: Student architecture (open_clip name or config).
        teacher: Teacher name or path; None for a student trained alone.
        losses: Loss name → weight (only the active ones are recorded).
        dataset: Training data description.
        command: The command that produced the model.
        extra: Further settings to record (temperature, masking…).
    """
    hyperparameters: dict[str, Any] = {"student architecture": student}
    hyperparameters.update({f"loss {k}": v for k, v in losses.items() if v})
    hyperparameters.update(extra or {})
    return DistillationInfo(
        method="clip_kd" if teacher else "contrastive", teachers=[teacher] if teacher else [],
        training_data=dataset, hyperparameters=hyperparameters,
        command=command,
    )  # fmt: skip


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
    repo_id: str | None = None,
) -> str:
    """Markdown model card (open_clip front matter, distillation setup, metrics) from the shared template.

    Args:
        model_name: Name of the saved model (repository name).
        student: Student architecture (open_clip name or config).
        teacher: Teacher name or path; None for a student trained alone.
        losses: Loss name → weight (only the active ones are listed).
        dataset: Training data description.
        metrics: Evaluation results (retrieval, zero-shot, linear probe).
        parameters: Parameter counts (``total`` is reported).
        command: The command that produced the model.
        extra: Further settings to record (temperature, masking…).
        repo_id: Repository named in the loading example (default ``ORG/<model_name>``).
    """
    import open_clip

    info = distillation_info(student=student, teacher=teacher, losses=losses, dataset=dataset, command=command,
                             extra=extra)  # fmt: skip
    kind = MODEL_KINDS.get("open_clip")
    total = (parameters or {}).get("total")
    ctx = context_from_info(info, metrics or {}, repo_id or f"ORG/{model_name}", kind.title, total)
    cfg = open_clip.get_model_config(student) if student in open_clip.list_models() else None
    ctx["arch"] = open_clip_architecture(cfg or {})
    return str(render_context(kind, ctx))
