"""The ``env:`` block of a recipe config: environment variables set before anything else (standard library only).

    env:
      OMP_NUM_THREADS: 1
      HF_HUB_OFFLINE: 1                      # air-gapped: never call the hub
      HF_ENDPOINT: https://hub.hospital.org  # or a self-hosted hub

As in TRL, the values replace those of the calling environment. Recipes call :func:`apply_env` before importing
``torch`` / ``transformers`` / ``huggingface_hub`` (which read some variables once, at import), and
``RecipeParser.parse_args_and_config`` applies it again for programmatic use. Under ``accelerate launch`` the block is
applied in every process, after the launcher started: launcher settings go on the ``accelerate launch`` command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV_KEY = "env"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
logger = logging.getLogger(__name__)


def env_block(config: Mapping[str, Any], source: str = "the config") -> dict[str, str]:
    """The validated ``env:`` mapping of a loaded config as strings (``true``/``false`` for booleans).

    Args:
        config: The YAML mapping.
        source: How to name the config in errors.
    """
    block = config.get(ENV_KEY)
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ValueError(f"{source}: 'env' must be a mapping of VARIABLE: value, got {type(block).__name__}.")
    out = {}
    for name, value in block.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{source}: env variable name {name!r} is invalid (letters, digits and _ only).")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            value = str(value)
        else:
            raise ValueError(
                f"{source}: env.{name} must be a string, number or boolean, got {type(value).__name__} {value!r}."
            )
        out[name] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping (checked to be one).

    Args:
        path: The YAML file.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of field: value, got {type(data).__name__}.")
    return data


def read_env_block(path: str | Path) -> dict[str, str]:
    """The ``env:`` block of a YAML config file (empty when it has none).

    Args:
        path: The YAML file.
    """
    return env_block(read_config_file(path), str(path))


def config_path(argv: Sequence[str] | None) -> str | None:
    """The ``--config`` value in ``argv`` (None when absent).

    Args:
        argv: Command-line arguments.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(list(argv or []))
    return known.config


def apply_env(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Sets the ``env:`` variables of the ``--config`` file named in ``argv``; returns them.

    Args:
        argv: Command-line arguments (default: none, i.e. nothing to apply).
    """
    path = config_path(argv)
    if not path:
        return {}
    env = read_env_block(path)
    for name, value in env.items():
        if os.environ.get(name) not in (None, value):
            logger.info("env: %s=%s from %s replaces %s", name, value, path, os.environ[name])
        os.environ[name] = value
    return env
