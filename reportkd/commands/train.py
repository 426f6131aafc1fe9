"""``reportkd train <recipe> --config x.yaml [flags…]``: run a recipe of an installed package.

    reportkd train --list
    reportkd train clip_distill --config recipes/configs/clip_distill_quick.yaml --max_steps 10
    reportkd train skd_report_generation --config my.yaml --resume_from_checkpoint last
    python -m reportkd.recipes clip_distill --config x.yaml     # the same without the console script

Recipes are the ``reportkd.recipes`` entry points (``reportkd train --list``); everything after the recipe's name is
its own arguments (``reportkd train <recipe> --help`` lists them). The config's ``env:`` block is set before the
recipe is imported. Several processes: ``accelerate launch … recipes/<recipe>.py --config x.yaml``.
"""

from __future__ import annotations

import argparse

from reportkd.recipes import apply_env, available_recipes, load_recipe, recipe_entry_points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` command's arguments."""
    parser.add_argument("recipe", nargs="?", help="Recipe name (see --list).")
    parser.add_argument("--list", action="store_true", help="List the available recipes and exit.")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="The recipe's own arguments (--config x.yaml).")


def _print_list() -> None:
    recipes = available_recipes()
    print("Available recipes (reportkd train <recipe> --config x.yaml):")
    for name, summary in recipes.items():
        print(f"  {name:<24} {summary}")


def run(args: argparse.Namespace) -> int:
    """Runs the recipe (or lists them); returns the exit code."""
    if args.list or not args.recipe:
        _print_list()
        return 0 if args.list else 2
    if args.recipe not in recipe_entry_points():
        load_recipe(args.recipe)  # the error that lists the registered recipes
    apply_env(args.recipe_args)  # before the recipe's module imports torch / transformers
    recipe = load_recipe(args.recipe)
    recipe(list(args.recipe_args))  # prints its own summary
    return 0
