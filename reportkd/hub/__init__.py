"""Sharing models: model kinds, model cards from templates and ``push_to_hub`` for every model kind.

    from reportkd.hub import push_to_hub
    push_to_hub("runs/mtcnn/student", "org/mtcnn-student", dry_run=True).plan.describe()
    push_to_hub("runs/mtcnn/student", "org/mtcnn-student", local_hub="/models/hub")  # air-gapped: a folder hub

Kinds (``MODEL_KINDS``) are registered by their families (``mtcnn``: reportkd.text.mtcnn, ``causal_lm``:
reportkd.text.skd, ``open_clip``: reportkd.vlm.clip, ``slide_encoder``: reportkd.vlm.slide) with
:func:`register_model_kind`, and found through the ``reportkd.model_kinds`` entry points. A kind declares which
files a push uploads (its allow-list); :mod:`reportkd.hub.files` has the rules no flag overrides.
The command line is ``reportkd push DIR --repo-id org/name [--local-hub DIR] [--dry-run] [--delete-missing]``.
"""

from .cards import (
    DISTILLATION_NAME,
    EVAL_RESULTS_NAME,
    METHODS,
    DistillationInfo,
    Method,
    card_context,
    register_method,
    render_card,
    write_card,
)
from .files import FileSelection, select_files
from .kinds import (
    MODEL_FILES,
    MODEL_KINDS,
    TOKENIZER_FILES,
    ModelKind,
    detect_model_kind,
    get_model_kind,
    load_model_kinds,
    read_config,
    register_model_kind,
    under,
)
from .push import (
    PushResult,
    UploadPlan,
    hub_api,
    local_repo_path,
    plan_upload,
    push_to_hub,
    resolve_endpoint,
    write_local_hub,
)
from .trainer import HubMixin, training_hyperparameters

__all__ = [
    "DISTILLATION_NAME",
    "EVAL_RESULTS_NAME",
    "METHODS",
    "MODEL_FILES",
    "MODEL_KINDS",
    "TOKENIZER_FILES",
    "DistillationInfo",
    "FileSelection",
    "HubMixin",
    "Method",
    "ModelKind",
    "PushResult",
    "UploadPlan",
    "card_context",
    "detect_model_kind",
    "get_model_kind",
    "hub_api",
    "load_model_kinds",
    "local_repo_path",
    "plan_upload",
    "push_to_hub",
    "read_config",
    "register_method",
    "register_model_kind",
    "render_card",
    "resolve_endpoint",
    "select_files",
    "training_hyperparameters",
    "under",
    "write_card",
    "write_local_hub",
]
