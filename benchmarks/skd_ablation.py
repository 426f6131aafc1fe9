"""SKD ablation: several students (modes, or modes with SKDConfig overrides) from one teacher and one warm start.

    # the four student modes on the TCGA reports (CPU), one results table
    python benchmarks/skd_ablation.py --config recipes/configs/skd_report_cpu.yaml
    # chosen modes and ablations (``mode@field=value,...``): rows are added to an earlier run's results.json
    python benchmarks/skd_ablation.py --config recipes/configs/skd_report_cpu.yaml --modes sft skd skd@top_k=5
    # seconds, tiny models on synthetic reports
    python benchmarks/skd_ablation.py --config recipes/configs/skd_report_quick.yaml --modes sft skd

Every flag of ``recipes/skd_report_generation.py`` is accepted (its ``mode`` is ignored: ``--modes`` lists the
students). The teacher and the student warm start are trained once (or reused from ``output_dir`` with
``reuse_checkpoints``), then one student per mode is trained with the same budget and scored on the held-out reports.
Outputs as the recipe's: ``<output_dir>/results.json`` (teacher, student_init and one row per mode),
``<output_dir>/predictions/<model>.jsonl``, and each student with its card in ``<output_dir>/<mode as a folder>/``;
the table is printed at the end. ``benchmarks/skd_quality.py`` runs this and summarises seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reportkd.recipes import RecipeParser, apply_env


@dataclass
class AblationArguments:
    """The students of the ablation.

    Args:
        modes: Student modes to train from the same warm start, each optionally with SKDConfig overrides:
            ``skd@top_k=5`` or ``sft@seed=1,learning_rate=5e-4``.
    """

    modes: list[str] = field(
        default_factory=lambda: ["sft", "supervised_kd", "on_policy", "skd"],
        metadata={"help": "Student modes, optionally with overrides: skd@top_k=5 (sft, supervised_kd, on_policy, "
                          "seq_kd, skd, mixed)."},
    )  # fmt: skip


def make_parser() -> RecipeParser:
    """The recipe's arguments plus ``--modes``."""
    from reportkd.text.skd.config import SKDConfig
    from reportkd.text.skd.recipe import ModelArguments, ScriptArguments

    return RecipeParser((ScriptArguments, SKDConfig, ModelArguments, AblationArguments))


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Runs the ablation; returns ``{model name: metrics}`` (also in ``<output_dir>/results.json``).

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).
    """
    import logging
    import sys

    apply_env(sys.argv[1:] if argv is None else argv)  # before torch / transformers read the environment
    from reportkd.recipes import recipe_command
    from reportkd.text.skd.recipe import parse_mode, prepare, print_table, train_student

    script_args, training_args, model_args, ablation = make_parser().parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for spec in ablation.modes:  # fails early on a typo
        parse_mode(spec)
    command = recipe_command("skd_ablation", argv).replace("python recipes/", "python benchmarks/")
    setup = prepare(script_args, training_args, model_args, reuse=script_args.reuse_checkpoints)
    for spec in ablation.modes:  # one student per mode, same start, same budget
        train_student(setup, spec, script_args, training_args, model_args, repo_suffix=len(ablation.modes) > 1,
                      command=command)  # fmt: skip
    print_table(setup)
    return setup.results


if __name__ == "__main__":
    main()
