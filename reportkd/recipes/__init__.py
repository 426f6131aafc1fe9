"""Recipes inside the package: the YAML/CLI parser, the ``env:`` block, output-folder and resume checks, the registry.

A recipe is a ``main(argv=None)`` in its family's package (e.g. ``reportkd.vlm.clip.recipe``), registered in the
``reportkd.recipes`` entry-point group; ``reportkd train <recipe> --config x.yaml`` and the thin scripts in
``recipes/`` run it. ``RecipeParser`` imports ``transformers`` and is loaded on first use, so
``from reportkd.recipes import apply_env`` stays free of torch: a script applies the config's ``env:`` block before
anything reads the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .env import ENV_KEY, apply_env, config_path, env_block, read_config_file, read_env_block
from .output import RecipeArguments, check_output_dir, last_checkpoint, prepare_output_dir, resolve_checkpoint
from .registry import GROUP, available_recipes, load_recipe, recipe_entry_points
from .script import script_main

if TYPE_CHECKING:
    from .parser import RecipeParser

__all__ = [
    "ENV_KEY",
    "GROUP",
    "RecipeArguments",
    "RecipeParser",
    "apply_env",
    "available_recipes",
    "check_output_dir",
    "config_path",
    "env_block",
    "last_checkpoint",
    "load_recipe",
    "prepare_output_dir",
    "read_config_file",
    "read_env_block",
    "recipe_command",
    "recipe_entry_points",
    "resolve_checkpoint",
    "script_main",
]


def recipe_command(name: str, argv: list[str] | None) -> str:
    """The command line of a recipe run as model cards record it (``python recipes/NAME.py …``).

    Args:
        name: The recipe's name.
        argv: Its arguments (None: ``sys.argv[1:]``).
    """
    import sys

    return f"python recipes/{name}.py " + " ".join(sys.argv[1:] if argv is None else argv)


def __getattr__(name: str) -> Any:
    if name == "RecipeParser":
        from .parser import RecipeParser

        return RecipeParser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
