"""Abstention at a target accuracy on real TCGA reports: teacher ensemble, distilled students, baseline, DAC.

One fixed train / calibration / test split (``--split-seed``); every model is trained with each of ``--seeds`` so
differences are read against seed noise. Per task: test accuracy, AURC, and for each target accuracy (0.90 / 0.95 /
0.97) the test coverage and realised test accuracy of empirical (the paper's) and Learn-then-Test (δ) thresholds
calibrated on the calibration split. Student variants (``--students``) are entries of :data:`STUDENTS`; each names
the teacher it distils (:data:`TEACHERS`). Probabilities are cached per model and seed, so a killed run resumes and
new variants reuse trained teachers. Every model is trained by the MtCNN job's stage functions
(:mod:`reportkd.text.mtcnn.pipeline`) with one ``MtCNNJobArguments`` per variant and the same ``TrainingArguments``
(those of ``reportkd demo``, seed per run)::

    python benchmarks/abstention_tcga.py                                  # default: 3 seeds, student "oof"
    python benchmarks/abstention_tcga.py --students oof,oof_soft --dac    # more variants, plus DAC
    python benchmarks/abstention_tcga.py --seeds 0 --students oof_t2 --quick
    python benchmarks/abstention_tcga.py --epochs 4 --students i4_soft_x4 --anchor-epochs 16  # patient student vs
                                                                                           # an equally long baseline
    python benchmarks/abstention_tcga.py --backlog 0.5 --students insample_soft,backlog_soft   # half the training
                                                                   # reports held back as an unlabelled backlog
    python benchmarks/abstention_tcga.py --students insample_soft,insample_soft_long --anchor-variant insample_soft
    python benchmarks/abstention_tcga.py --student-arch "mtcnn(embedding_dim=128,num_filters=128)" \
        --students mixed44_soft                                               # a wider student and baseline

Writes ``benchmarks/results/abstention_tcga.{json,md}`` and risk–coverage / coverage PNGs; prints the JSON summary.
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

from reportkd.text.mtcnn.benchmarking import (
    TARGETS,
    halving_differences,
    load_npz,
    ltt_resampling,
    predict_splits,
    save_npz,
    summarise,
    task_metrics,
    unknown_as_missing,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
TASKS = ("organ", "cancer_type", "histology", "histology_group", "grade", "t_stage", "laterality", "behavior")
CACHE_VERSION = "v2"  # v2: tasks in the key (histology_group added)

# Teacher recipes: MtCNNJobArguments overrides that change the ensemble.
# Default: 8 members, 4 folds, out-of-fold labels.
TEACHERS: dict[str, dict[str, Any]] = {
    "oof8": {},
    "oof8_early": {"teacher_epochs": 4},
    "insample8": {"folds": 1},
    "insample8_early": {"folds": 1, "teacher_epochs": 4},
    "bag8": {"member_sampling": "bagging"},
    "bag16": {"member_sampling": "bagging", "members": 16},
    "oof16": {"members": 16},
    "insample32": {"folds": 1, "members": 32},
    "insample4": {"folds": 1, "members": 4},
    # mixed MtCNN + HiSAN teachers (teacher_scaling.py: 4 + 4 beats 8 MtCNNs on cancer_type), in-sample
    "mixed44": {"folds": 1, "teacher_archs": "mtcnn:4,hisan:4"},
    "mixed88": {"folds": 1, "teacher_archs": "mtcnn:8,hisan:8"},
}
# Student recipes: teacher + MtCNNJobArguments overrides of the student.
STUDENTS: dict[str, dict[str, Any]] = {
    "oof": {"teacher": "oof8"},
    "oof_soft": {"teacher": "oof8", "alpha": 1.0},
    "oof_t2": {"teacher": "oof8", "temperature": 2.0},
    "oof_long": {"teacher": "oof8", "student_epochs": 16},
    "oof_soft_long": {"teacher": "oof8", "alpha": 1.0, "student_epochs": 16},
    "early": {"teacher": "oof8_early"},
    "insample": {"teacher": "insample8"},
    "insample_t2": {"teacher": "insample8", "temperature": 2.0},
    "insample_early": {"teacher": "insample8_early"},
    "insample_soft": {"teacher": "insample8", "alpha": 1.0},
    "insample_a05": {"teacher": "insample8", "alpha": 0.5},  # "insample" is this only while the default alpha is 0.5
    "insample_a05_long": {"teacher": "insample8", "alpha": 0.5, "student_epochs": 16},
    "insample_long": {"teacher": "insample8", "student_epochs": 16},
    "bag": {"teacher": "bag8"},
    "bag16": {"teacher": "bag16"},
    "bag16_soft_long": {"teacher": "bag16", "alpha": 1.0, "student_epochs": 16},
    "oof16": {"teacher": "oof16"},
    "insample32": {"teacher": "insample32"},
    "insample32_soft": {"teacher": "insample32", "alpha": 1.0},
    # issue 13: consistent teaching (teacher labels each augmented view on the fly), CoD transfer data
    "insample_soft_long": {"teacher": "insample8", "alpha": 1.0, "student_epochs": 16},
    "consistent": {"teacher": "insample8", "alpha": 1.0, "consistent_teaching": True},
    "consistent_long": {"teacher": "insample8", "alpha": 1.0, "consistent_teaching": True, "student_epochs": 16},
    "cod": {"teacher": "insample8", "alpha": 1.0, "counterfactuals": "add"},
    "cod_equal": {"teacher": "insample8", "alpha": 1.0, "counterfactuals": "equal"},
    # the same with a 4-member teacher (what fitted a shared 2-core machine)
    "i4_soft": {"teacher": "insample4", "alpha": 1.0},
    "i4_consistent": {"teacher": "insample4", "alpha": 1.0, "consistent_teaching": True},
    "i4_cod": {"teacher": "insample4", "alpha": 1.0, "counterfactuals": "add"},
    "i4_soft_long": {"teacher": "insample4", "alpha": 1.0, "student_epochs": 8},
    "i4_consistent_long": {"teacher": "insample4", "alpha": 1.0, "consistent_teaching": True, "student_epochs": 8},
    # patient students (Beyer et al.): 4x the 4 epochs
    "i4_soft_x4": {"teacher": "insample4", "alpha": 1.0, "student_epochs": 16},
    "i4_consistent_x4": {"teacher": "insample4", "alpha": 1.0, "consistent_teaching": True, "student_epochs": 16},
    # a stronger, more diverse teacher: mixed MtCNN + HiSAN groups, soft labels only
    "mixed44_soft": {"teacher": "mixed44", "alpha": 1.0},
    "mixed88_soft": {"teacher": "mixed88", "alpha": 1.0},
    "mixed44_soft_long": {"teacher": "mixed44", "alpha": 1.0, "student_epochs": 16},
    "mixed44_consistent": {"teacher": "mixed44", "alpha": 1.0, "consistent_teaching": True},
    "mixed44_a05": {"teacher": "mixed44", "alpha": 0.5},
    "mixed44_a05_long": {"teacher": "mixed44", "alpha": 0.5, "student_epochs": 16},
    "mixed44_a075_long": {"teacher": "mixed44", "alpha": 0.75, "student_epochs": 16},
    "mixed44_a05_x3": {"teacher": "mixed44", "alpha": 0.5, "student_epochs": 24},
    # a registry's backlog (--backlog F): the held-back training reports, without labels, as extra transfer data
    "backlog_soft": {"teacher": "insample8", "alpha": 1.0, "backlog": True},
    "backlog_mixed": {"teacher": "mixed44", "alpha": 1.0, "backlog": True},
    # a diagnostic, not a deployable recipe: the teacher's labels on the calibration and test texts themselves (no
    # gold labels) as transfer data -- can one MtCNN rank the test reports like the ensemble when it is shown how?
    "transductive_soft": {"teacher": "insample8", "alpha": 1.0, "backlog": "eval"},
    "transductive_mixed": {"teacher": "mixed44", "alpha": 1.0, "backlog": "eval"},
}
STUDENT_KEYS = ("student_epochs", "alpha", "temperature", "consistent_teaching", "augment_strength", "counterfactuals",
                "cod_max_edits", "unlabelled", "student_arch")  # fmt: skip
TEACHER_KEYS = ("members", "folds", "teacher_epochs", "member_sampling", "bag_fraction", "teacher_archs")
# keys added later, with their defaults: left out of a cache key while at the default
NEW_KEYS = {"teacher_archs": None, "unlabelled": None, "student_arch": "mtcnn"}


def _key(job, training_args, keys) -> str:
    d = {**dataclasses.asdict(job), "epochs": int(training_args.num_train_epochs), "version": CACHE_VERSION}
    if d["unlabelled"] is not None:  # the backlog's content, not its path
        from reportkd.text.mtcnn.job import data_fingerprint

        d["unlabelled"] = data_fingerprint(d["unlabelled"])
    # a key added later enters only when it differs from its default: earlier cache entries keep their keys
    blob = json.dumps({k: d[k] for k in (*keys, "tasks", "version") if not (k in NEW_KEYS and d[k] == NEW_KEYS[k])},
                      sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results files stay machine-independent)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def train_models(
    prepared,
    base,
    base_args,
    seed: int,
    students: list[str],
    dac: bool,
    cache: Path,
    log,
    cached_only: bool = False,
    anchor_epochs: int | None = None,
    backlog: str | None = None,
) -> dict[str, dict]:
    """Trains (or loads cached probabilities of) baseline, ensembles, students and DAC for one seed.

    ``anchor_epochs``: the hard-label baseline's epochs (None: the training arguments'), to compare long students
    against an equally long baseline. ``backlog``: the reports file that students marked ``backlog`` get as
    ``unlabelled`` transfer data.
    """
    from reportkd.text.mtcnn.pipeline import (
        soft_labels,
        train_dac,
        train_single,
        train_teacher_ensemble,
        transfer_set,
    )

    targs = dataclasses.replace(base_args, seed=seed)
    work = cache / f"seed{seed}"
    results: dict[str, dict] = {}

    def cached(name: str, key: str, build) -> dict[str, np.ndarray]:
        path = work / f"{name}-{key}.npz"
        arrays = load_npz(path)
        if arrays is None and cached_only:
            log(f"seed {seed}: {name} not in the cache (--cached-only): left out")
            return None
        if arrays is None:
            start = time.perf_counter()
            arrays = build()
            save_npz(path, arrays)
            log(f"seed {seed}: {name} trained in {time.perf_counter() - start:.0f} s")
        return arrays

    b_args = targs if anchor_epochs is None else dataclasses.replace(targs, num_train_epochs=anchor_epochs)

    def build_baseline():
        return predict_splits(train_single(prepared, base, b_args, work / "tmp"), prepared)

    # a longer baseline's key also names max_length (older cache entries at --epochs 8 may hold 512-token models)
    b_keys = ("epochs", "student_arch") if anchor_epochs is None else ("epochs", "max_length", "student_arch")
    results["baseline"] = cached("baseline", _key(base, b_args, b_keys), build_baseline)
    soft_cache: dict[str, dict[str, np.ndarray]] = {}
    for name in students:
        spec = dict(STUDENTS[name])
        teacher_name = spec.pop("teacher")
        source = spec.pop("backlog", False)
        if source == "eval":  # the calibration and test texts, without labels
            texts = [t for split in (prepared.calibration, prepared.test) for t in split[base.text_column]]
            spec["unlabelled"] = write_reports([{base.text_column: t} for t in texts], cache / "eval_texts.jsonl")
        elif source:
            if backlog is None:
                raise SystemExit(f"student {name} needs --backlog (held-back training reports as unlabelled data).")
            spec["unlabelled"] = backlog
        t_job = dataclasses.replace(base, **TEACHERS[teacher_name])
        s_job = dataclasses.replace(t_job, **spec)
        t_key = _key(t_job, targs, TEACHER_KEYS + ("epochs",))

        module_dir = work / f"teacher-{teacher_name}-{t_key}"

        def build_teacher(t_job=t_job, module_dir=module_dir):
            if t_job.teacher_archs is None:
                ensemble = train_teacher_ensemble(prepared, t_job, targs, work / "tmp")
                soft = soft_labels(ensemble, prepared, t_job, seed)
            else:  # groups of MtCNNs / HiSANs, as the job trains them with --teacher-archs
                from reportkd.text.mtcnn.teachers import MixedTeacherEnsemble, train_mixed_teacher

                mixed = train_mixed_teacher(prepared, t_job, targs, t_job.teacher_groups, work / "tmp")
                ensemble, soft = MixedTeacherEnsemble(mixed.groups), mixed.soft_labels
            ensemble.save_pretrained(module_dir)  # for students that need the teacher in memory (CoD, consistent)
            out = predict_splits(ensemble, prepared)
            out.update({f"soft/{t}": p for t, p in soft.items()})
            return out

        teacher = cached(f"teacher-{teacher_name}", t_key, build_teacher)
        if teacher is None:
            continue
        results.setdefault(f"ensemble-{teacher_name}", {k: v for k, v in teacher.items() if not k.startswith("soft/")})
        soft_cache[teacher_name] = {k[5:]: v for k, v in teacher.items() if k.startswith("soft/")}
        s_key = _key(s_job, targs, TEACHER_KEYS + ("epochs",) + STUDENT_KEYS)

        def build_student(s=s_job, tn=teacher_name, module_dir=module_dir):
            module = None
            if s.consistent_teaching or s.counterfactuals != "none" or s.unlabelled:
                from reportkd.text.mtcnn import MtCNNEnsembleForReportClassification
                from reportkd.text.mtcnn.teachers import MixedTeacherEnsemble

                if s.teacher_archs is None:
                    module = MtCNNEnsembleForReportClassification.from_pretrained(module_dir).eval()
                else:
                    module = MixedTeacherEnsemble.from_pretrained(module_dir, s, len(prepared.train)).eval()
            start = time.perf_counter()
            transfer, counts = transfer_set(prepared, s, module, seed)
            if counts["cod_attempted"] or counts["unlabelled"]:
                log(f"seed {seed}: transfer rows {counts} in {time.perf_counter() - start:.0f} s")
            model = train_single(prepared, s, targs, work / "tmp", soft_labels=soft_cache[tn], teacher=module,
                                 transfer=transfer)  # fmt: skip
            return predict_splits(model, prepared)

        student = cached(f"student-{name}", s_key, build_student)
        if student is not None:
            results[f"student-{name}"] = student
    if dac:
        targets = {t: (0.97 if t in ("organ", "cancer_type") else 0.90) for t in base.tasks}

        def build_dac():
            model = train_dac(prepared, dataclasses.replace(base, dac_targets=targets), targs, work / "tmp")
            out = predict_splits(model, prepared)
            out.update({f"abstain/{k}": v for k, v in predict_splits(model, prepared, with_abstain=True).items()})
            return out

        dac_arrays = cached("dac", _key(base, targs, ("epochs",)) + "v1", build_dac)
        if dac_arrays is not None:
            results["dac"] = dac_arrays
    return results


def hold_back(prepared, job, fraction: float, cache: Path, seed: int):
    """Splits the training reports into a labelled part and a backlog written, texts only, to a reports file.

    The tokenizer and label lists stay those of the whole training split (a registry has the backlog's texts; the
    label lists are its coding manual); every model then trains on the labelled part only.

    Returns:
        The prepared data with the labelled training part, and the backlog file's path.
    """
    n = len(prepared.train)
    order = np.random.default_rng(seed + 101).permutation(n)
    n_back = int(round(fraction * n))
    keep, back = np.sort(order[n_back:]), np.sort(order[:n_back])
    texts = prepared.train.select(back)[job.text_column]
    path = write_reports([{job.text_column: t} for t in texts], cache / "backlog.jsonl")
    return dataclasses.replace(prepared, train=prepared.train.select(keep)), path


def write_reports(rows: list[dict], path: Path) -> str:
    """Writes ``rows`` as JSONL, atomically; a file with the same content is left as it is (parallel seeds)."""
    from reportkd.utils import atomic_path

    blob = "".join(json.dumps(r) + "\n" for r in rows)
    if not path.is_file() or path.read_text() != blob:
        with atomic_path(path) as tmp:
            tmp.write_text(blob)
    return str(path)


def halving_markdown(diffs: dict[str, Any], tasks: list[str], halvings: int) -> str:
    """Paired model − baseline coverage differences (seeds × halvings), empirical and LTT, every target."""
    lines = [
        f"### Model − baseline coverage over seeds × {halvings} resampled calibration/test halvings",
        "",
        "Cell: mean difference ± standard error over seeds (sd over halvings in brackets); ** when mean > 2 SE.",
        "",
        "| model | task | " + " | ".join(f"{m} @{t:.2f}" for m in ("emp.", "LTT") for t in TARGETS) + " |",
        "|---|---|" + "---|" * (2 * len(TARGETS)),
    ]
    for model, per_task in diffs.items():
        for task in tasks:
            row = per_task.get(task)
            if not row:
                continue
            cells = []
            for method in ("empirical", "ltt"):
                for t in TARGETS:
                    c = row.get(f"{method}@{t:.2f}")
                    if c is None:
                        cells.append("—")
                        continue
                    star = "**" if c["seeds"] > 1 and c["mean"] > 2 * c["se_seeds"] > 0 else ""
                    cells.append(f"{star}{c['mean']:+.3f} ± {c['se_seeds']:.3f}{star} ({c['sd_halvings']:.3f})")
            lines.append(f"| {model} | {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(summary: dict[str, Any], tasks: list[str], seeds: list[int]) -> str:
    """Per task and target: coverage (mean ± sd over seeds) of each model with empirical and LTT thresholds."""
    models = summary["models"]
    order = ["baseline"] + sorted(m for m in models if m.startswith("student-"))
    order += sorted(m for m in models if m.startswith("ensemble-")) + [m for m in ("dac",) if m in models]

    def fmt(stat, key, digits=3):
        s = stat.get(key)
        return "—" if s is None else f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"

    lines = [
        f"Seeds: {seeds}. Cells: mean ± sd over seeds. Coverage on the test split at the target accuracy with",
        "thresholds calibrated on the calibration split; realised accuracy on accepted test reports in brackets.",
        "",
    ]
    for task in tasks:
        lines += [
            f"### {task}",
            "",
            "| model | accuracy | AURC | "
            + " | ".join(f"cov@{t:.2f} emp. [acc] | cov@{t:.2f} LTT [acc]" for t in TARGETS)
            + " |",
        ]
        lines.append("|---|---|---|" + "---|---|" * len(TARGETS))
        for model in order:
            st = models.get(model, {}).get(task)
            if st is None:
                continue
            cells = [fmt(st, "accuracy"), fmt(st, "aurc")]
            for t in TARGETS:
                for method in ("empirical", "ltt"):
                    acc = st.get(f"{method}@{t:.2f}.accuracy")
                    cells.append(fmt(st, f"{method}@{t:.2f}.coverage") + (f" [{acc['mean']:.3f}]" if acc else ""))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        if "dac" in models and "dac_own.coverage" in models["dac"].get(task, {}):
            st = models["dac"][task]
            acc = st.get("dac_own.accuracy")
            acc_text = "—" if acc is None else f"{acc['mean']:.3f}"
            lines.append(f"\nDAC's own abstention: coverage {fmt(st, 'dac_own.coverage')}, accuracy {acc_text}.")
        lines.append("")
    lines += [
        "### Student − baseline (paired by seed; wins = seeds where the student is higher)",
        "",
        "| student | task | Δcov@0.90 emp. | Δcov@0.95 emp. | Δcov@0.97 emp. | Δcov@0.97 LTT | ΔAURC |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, per_task in summary["student_minus_baseline"].items():
        for task in tasks:
            d = per_task.get(task, {})

            def cell(metric, d=d):
                s = d.get(metric)
                return "—" if s is None else f"{s['mean']:+.3f} ± {s['sd']:.3f} ({s['wins']}/{s['n']})"

            lines.append(
                f"| {model} | {task} | "
                + " | ".join(
                    cell(m)
                    for m in (
                        "empirical@0.90.coverage",
                        "empirical@0.95.coverage",
                        "empirical@0.97.coverage",
                        "ltt@0.97.coverage",
                        "aurc",
                    )
                )
                + " |"
            )
    return "\n".join(lines)


def resampling_markdown(guarantee: dict[str, dict], delta: float) -> str:
    """Share of resampled calibration/test splits whose test accuracy on accepted reports reaches the target."""
    lines = [
        f"### Does the target hold on unseen reports? (first seed; resampled calibration/test splits; LTT δ={delta})",
        "",
        "Share of resampled splits whose accuracy on accepted test reports reaches the target (a split accepting",
        "nothing counts as meeting it); in brackets, splits that accept at least one report.",
        "",
        "| model | task | target | LTT: splits meeting it | LTT coverage | empirical: splits meeting it | coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, per_task in guarantee.items():
        for task, r in per_task.items():
            ltt, emp = r["ltt"], r["empirical"]
            if not ltt["with_coverage"] and not emp["with_coverage"]:
                continue
            cell = lambda x: "—" if x is None else f"{x:.2f}"  # noqa: E731
            lines.append(
                f"| {model} | {task} | {r['target']:.2f} | {cell(ltt['met_fraction'])} ({ltt['with_coverage']}) | "
                f"{ltt['mean_coverage']:.3f} | {cell(emp['met_fraction'])} ({emp['with_coverage']}) | "
                f"{emp['mean_coverage']:.3f} |"
            )
    return "\n".join(lines)


def plots(
    per_seed_arrays: dict[str, dict[str, np.ndarray]], labels, tasks, out_dir: Path, summary, name: str
) -> list[str]:
    """Risk–coverage curves (first seed) and coverage-at-target bars (mean ± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reportkd.abstention import plot_risk_coverage, risk_coverage_curve
    from reportkd.utils import atomic_path

    curves = {
        model: {t: risk_coverage_curve(a[f"test/{t}"], labels["test"][t]) for t in tasks}
        for model, a in per_seed_arrays.items()
    }
    paths = [plot_risk_coverage(curves, out_dir / f"{name}_risk_coverage.png", target_accuracy=0.97)]
    models = summary["models"]
    names = list(models)
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(5 * len(TARGETS), 4), sharey=True)
    for ax, target in zip(np.atleast_1d(axes), TARGETS):
        x = np.arange(len(tasks))
        width = 0.8 / max(len(names), 1)
        for i, m in enumerate(names):
            key = f"empirical@{target:.2f}.coverage"
            mean = [models[m].get(t, {}).get(key, {}).get("mean", np.nan) for t in tasks]
            sd = [models[m].get(t, {}).get(key, {}).get("sd", 0.0) for t in tasks]
            ax.bar(x + i * width, mean, width, yerr=sd, label=m, capsize=2)
        ax.set(title=f"coverage at {target:.0%} accuracy (empirical)", xticks=x + 0.4 - width / 2)
        ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"{name}_coverage.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return [_relative(p) for p in [*paths, path]]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="TCGA reports (JSONL.gz).")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds.")
    p.add_argument("--split-seed", type=int, default=0, help="Seed of the fixed train/calibration/test split.")
    p.add_argument("--students", default="oof", help=f"Comma-separated student variants: {', '.join(STUDENTS)}.")
    p.add_argument("--dac", action="store_true", help="Also train a Deep Abstaining Classifier.")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument(
        "--tasks", default=None, help=f"Comma-separated tasks (default: {','.join(TASKS)}; --synthetic: the demo's)."
    )
    p.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="Instead of --data: the synthetic corpus of `reportkd demo` (N reports, seed 0; the demo uses 2000).",
    )
    p.add_argument(
        "--anchor-epochs", type=int, default=None, help="Epochs of the hard-label baseline (default --epochs)."
    )
    p.add_argument(
        "--backlog",
        type=float,
        default=None,
        metavar="F",
        help="Hold back this fraction of the training reports as a registry's backlog: every model trains on the "
        "rest; students marked backlog also get the held-back texts, without labels, labelled by the teacher.",
    )
    p.add_argument(
        "--synthetic-backlog",
        type=int,
        default=None,
        metavar="N",
        help="With --synthetic: N more generated reports (seed 1), texts only, as the backlog students' unlabelled "
        "data; every model keeps the whole labelled training split.",
    )
    p.add_argument(
        "--student-arch",
        default="mtcnn",
        help="Architecture of the baseline and every student (teachers unchanged), e.g. "
        "'mtcnn(embedding_dim=128,num_filters=128)' for a student twice the members' width.",
    )
    p.add_argument(
        "--anchor-variant",
        default=None,
        help="Compare against this student variant (one of --students) instead of the hard-label baseline: paired "
        "differences between two recipes.",
    )
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--delta", type=float, default=0.1, help="LTT risk level.")
    p.add_argument("--resamples", type=int, default=200, help="Resampled splits for the LTT guarantee check.")
    p.add_argument("--halvings", type=int, default=20, help="Resampled calibration/test halvings per seed.")
    p.add_argument("--train-only", action="store_true", help="Train and cache these seeds; no tables (parallel runs).")
    p.add_argument("--cached-only", action="store_true", help="Tables from cached models only; train nothing.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is robust on a shared machine).")
    p.add_argument("--quick", action="store_true", help="Tiny settings to check the script (not a measurement).")
    p.add_argument("--cache-dir", default=str(ROOT / "outputs" / "abstention_tcga_cache"))
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="abstention_tcga", help="Output file stem.")
    args = p.parse_args(argv)

    from reportkd.text.mtcnn.arguments import MtCNNJobArguments
    from reportkd.text.mtcnn.job import default_training_args
    from reportkd.text.mtcnn.pipeline import prepare_data
    from reportkd.text.mtcnn.predict import labels_by_task
    from reportkd.text.mtcnn.results import training_summary
    from reportkd.utils import write_json

    if args.synthetic is not None:  # the demo's corpus: the same generator, size and seed as `reportkd demo`
        from reportkd.synthetic import SYNTHETIC_TASKS, generate_reports

        source: Any = generate_reports(args.synthetic, seed=0)
        tasks = list(SYNTHETIC_TASKS)
    else:
        data = Path(args.data)
        if not data.is_file():
            raise SystemExit(f"{data} not found: this benchmark needs ../shared/data/tcga-reports (or --data FILE).")
        source, tasks = str(data), list(TASKS)
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    students = [s for s in args.students.split(",") if s]
    unknown = [s for s in students if s not in STUDENTS]
    if unknown:
        raise SystemExit(f"Unknown student variant(s) {unknown}; known: {', '.join(STUDENTS)}.")
    if args.anchor_variant and args.anchor_variant not in students:
        raise SystemExit(f"--anchor-variant {args.anchor_variant} must be one of --students ({', '.join(students)}).")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = MtCNNJobArguments(
        tasks=tasks, max_length=args.max_length, split_seed=args.split_seed, student_arch=args.student_arch
    )
    cache = Path(args.cache_dir) / (f"synthetic{args.synthetic}" if args.synthetic is not None else "")
    if args.backlog is not None:
        if not 0 < args.backlog < 1:
            raise SystemExit(f"--backlog {args.backlog}: give a fraction of the training reports in (0, 1).")
        cache = cache / f"backlog{args.backlog:g}"
    if args.synthetic_backlog is not None:
        if args.synthetic is None or args.backlog is not None or args.synthetic_backlog < 1:
            raise SystemExit("--synthetic-backlog N needs --synthetic, N >= 1 and no --backlog.")
    base_args = default_training_args(cache / "tmp", num_train_epochs=args.epochs, seed=args.seeds[0])
    if args.quick:
        base = dataclasses.replace(base, members=4, folds=2, embedding_dim=16, num_filters=8, max_length=64)
        base_args = dataclasses.replace(base_args, num_train_epochs=1)
        cache = cache / "quick"
        args.out_dir = str(cache)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    prepared = prepare_data(source, base, seed=args.seeds[0])
    backlog = None
    if args.backlog is not None:
        prepared, backlog = hold_back(prepared, base, args.backlog, cache, args.split_seed)
        log(f"backlog: {args.backlog:g} of the training reports held back without labels ({backlog})")
    if args.synthetic_backlog is not None:
        from reportkd.synthetic import generate_reports

        rows = [{base.text_column: r[base.text_column]} for r in generate_reports(args.synthetic_backlog, seed=1)]
        backlog = write_reports(rows, cache / f"backlog{args.synthetic_backlog}.jsonl")
        log(f"backlog: {len(rows)} generated reports without labels ({backlog})")
    labels = {
        split: labels_by_task(getattr(prepared, split), prepared.task_labels) for split in ("calibration", "test")
    }
    log(f"data: train {len(prepared.train)}, calibration {len(prepared.calibration)}, test {len(prepared.test)}")
    base_labels = labels
    per_seed_metrics: dict[int, dict[str, dict]] = {}
    per_seed_arrays: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for seed in args.seeds:
        arrays = train_models(prepared, base, base_args, seed, students, args.dac, cache, log, args.cached_only,
                              args.anchor_epochs, backlog)  # fmt: skip
        if args.anchor_variant and not args.train_only:
            if f"student-{args.anchor_variant}" not in arrays:
                raise SystemExit(f"--anchor-variant {args.anchor_variant}: not trained for seed {seed}; train it.")
            arrays["baseline"] = arrays.pop(f"student-{args.anchor_variant}")  # the tables' anchor row
        for model in list(arrays):
            arrays[model], labels = unknown_as_missing(arrays[model], base_labels, prepared.task_labels)
        per_seed_arrays[seed] = arrays
        per_seed_metrics[seed] = {m: task_metrics(a, labels, args.delta) for m, a in arrays.items()}
    if args.train_only:
        log("trained (--train-only); rerun without it over all seeds for the tables")
        return {}
    first_arrays = per_seed_arrays[args.seeds[0]]
    all_tasks = list(labels["test"])
    summary = summarise(per_seed_metrics)
    log(f"halvings: {args.halvings}")
    halving = halving_differences(per_seed_arrays, labels, all_tasks, args.delta, args.halvings)
    ltt_targets = {t: (0.97 if t in ("organ", "cancer_type") else 0.90) for t in tasks}
    guarantee = {
        m: ltt_resampling(a, labels, ltt_targets, args.delta, args.resamples)
        for m, a in first_arrays.items()
        if m in ("baseline", f"student-{students[0]}" if students else "")
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plots(first_arrays, labels, tasks, out_dir, summary, args.name)
    result = {
        "command": "python benchmarks/abstention_tcga.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "job": dataclasses.asdict(base),
            "training": training_summary(base_args),
            "baseline_epochs": args.anchor_epochs or int(base_args.num_train_epochs),
            "backlog": args.backlog,
            "anchor_variant": args.anchor_variant,
            "synthetic_backlog": args.synthetic_backlog,
        },
        "teachers": {k: v for k, v in TEACHERS.items()},
        "students": {s: STUDENTS[s] for s in students},
        "data": {
            "train": len(prepared.train),
            "calibration": len(prepared.calibration),
            "test": len(prepared.test),
            "classes": {t: len(v) for t, v in prepared.task_labels.items()},
        },  # fmt: skip
        "seeds": args.seeds,
        "delta": args.delta,
        "per_seed": per_seed_metrics,
        "summary": summary,
        "ltt_resampling": guarantee,
        "halvings": args.halvings,
        "student_minus_baseline_halvings": halving,
        "figures": figures,
        "seconds": round(time.perf_counter() - started, 1),
    }
    md = markdown(summary, all_tasks, args.seeds)
    md += "\n\n" + halving_markdown(halving, all_tasks, args.halvings)
    if args.resamples:
        md += "\n\n" + resampling_markdown(guarantee, args.delta)
    if not args.quick:
        write_json(out_dir / f"{args.name}.json", result)
        (out_dir / f"{args.name}.md").write_text(md + "\n")
    print(md, file=sys.stderr)
    print(json.dumps({"summary": summary["student_minus_baseline"], "ltt_resampling": guarantee}, indent=1))
    return result


if __name__ == "__main__":
    main()
