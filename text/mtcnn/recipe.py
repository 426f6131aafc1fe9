"""Recipe: MtCNN teacher ensemble → soft labels → distilled student (+ baseline, DAC) → abstention thresholds.

The ``mtcnn_distill`` recipe is :func:`reportkd.text.mtcnn.job.run_mtcnn_job` from a YAML config and flags.

Keys and flags are the fields of :class:`ScriptArguments` (data, ``overwrite_output_dir``),
:class:`~reportkd.text.mtcnn.arguments.MtCNNJobArguments` (data, model, teacher ensemble, distillation, abstention)
and ``reportkd.trainer.DistillationConfig`` (the ``TrainingArguments`` every stage trains with, plus the hub
fields). ``--resume_from_checkpoint last`` continues an interrupted run in ``output_dir`` stage by stage (a stage cut
short from its newest ``work/<stage>/checkpoint-N``), a ``checkpoint-N`` folder of one of the stages continues from
that one; a non-empty ``output_dir`` is refused otherwise, unless ``--overwrite_output_dir``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reportkd.recipes import RecipeArguments, RecipeParser, recipe_command
from reportkd.trainer import DistillationConfig

from .arguments import MtCNNJobArguments

NAME = "mtcnn_distill"


@dataclass
class ScriptArguments(RecipeArguments):
    """Where the reports come from.

    Args:
        data: Reports file (``.jsonl[.gz]``, ``.csv``, ``.parquet``) or ``synthetic:n=2000,seed=0`` (generated).
        training_data: How the model cards describe the data (default: derived from ``data``).
    """

    data: str = field(default="synthetic:n=2000,seed=0", metadata={"help": "Reports file or synthetic:n=..,seed=.."})
    training_data: str | None = field(default=None, metadata={"help": "Data description for the model cards."})


def make_parser() -> RecipeParser:
    """The recipe's parser: ``ScriptArguments``, ``MtCNNJobArguments``, ``DistillationConfig`` (``--config``)."""
    return RecipeParser((ScriptArguments, MtCNNJobArguments, DistillationConfig))


def load_source(spec: str) -> tuple[Any, str]:
    """Reports for the job and their description: a path, a datasets spec, or ``synthetic:n=..,seed=..``."""
    if not spec.startswith("synthetic"):
        from reportkd.data import parse_data_spec, report_source

        if parse_data_spec(spec) is not None:  # hf:ORG/NAME[:SPLIT], json:GLOB, ...: loaded as a Dataset
            return report_source(spec), f"pathology reports from `{spec}`"
        if not Path(spec).is_file():
            raise FileNotFoundError(
                f"Reports file {spec} not found: pass --data FILE, a datasets spec (hf:ORG/NAME) or synthetic:n=2000."
            )
        return spec, f"pathology reports from `{Path(spec).name}`"
    from reportkd.synthetic import generate_reports

    options = {"n": 2000, "seed": 0}
    for item in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = item.partition("=")
        if key not in options or not value.strip().isdigit():
            raise ValueError(f"Bad synthetic option {item!r} in {spec!r}; use n=<int> and seed=<int>.")
        options[key] = int(value)
    return generate_reports(options["n"], seed=options["seed"]), (
        f"synthetic TCGA-style pathology reports (`reportkd.synthetic`, n={options['n']}, seed={options['seed']})"
    )


def resume_option(value: str | bool | None) -> bool | str:
    """``--resume_from_checkpoint`` as the job's ``resume``: False (off), True (``last`` / ``true``) or a path."""
    if value is None or value is False or str(value).strip().lower() in ("", "false", "none"):
        return False
    if value is True or str(value).strip().lower() in ("last", "true"):
        return True
    return str(value)


def run(script_args: ScriptArguments, job: MtCNNJobArguments, args: DistillationConfig, command: str | None = None):
    """Runs (or resumes) the job with these arguments; pushes the student when ``push_to_hub``.

    Returns:
        The job's results (also ``<output_dir>/results.json``).
    """
    from accelerate import PartialState

    from reportkd.hub import push_to_hub

    from .job import run_mtcnn_job

    if args.teacher_model_name_or_path:
        raise ValueError("mtcnn_distill trains its own teacher ensemble; drop teacher_model_name_or_path.")
    _ = args.device  # sets up the (multi-process) state from these arguments
    source, described = load_source(script_args.data)
    results = run_mtcnn_job(
        source, job, args, overwrite=script_args.overwrite_output_dir,
        resume=resume_option(args.resume_from_checkpoint), data_description=script_args.training_data or described,
        command=command, overwrite_flag="--overwrite_output_dir",
    )  # fmt: skip
    if PartialState().is_main_process:
        print(format_results(results, job))
        if args.push_to_hub:
            out = Path(args.output_dir)
            pushed = push_to_hub(
                out / "student", args.hub_model_id or f"{out.name}-student", token=args.hub_token,
                private=args.hub_private_repo is not False, local_hub=args.hub_local_dir, revision=args.hub_revision,
            )  # fmt: skip
            results["pushed"] = pushed.location
    return results


def format_results(results: dict[str, Any], job: MtCNNJobArguments) -> str:
    """Markdown table: per task, test accuracy and coverage at the target accuracy (saved thresholds), per model."""
    models = {m: r for m, r in results["models"].items() if m != "ensemble"}
    method = job.threshold_method
    head = "| task | " + " | ".join(f"accuracy {m} | coverage@{job.target_accuracy:.0%} {m}" for m in models) + " |"
    lines = [head, "|---|" + "---|---|" * len(models)]
    for task in models["student"]:
        tests = [r[task]["ltt"]["test"] if method == "ltt" else r[task]["test"] for r in models.values()]
        lines.append(f"| {task} | " + " | ".join(f"{t['accuracy']:.3f} | {t['coverage']:.3f}" for t in tests) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses ``argv`` (default ``sys.argv[1:]``), runs the recipe and prints the data and output summary as JSON."""
    script_args, job, args = make_parser().parse_args_and_config(argv)
    results = run(script_args, job, args, command=recipe_command(NAME, argv))
    summary = {k: v for k, v in results.items() if k != "models"}
    summary["output_dir"] = os.fspath(args.output_dir)
    print(json.dumps(summary, default=str))
    return results


__all__ = ["ScriptArguments", "format_results", "load_source", "main", "make_parser", "resume_option", "run"]
