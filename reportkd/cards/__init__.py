"""Model-card templates (Jinja, for ``huggingface_hub.ModelCard.from_template``), one per model kind.

Each template starts with ``---\\n{{ card_data }}\\n---`` (the YAML front matter built from
``huggingface_hub.ModelCardData``) and receives the variables collected by :mod:`reportkd.hub.cards` (common ones:
``model_name``, ``repo_id``, ``method``, ``teachers``, ``training_data``, ``metrics``, ``hyperparameters``,
``parameters``, ``fmt``; kind-specific ones from the kind's ``card_context`` function). One renderer uses them all:
:func:`reportkd.hub.render_card`.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent


def template_path(name: str) -> Path:
    """Path of a template shipped here (``"mtcnn.md"``) or of any existing Markdown file.

    Args:
        name: A file name in this folder, or a path.
    """
    path = Path(name)
    if not path.is_file():
        path = TEMPLATE_DIR / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in TEMPLATE_DIR.glob("*.md")))
        raise FileNotFoundError(f"Model-card template {name!r} not found. Shipped templates: {shipped}.")
    return path
