"""Quality: students of one size and budget trained by ``sft``, ``supervised_kd``, ``on_policy`` and ``skd``.

Runs the report-generation recipe (same teacher, same warm start, same steps for every student) and scores each
student on held-out TCGA reports: field-level accuracy per synoptic field and ROUGE-L (greedy decoding).

    python benchmarks/skd_quality.py                                   # runs the CPU recipe (~30 min)
    python benchmarks/skd_quality.py --config recipes/configs/skd_report_gpu.yaml
    python benchmarks/skd_quality.py --from-results outputs/skd_report_cpu/results.json   # tabulate a run

Extra arguments are passed to the recipe (e.g. ``--max_steps 300``). Writes ``--out`` (JSON) and prints tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIELDS = ("organ", "histology", "grade", "t_stage", "laterality", "behavior")
STUDENTS = ("sft", "supervised_kd", "on_policy", "skd")


def table(results: dict[str, dict]) -> str:
    """Markdown table: per-field accuracy, mean field accuracy, exact match, ROUGE-L, BLEU, train seconds."""
    head = ["model", *FIELDS, "field acc", "exact", "ROUGE-L", "BLEU", "acceptance", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        cells = [f"{m[f'accuracy_{f}']:.3f}" for f in FIELDS]
        cells += [f"{m['field_accuracy']:.3f}", f"{m['exact_match']:.3f}", f"{m['rougeL']:.3f}", f"{m['bleu']:.1f}"]
        rate = m.get("acceptance_rate_last")
        cells += [f"{m.get('acceptance_rate_first', 0):.2f}→{rate:.2f}" if rate is not None else "-"]
        cells += [f"{m.get('train_seconds', 0):.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_means(results: dict[str, dict]) -> dict[str, dict]:
    """Averages rows that differ only by seed (``skd`` and ``skd@seed=1`` → ``skd``), with the number of seeds."""
    groups: dict[str, list[dict]] = {}
    for name, m in results.items():
        mode, _, rest = name.partition("@")
        others = [kv for kv in rest.split(",") if kv and not kv.startswith("seed=")]
        groups.setdefault(mode + ("@" + ",".join(others) if others else ""), []).append(m)
    keys = ["field_accuracy", "exact_match", "rougeL", "bleu", *(f"accuracy_{f}" for f in FIELDS)]
    return {
        name: {"seeds": len(rows), **{k: sum(r[k] for r in rows) / len(rows) for k in keys}}
        for name, rows in groups.items()
    }


def summary(results: dict[str, dict]) -> dict:
    """SKD against SFT, on-policy GKD and supervised KD: differences of seed-averaged field accuracy and ROUGE-L."""
    means = seed_means(results)
    out = {}
    if "skd" in means:
        for other in ("sft", "on_policy", "supervised_kd"):
            if other in means:
                for key in ("field_accuracy", "rougeL"):
                    out[f"skd_minus_{other}_{key}"] = round(means["skd"][key] - means[other][key], 4)
    return out


def means_table(means: dict[str, dict]) -> str:
    """Markdown table of seed-averaged rows."""
    head = ["model", "seeds", *FIELDS, "field acc", "ROUGE-L"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in means.items():
        cells = [str(m["seeds"]), *(f"{m[f'accuracy_{f}']:.3f}" for f in FIELDS)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['field_accuracy']:.3f} | {m['rougeL']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "skd_report_cpu.yaml"))
    parser.add_argument("--from-results", help="Tabulate an existing recipe results.json instead of training.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "skd_quality.json"))
    args, recipe_args = parser.parse_known_args(argv)
    if args.from_results:
        results = json.loads(Path(args.from_results).read_text())
        source = args.from_results
    else:
        from skd_ablation import main as ablation_main  # benchmarks/ is on sys.path when run as a script

        modes = [] if "--modes" in recipe_args else ["--modes", *STUDENTS]
        results = ablation_main(["--config", args.config, *modes, *recipe_args])
        source = f"recipe {args.config} {' '.join(recipe_args)}".strip()
    for m in results.values():
        m.pop("examples", None)
    report = {"source": source, "summary": summary(results), "seed_means": seed_means(results), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(table(results))
    print()
    print(means_table(report["seed_means"]))
    print(json.dumps(report["summary"], indent=2))
    return report


if __name__ == "__main__":
    main()
