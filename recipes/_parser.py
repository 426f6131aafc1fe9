"""Moved to :mod:`reportkd.recipes` (kept until every recipe imports from the package)."""

from reportkd.recipes import ENV_KEY, RecipeParser, apply_env, env_block  # noqa: F401
