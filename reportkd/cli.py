"""The ``reportkd`` command line: ``reportkd <command> [options]``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their command runs (or for ``--help``), so the CLI starts fast.

Errors end as one line on stderr, ``reportkd <command>: error: <problem>. <fix>``, with exit code 2 for a usage
error (bad flag or value, missing input) and 1 for a runtime failure (I/O, corrupt file, network); ``-v`` (before
or after the command) prints the traceback too. :mod:`reportkd.errors` holds the mapping.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from reportkd.errors import describe_error

# command → (module, one-line help). Add a command by adding its module here.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("reportkd.commands.demo", "Main job: teacher ensemble → distilled student → abstention at 97% accuracy."),
    "calibrate": ("reportkd.commands.calibrate", "Calibrate abstention thresholds to a target accuracy."),
    "predict": ("reportkd.commands.predict", "Label reports or abstain, per task, with calibrated thresholds."),
    "review": ("reportkd.commands.review", "HTML review page of the abstained reports for a human coder."),
    "evaluate-abstention": (
        "reportkd.commands.evaluate_abstention",
        "Accuracy, coverage, selective accuracy, AURC, ECE; risk–coverage and reliability plots.",
    ),
    "evaluate": (
        "reportkd.commands.evaluate",
        "Evaluate a classifier, generations, an open_clip model, slide encoders or patch features.",
    ),
    "extract": ("reportkd.commands.extract", "Tile whole-slide images and extract patch features (resumable)."),
    "embed": ("reportkd.commands.embed", "One embedding per slide from patch-features files (resumable)."),
    "export": ("reportkd.commands.export", "Export a saved MtCNN student to ONNX (reportkd predict --backend onnx)."),
    "push": ("reportkd.commands.push", "Push a saved model with its model card to a hub or a local hub directory."),
    "train": ("reportkd.commands.train", "Run a training recipe: reportkd train <recipe> --config x.yaml (--list)."),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help when it has a real default that the help does not mention."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "default" in help_text.lower()
            or default in (None, False, [], argparse.SUPPRESS)
            or (not action.option_strings and action.nargs not in ("?", "*"))
        ):
            return help_text
        return f"{help_text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose sub-parsers (nested ones included) share its help format, ``-v`` and errors."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        # SUPPRESS: a sub-parser leaves the top-level value alone unless -v is given after the command.
        default = False if self.prog == "reportkd" else argparse.SUPPRESS
        self.add_argument("-v", "--verbose", action="store_true", default=default, help="More logging; tracebacks.")

    def error(self, message: str):
        """One line naming the problem and where to look, exit code 2 (argparse prints the usage block instead)."""
        self.exit(2, f"{self.prog}: error: {message}. See `{self.prog} --help`.\n")


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def make_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command.

    Args:
        argv: the arguments to be parsed (default ``sys.argv[1:]``); only the command they name has its module
            imported and its arguments added.
    """
    chosen = _chosen_command(sys.argv[1:] if argv is None else argv)
    parser = _Parser(
        prog="reportkd",
        description="Knowledge distillation for pathology reports and pathology vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _exit_status(exc: SystemExit) -> int:
    """The exit code of a ``SystemExit`` (``sys.exit("message")`` prints the message and means 1)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reportkd`` console script; returns the exit code (``sys.argv`` is left as it is).

    Args:
        argv: the arguments after ``reportkd`` (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version or a usage error, already printed
        return _exit_status(e)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.command:
        parser.print_help()
        return 0
    try:
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except SystemExit as e:  # a recipe's own parser (reportkd train)
        return _exit_status(e)
    except KeyboardInterrupt:
        print(f"reportkd {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code, message = describe_error(e)
        if args.verbose:
            traceback.print_exc()
        print(f"reportkd {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
