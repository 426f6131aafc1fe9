"""Sharing models: model cards from templates and ``push_to_hub`` for every model kind the toolkit produces.

    from reportkd.hub import push_to_hub
    push_to_hub("runs/mtcnn/student", "org/mtcnn-student", dry_run=True).plan.describe()
    push_to_hub("runs/mtcnn/student", "org/mtcnn-student", local_hub="/models/hub")  # air-gapped: a folder hub

Kinds (``MODEL_KINDS``): ``mtcnn`` (report classifier + abstention thresholds), ``causal_lm`` (SKD / GKD / SFT
students, full or LoRA adapter), ``open_clip`` (open_clip hub format); more with :func:`register_model_kind`.
The command line is ``reportkd push DIR --repo-id org/name [--local-hub DIR] [--dry-run]``.
"""

from .cards import (
    DISTILLATION_NAME,
    EVAL_RESULTS_NAME,
    METHODS,
    DistillationInfo,
    Method,
    register_method,
)
from .kinds import MODEL_KINDS, ModelKind, detect_model_kind, register_model_kind, render_card
from .push import (
    PushResult,
    UploadPlan,
    hub_api,
    local_repo_path,
    plan_upload,
    push_to_hub,
    resolve_endpoint,
    write_card,
    write_local_hub,
)
from .trainer import HubMixin, training_hyperparameters

__all__ = [
    "DISTILLATION_NAME",
    "EVAL_RESULTS_NAME",
    "METHODS",
    "MODEL_KINDS",
    "DistillationInfo",
    "HubMixin",
    "Method",
    "ModelKind",
    "PushResult",
    "UploadPlan",
    "detect_model_kind",
    "hub_api",
    "local_repo_path",
    "plan_upload",
    "push_to_hub",
    "register_method",
    "register_model_kind",
    "render_card",
    "resolve_endpoint",
    "training_hyperparameters",
    "write_card",
    "write_local_hub",
]
