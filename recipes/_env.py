"""Moved to :mod:`reportkd.recipes.env` (kept until every recipe imports from the package)."""

from reportkd.recipes.env import ENV_KEY, apply_env, env_block, read_config_file, read_env_block  # noqa: F401
