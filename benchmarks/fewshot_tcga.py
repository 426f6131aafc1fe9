"""Few-shot distillation on real TCGA reports: k labelled reports for the student, the full-data ensemble as teacher.

The split, vocabulary, label maps and teacher are those of ``benchmarks/abstention_tcga.py`` (split seed 0, 256
tokens, all tasks). The teacher (``--members`` in-sample MtCNNs, ``--teacher-epochs`` epochs) trains once on the
whole training split. For each seed, ``k`` reports are drawn at random from the training split (the same reports
for every task, so each task has at most ``k`` labels: reports with a missing label count for the other tasks;
nested: the 16 are among the 64, the 64 among the 256) and each method trains one student on them for the same
number of optimizer steps (``--steps``; batch 32, the demo's learning rate):

* ``hard``: hard labels only (the baseline);
* ``kd``: the teacher's soft labels on the k reports (the job's default student: α 1, T 1);
* ``kd_consistent``: consistent teaching: the teacher labels a fresh augmented view of each report on the fly;
* ``kd_cod_equal``: k/2 of the reports plus their CoD counterfactuals (same size as k), teacher-labelled;
* ``kd_cod_add``: the k reports plus one counterfactual each.

Thresholds are calibrated on the full calibration split and measured on the fixed test split (coverage at 0.90 /
0.97, empirical and LTT). Differences are paired by seed against ``hard`` at the same k. Models are cached per
seed, k and method (``--train-only`` runs seeds in parallel; rerun without it for the tables)::

    python benchmarks/fewshot_tcga.py --seeds 0 1 2 --threads 1
    python benchmarks/fewshot_tcga.py --teacher-dir outputs/abstention_tcga_cache/seed0/teacher-insample4-530c228ce9

Writes ``benchmarks/results/fewshot_tcga.{json,md,png}``; prints the JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reportkd.text.mtcnn.benchmarking import load_npz, predict_splits, save_npz, summarise, task_metrics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
TASKS = ("organ", "cancer_type", "histology", "histology_group", "grade", "t_stage", "laterality", "behavior")
SHOWN = {"organ": 0.97, "cancer_type": 0.97, "histology_group": 0.90, "laterality": 0.90}  # task → table target
TARGETS = (0.90, 0.97)
# method → MtCNNJobArguments overrides of the student (None: the hard-label baseline)
METHODS: dict[str, dict[str, Any] | None] = {
    "hard": None,
    "kd": {},
    "kd_consistent": {"consistent_teaching": True},
    "kd_cod_equal": {"counterfactuals": "equal"},
    "kd_cod_add": {"counterfactuals": "add"},
}
METRICS = ("accuracy",) + tuple(f"{m}@{t:.2f}.coverage" for m in ("empirical", "ltt") for t in TARGETS)
VERSION = "v1"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def draw_rows(n_train: int, ks: list[int], seed: int) -> dict[int, np.ndarray]:
    """Nested random draws: the first ``k`` of one seeded permutation of the training rows, per ``k``."""
    perm = np.random.default_rng(10_000 + seed).permutation(n_train)
    return {k: np.sort(perm[:k]) for k in ks}


def load_teacher(prepared, job, base_args, args, cache: Path, log):
    """The full-data teacher ensemble and its info: ``--teacher-dir``, else trained once and cached."""
    from reportkd.text.mtcnn import MtCNNEnsembleForReportClassification
    from reportkd.text.mtcnn.pipeline import train_teacher_ensemble
    from reportkd.utils import write_json

    if args.teacher_dir:
        module = MtCNNEnsembleForReportClassification.from_pretrained(args.teacher_dir).eval()
        info = {"source": args.teacher_dir, "members": module.config.num_members, "seconds": args.teacher_seconds}
    else:
        t_args = dataclasses.replace(base_args, seed=0, num_train_epochs=args.teacher_epochs, max_steps=-1)
        key = _hash({"job": job.teacher_fields | job.model_fields | job.data_fields, "epochs": args.teacher_epochs})
        folder, info_path = cache / f"teacher-{key}", cache / f"teacher-{key}.json"
        if info_path.is_file():
            module = MtCNNEnsembleForReportClassification.from_pretrained(folder).eval()
            info = json.loads(info_path.read_text())
        else:
            start = time.perf_counter()
            module = train_teacher_ensemble(prepared, job, t_args, cache / "tmp")
            info = {"source": "trained", "members": job.members, "seconds": round(time.perf_counter() - start, 1)}
            module.save_pretrained(folder)
            write_json(info_path, info)
            log(f"teacher trained in {info['seconds']:.0f} s")
    if module.config.vocab_size != len(prepared.tokenizer):
        raise SystemExit("The teacher's vocabulary differs from this split's: train it with the same data settings.")
    info.update(epochs=args.teacher_epochs, train_reports=len(prepared.train))
    return module, info


def train_fewshot(prepared, job, base_args, teacher, soft, rows, method: str, seed: int, steps: int) -> dict:
    """One few-shot model: ``method`` on the training rows ``rows``; calibration/test probabilities."""
    from reportkd.text.mtcnn.pipeline import train_single, transfer_set

    sub = dataclasses.replace(prepared, train=prepared.train.select(rows.tolist()))
    targs = dataclasses.replace(base_args, seed=seed, max_steps=steps)
    spec = METHODS[method]
    if spec is None:
        return predict_splits(train_single(sub, job, targs, targs.output_dir), prepared)
    s_job = dataclasses.replace(job, alpha=1.0, **spec)
    transfer, counts = transfer_set(sub, s_job, teacher, seed)
    sub_soft = {t: p[rows] for t, p in soft.items()}
    model = train_single(sub, s_job, targs, targs.output_dir, soft_labels=sub_soft, teacher=teacher, transfer=transfer)
    out = predict_splits(model, prepared)
    out["counterfactuals"] = np.array(counts["counterfactuals"])
    return out


def markdown(summaries: dict[int, dict], teacher_row: dict, info: dict, seeds: list[int], steps: int) -> str:
    """Per task: accuracy and coverage at the task's target of every method and k, and the paired differences."""
    lines = [
        f"Seeds {seeds}; {steps} optimizer steps per student (batch 32); teacher: {info['members']} in-sample MtCNNs, "
        f"{info['epochs']} epochs on {info['train_reports']} training reports, wall "
        + (f"{info['seconds'] / 60:.1f} min" if info.get("seconds") else "not measured here")
        + f" ({info['source']}). Cells: mean ± sd over seeds; thresholds from the calibration split (988 reports).",
        "",
    ]
    for task, target in SHOWN.items():
        acc, emp, ltt = "accuracy", f"empirical@{target:.2f}.coverage", f"ltt@{target:.2f}.coverage"
        lines += [f"### {task} (coverage at {target:.2f})", "", "| k | method | accuracy | cov emp. | cov LTT |"]
        lines.append("|---|---|---|---|---|")
        for k, summary in summaries.items():
            for method in METHODS:
                st = summary["models"].get(method, {}).get(task)
                if st is None:
                    continue
                cells = [f"{st[m]['mean']:.3f} ± {st[m]['sd']:.3f}" if m in st else "—" for m in (acc, emp, ltt)]
                lines.append(f"| {k} | {method} | " + " | ".join(cells) + " |")
        t = teacher_row[task]
        lines.append(f"| all | teacher | {t['accuracy']:.3f} | {t[emp[:-9]]['coverage']:.3f} | "
                     f"{t[ltt[:-9]]['coverage']:.3f} |")  # fmt: skip
        lines += ["", "Paired by seed, method − hard at the same k (wins/seeds); ** when mean > 2 sd/√n:", ""]
        lines += ["| k | method | Δaccuracy | Δcov emp. | Δcov LTT |", "|---|---|---|---|---|"]
        for k, summary in summaries.items():
            for method, per_task in summary["student_minus_baseline"].items():
                d = per_task.get(task, {})

                def cell(m, d=d):
                    s = d.get(m)
                    if s is None:
                        return "—"
                    star = "**" if s["n"] > 1 and s["mean"] > 2 * s["sd"] / np.sqrt(s["n"]) else ""
                    return f"{star}{s['mean']:+.3f} ± {s['sd']:.3f}{star} ({s['wins']}/{s['n']})"

                lines.append(f"| {k} | {method} | {cell('accuracy')} | {cell(emp)} | {cell(ltt)} |")
        lines.append("")
    return "\n".join(lines)


def plot(summaries: dict[int, dict], path: Path) -> None:
    """Accuracy and coverage at the target vs k, per method (mean ± sd over seeds), one column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from reportkd.utils import atomic_path

    ks = list(summaries)
    fig, axes = plt.subplots(2, len(SHOWN), figsize=(4.2 * len(SHOWN), 7), squeeze=False)
    for col, (task, target) in enumerate(SHOWN.items()):
        for row, metric in enumerate(("accuracy", f"empirical@{target:.2f}.coverage")):
            ax = axes[row, col]
            for method in METHODS:
                stats = [summaries[k]["models"].get(method, {}).get(task, {}).get(metric) for k in ks]
                mean = [np.nan if s is None else s["mean"] for s in stats]
                sd = [0.0 if s is None else s["sd"] for s in stats]
                ax.errorbar(ks, mean, yerr=sd, marker="o", capsize=2, label=method)
            ax.set(xscale="log", xticks=ks, title=f"{task}: {'accuracy' if row == 0 else f'coverage @{target:.2f}'}")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xticklabels([str(k) for k in ks])
            ax.set_xlabel("labelled reports k")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="TCGA reports (JSONL.gz).")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds (draw of the k reports, training).")
    p.add_argument("--ks", type=int, nargs="+", default=[16, 64, 256], help="Labelled reports for the student.")
    p.add_argument("--methods", default=",".join(METHODS), help=f"Comma-separated: {', '.join(METHODS)}.")
    p.add_argument("--steps", type=int, default=150, help="Optimizer steps of every student (batch 32).")
    p.add_argument("--members", type=int, default=4, help="Teacher members (in-sample).")
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--teacher-dir", default=None, help="A saved teacher ensemble of this split (else trained here).")
    p.add_argument("--teacher-seconds", type=float, default=None, help="Wall time of --teacher-dir's training.")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--delta", type=float, default=0.1, help="LTT risk level.")
    p.add_argument("--train-only", action="store_true", help="Train and cache these seeds; no tables (parallel runs).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is robust on a shared machine).")
    p.add_argument("--cache-dir", default=str(ROOT / "outputs" / "fewshot_tcga_cache"))
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="fewshot_tcga", help="Output file stem.")
    p.add_argument("--overwrite", action="store_true", help="Replace existing result files.")
    args = p.parse_args(argv)

    from reportkd.text.mtcnn.arguments import MtCNNJobArguments
    from reportkd.text.mtcnn.job import default_training_args
    from reportkd.text.mtcnn.pipeline import prepare_data, soft_labels
    from reportkd.text.mtcnn.predict import labels_by_task
    from reportkd.utils import write_json

    data, out_dir = Path(args.data), Path(args.out_dir)
    if not data.is_file():
        raise SystemExit(f"{data} not found: this benchmark needs ../shared/data/tcga-reports (or --data FILE).")
    methods = [m for m in args.methods.split(",") if m]
    if unknown := [m for m in methods if m not in METHODS]:
        raise SystemExit(f"Unknown method(s) {unknown}; known: {', '.join(METHODS)}.")
    if "hard" not in methods:
        raise SystemExit("--methods must include 'hard' (every difference is taken against it).")
    result_path = out_dir / f"{args.name}.json"
    if result_path.exists() and not args.train_only and not args.overwrite:
        raise SystemExit(f"{result_path} exists: pass --overwrite to replace it, or --name for another stem.")
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    job = MtCNNJobArguments(tasks=list(TASKS), max_length=args.max_length, split_seed=0, members=args.members, folds=1)
    base_args = default_training_args(cache / "tmp", num_train_epochs=1, seed=0, disable_tqdm=True,
                                      logging_strategy="no")  # fmt: skip
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    prepared = prepare_data(str(data), job, seed=0)
    labels = {s: labels_by_task(getattr(prepared, s), prepared.task_labels) for s in ("calibration", "test")}
    teacher, info = load_teacher(prepared, job, base_args, args, cache, log)
    t_path = cache / f"teacher-probs-{_hash(info['source'])}.npz"  # soft labels, calibration/test probabilities
    if (t_arrays := load_npz(t_path)) is None:
        t_arrays = predict_splits(teacher, prepared)
        t_arrays.update({f"soft/{t}": p for t, p in soft_labels(teacher, prepared, job, 0).items()})
        save_npz(t_path, t_arrays)
    soft = {k.removeprefix("soft/"): v for k, v in t_arrays.items() if k.startswith("soft/")}
    teacher_row = task_metrics(t_arrays, labels, args.delta, TARGETS)
    per_k: dict[int, dict[int, dict]] = {k: {} for k in args.ks}
    counts: dict[str, list[int]] = {}
    fp = _hash({"job": dataclasses.asdict(job), "steps": args.steps, "teacher": info["source"], "v": VERSION})
    for seed in args.seeds:
        rows_by_k = draw_rows(len(prepared.train), args.ks, seed)
        for k, rows in rows_by_k.items():
            per_k[k][seed] = {}
            for method in methods:
                path = cache / f"seed{seed}" / f"k{k}-{method}-{fp}.npz"
                arrays = load_npz(path)
                if arrays is None:
                    start = time.perf_counter()
                    arrays = train_fewshot(prepared, job, base_args, teacher, soft, rows, method, seed, args.steps)
                    save_npz(path, arrays)
                    log(f"seed {seed}, k {k}: {method} trained in {time.perf_counter() - start:.0f} s")
                if "counterfactuals" in arrays:
                    counts.setdefault(f"k{k}-{method}", []).append(int(arrays["counterfactuals"]))
                per_k[k][seed][method] = task_metrics(arrays, labels, args.delta, TARGETS)
    if args.train_only:
        log("trained (--train-only); rerun without it over all seeds for the tables")
        return {}
    summaries = {k: summarise(per_k[k], METRICS, baseline="hard", prefix="kd") for k in args.ks}
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(summaries, out_dir / f"{args.name}.png")
    result = {
        "command": "python benchmarks/fewshot_tcga.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sampling": "k random training reports per seed, the same for every task (nested over k)",
        "teacher": {**info, "metrics": teacher_row},
        "job": dataclasses.asdict(job),
        "steps": args.steps,
        "seeds": args.seeds,
        "methods": {m: METHODS[m] for m in methods},
        "counterfactuals_made": counts,
        "summary": {str(k): s for k, s in summaries.items()},
        "per_seed": {str(k): v for k, v in per_k.items()},
        "figure": f"{args.name}.png",
        "seconds": round(time.perf_counter() - started, 1),
    }
    md = markdown(summaries, teacher_row, info, args.seeds, args.steps)
    md += "\nCounterfactuals made (per seed): " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + "\n"
    write_json(result_path, result)
    (out_dir / f"{args.name}.md").write_text(md)
    print(md, file=sys.stderr)
    print(json.dumps({str(k): s["student_minus_baseline"] for k, s in summaries.items()}, indent=1))
    return result


if __name__ == "__main__":
    main()
