"""Argument parsing for recipes: dataclasses on the command line, with ``--config x.yaml`` underneath.

The YAML keys are dataclass field names; flags given on the command line override the YAML values::

    parser = RecipeParser((ScriptArguments, SKDConfig))
    script_args, training_args = parser.parse_args_and_config(argv)

Unknown YAML keys are refused with the list of accepted ones (a typo never passes silently). One more key is
accepted: ``env:``, a mapping of environment variables set before anything else (see :mod:`reportkd.recipes.env`)::

    env:
      OMP_NUM_THREADS: 1
      HF_HUB_OFFLINE: 1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .env import ENV_KEY, apply_env, config_path, env_block, read_config_file

__all__ = ["RecipeParser"]


class RecipeParser(HfArgumentParser):
    """``HfArgumentParser`` that reads defaults from ``--config <file.yaml>``.

    Args:
        dataclass_types: The argument dataclasses, in the order they are returned.
        **kwargs: Further ``argparse.ArgumentParser`` arguments.
    """

    def __init__(self, dataclass_types: Sequence[type], **kwargs: Any) -> None:
        super().__init__(dataclass_types, **kwargs)
        self.add_argument("--config", default=None, help="YAML file of field: value defaults (flags override).")

    def field_names(self) -> set[str]:
        """Destinations of every argument (the dataclass field names)."""
        return {a.dest for a in self._actions if a.dest not in ("help", "config")}

    def load_config(self, path: str | Path) -> dict[str, Any]:
        """Reads a YAML config and checks its keys; the ``env:`` block is validated and left out.

        Args:
            path: The YAML file.
        """
        data = read_config_file(path)
        env_block(data, str(path))  # validates
        data.pop(ENV_KEY, None)
        unknown = sorted(set(data) - self.field_names())
        if unknown:
            raise ValueError(
                f"{path}: unknown keys {unknown}. Accepted keys are the dataclass fields: "
                f"{', '.join(sorted(self.field_names()))} (and 'env')."
            )
        return data

    def parse_args_and_config(self, args: Sequence[str] | None = None) -> tuple[Any, ...]:
        """Parses ``args`` (default ``sys.argv[1:]``) into the dataclasses, YAML values first, flags on top.

        The config's ``env:`` variables are set first.

        Args:
            args: Command-line arguments.
        """
        args = list(sys.argv[1:] if args is None else args)
        path = config_path(args)
        if path:
            apply_env(args)
            defaults = self.load_config(path)
            for action in self._actions:
                if action.dest in defaults:
                    action.default = defaults[action.dest]
                    action.required = False
        outputs = self.parse_args_into_dataclasses(args=args, return_remaining_strings=False)
        return tuple(o for o in outputs if not isinstance(o, argparse.Namespace))
