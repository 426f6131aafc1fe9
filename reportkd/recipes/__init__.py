"""Recipes inside the package: the YAML/CLI parser, the ``env:`` block, helpers shared by recipes, the registry.

``RecipeParser`` (``--config x.yaml``, flags override, unknown keys refused) imports ``transformers`` and is loaded on
first use, so ``from reportkd.recipes import apply_env`` stays free of torch: a script applies the config's ``env:``
block before anything reads the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .env import ENV_KEY, apply_env, config_path, env_block, read_config_file, read_env_block

if TYPE_CHECKING:
    from .parser import RecipeParser

__all__ = [
    "ENV_KEY",
    "RecipeParser",
    "apply_env",
    "config_path",
    "env_block",
    "read_config_file",
    "read_env_block",
]


def __getattr__(name: str) -> Any:
    if name == "RecipeParser":
        from .parser import RecipeParser

        return RecipeParser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
