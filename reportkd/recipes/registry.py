"""Recipes found through the ``reportkd.recipes`` entry-point group (the core names no family module).

A package registers a recipe in its ``pyproject.toml``; the value is a ``main(argv=None)`` function::

    [project.entry-points."reportkd.recipes"]
    clip_distill = "reportkd.vlm.clip.recipe:main"
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUP = "reportkd.recipes"
logger = logging.getLogger(__name__)

RecipeMain = Callable[[list[str] | None], Any]


def recipe_entry_points() -> dict[str, EntryPoint]:
    """Every registered recipe's entry point by name (nothing is imported)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


def load_recipe(name: str) -> RecipeMain:
    """The ``main(argv=None)`` of a registered recipe.

    Args:
        name: The recipe's name (``reportkd train --list`` shows them).
    """
    found = recipe_entry_points()
    if name not in found:
        raise ValueError(
            f"Unknown recipe {name!r}; available: {', '.join(found) or 'none (is reportkd installed?)'}. "
            "A recipe is registered in the 'reportkd.recipes' entry-point group."
        )
    return found[name].load()


def available_recipes() -> dict[str, str]:
    """Every registered recipe that imports, as ``{name: summary}`` (the first docstring line of its module, or of
    its function when that is not named ``main``).

    A recipe that fails to import is left out with a warning naming it and the error.
    """
    out = {}
    for name, ep in recipe_entry_points().items():
        try:
            func = ep.load()
        except Exception as e:  # a broken plugin must not hide the others
            logger.warning("recipe %s (%s) failed to import and is not available: %s: %s",
                           name, ep.value, type(e).__name__, e)  # fmt: skip
            continue
        module_doc = sys.modules[func.__module__].__doc__ if func.__name__ == "main" else None
        doc = (module_doc or func.__doc__ or "").strip()  # a module of several recipes: each function's own
        out[name] = doc.splitlines()[0] if doc else ""
    return out
