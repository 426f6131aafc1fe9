"""The entry of a thin ``recipes/NAME.py`` script (standard library only until the recipe is imported)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .env import apply_env


def script_main(target: str, argv: Sequence[str] | None = None) -> Any:
    """Applies the config's ``env:`` block, imports ``module:function`` and runs it on ``argv``.

    Bad input (``ValueError``, ``FileNotFoundError``: an unknown config key, a missing checkpoint, a non-empty
    ``output_dir``) ends the process with one line on stderr and exit code 2, as ``reportkd train`` does.

    Args:
        target: The recipe's ``main(argv=None)`` as ``"package.module:function"``.
        argv: Command-line arguments (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    module, _, function = target.partition(":")
    try:
        apply_env(argv)  # before the recipe's module imports torch / transformers
        recipe = getattr(importlib.import_module(module), function)
        return recipe(argv)
    except (ValueError, FileNotFoundError) as e:
        name = module.rsplit(".", 1)[-1]
        print(f"{sys.argv[0] or name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
