"""The ``reportkd`` command line: ``reportkd <command> [options]``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their command runs (or for ``--help``), so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command → (module, one-line help). Add a command by adding its module here.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("reportkd.commands.demo", "Main job: teacher ensemble → distilled student → abstention at 97% accuracy."),
    "calibrate": ("reportkd.commands.calibrate", "Calibrate abstention thresholds to a target accuracy."),
    "predict": ("reportkd.commands.predict", "Label reports or abstain, per task, with calibrated thresholds."),
    "evaluate-abstention": (
        "reportkd.commands.evaluate_abstention",
        "Accuracy, coverage, selective accuracy, AURC, ECE; risk–coverage and reliability plots.",
    ),
    "evaluate": (
        "reportkd.commands.evaluate",
        "Evaluate a classifier, generations, an open_clip model, slide encoders or patch features.",
    ),
    "extract": ("reportkd.commands.extract", "Tile whole-slide images and extract patch features (resumable)."),
    "push": ("reportkd.commands.push", "Push a saved model with its model card to a hub or a local hub directory."),
    "train": ("reportkd.commands.train", "Run a training recipe: reportkd train <recipe> --config x.yaml (--list)."),
}


def make_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="reportkd",
        description="Knowledge distillation for pathology reports and pathology vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="More logging.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name in sys.argv[1:]:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reportkd`` console script."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = make_parser()
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.command:
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"reportkd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
