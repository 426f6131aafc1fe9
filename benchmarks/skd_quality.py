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
import os
import statistics
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


def split_name(name: str) -> tuple[str, int]:
    """``"skd@acceptance=raw_top_k,seed=1"`` → ``("skd@acceptance=raw_top_k", 1)`` (no ``seed=``: seed 0)."""
    mode, _, rest = name.partition("@")
    items = [kv for kv in rest.split(",") if kv]
    seeds = [int(kv.partition("=")[2]) for kv in items if kv.startswith("seed=")]
    others = [kv for kv in items if not kv.startswith("seed=")]
    return mode + ("@" + ",".join(others) if others else ""), seeds[0] if seeds else 0


def _split(m: dict, split: str) -> dict | None:
    return m if split == "test" else m.get("validation")


def seed_means(results: dict[str, dict], split: str = "test") -> dict[str, dict]:
    """Averages rows that differ only by seed (``skd`` and ``skd@seed=1`` → ``skd``): mean, seed count and the
    sample standard deviation of field accuracy and ROUGE-L.

    Args:
        results: ``{model name: metrics}`` of a recipe run.
        split: ``test`` (the metrics) or ``validation`` (their ``"validation"`` entry).
    """
    groups: dict[str, list[dict]] = {}
    for name, m in results.items():
        row = _split(m, split)
        if row is not None:
            groups.setdefault(split_name(name)[0], []).append(row)
    keys = ["field_accuracy", "exact_match", "rougeL", "bleu", *(f"accuracy_{f}" for f in FIELDS)]
    out = {}
    for name, rows in groups.items():
        entry = {"seeds": len(rows), **{k: sum(r[k] for r in rows) / len(rows) for k in keys}}
        for k in ("field_accuracy", "rougeL"):
            entry[f"{k}_std"] = statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0
        out[name] = entry
    return out


def paired(results: dict[str, dict], a: str, b: str, key: str, split: str = "test") -> dict | None:
    """Per-seed differences ``a − b`` of ``key`` over the seeds both groups ran: mean, min, max, seeds."""
    by_seed: dict[str, dict[int, float]] = {}
    for name, m in results.items():
        group, seed = split_name(name)
        row = _split(m, split)
        if row is not None and group in (a, b):
            by_seed.setdefault(group, {})[seed] = row[key]
    seeds = sorted(set(by_seed.get(a, {})) & set(by_seed.get(b, {})))
    if not seeds:
        return None
    diffs = [by_seed[a][s] - by_seed[b][s] for s in seeds]
    return {"mean": round(sum(diffs) / len(diffs), 4), "min": round(min(diffs), 4), "max": round(max(diffs), 4),
            "seeds": seeds}  # fmt: skip


def summary(results: dict[str, dict]) -> dict:
    """Every SKD variant against SFT, on-policy GKD and supervised KD: per-seed paired differences of field accuracy
    and ROUGE-L, on the validation split (when scored) and the test split."""
    groups = {split_name(n)[0] for n in results}
    splits = ["validation", "test"] if any("validation" in m for m in results.values()) else ["test"]
    out = {}
    for skd in sorted(g for g in groups if g.startswith("skd")):
        for other in ("sft", "on_policy", "supervised_kd"):
            for key in ("field_accuracy", "rougeL"):
                for split in splits:
                    diff = paired(results, skd, other, key, split)
                    if diff is not None:
                        out[f"{skd} - {other}: {key} ({split})"] = diff
    return out


def means_table(means: dict[str, dict]) -> str:
    """Markdown table of seed-averaged rows (± the standard deviation over seeds)."""
    head = ["model", "seeds", *FIELDS, "field acc", "ROUGE-L"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in means.items():
        cells = [str(m["seeds"]), *(f"{m[f'accuracy_{f}']:.3f}" for f in FIELDS)]
        acc, rouge = f"{m['field_accuracy']:.3f}", f"{m['rougeL']:.3f}"
        if m["seeds"] > 1:
            acc, rouge = f"{acc} ± {m['field_accuracy_std']:.3f}", f"{rouge} ± {m['rougeL_std']:.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {acc} | {rouge} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "skd_report_cpu.yaml"))
    parser.add_argument("--from-results", help="Tabulate an existing recipe results.json instead of training.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "skd_quality.json"))
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
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
    report = {"source": source, "summary": summary(results), "seed_means": seed_means(results)}
    if any("validation" in m for m in results.values()):
        report["validation_seed_means"] = seed_means(results, "validation")
    report["results"] = results
    target = Path(args.out)
    if target.exists() and not args.overwrite:
        raise SystemExit(f"{target} exists: pass --overwrite to replace it, or another --out.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, target)
    print(table(results))
    if "validation_seed_means" in report:
        print("\nValidation split, mean over seeds:\n")
        print(means_table(report["validation_seed_means"]))
    print("\nTest split, mean over seeds:\n")
    print(means_table(report["seed_means"]))
    print(json.dumps(report["summary"], indent=2))
    return report


if __name__ == "__main__":
    main()
