"""``python -m reportkd.recipes <recipe> --config x.yaml [flags…]``: the same as ``reportkd train``."""

import sys

from reportkd.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
