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

Writes ``benchmarks/results/abstention_tcga.{json,md}`` and risk–coverage / coverage PNGs; prints the JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
TARGETS = (0.80, 0.90, 0.95, 0.97)
TASKS = ("organ", "cancer_type", "histology", "histology_group", "grade", "t_stage", "laterality", "behavior")
# noisy tasks: also evaluated with "unknown" as missing (its reports dropped, its probability renormalised away)
UNKNOWN_AS_MISSING = ("histology_group", "t_stage", "laterality")
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
}
STUDENT_KEYS = ("student_epochs", "alpha", "temperature", "consistent_teaching", "augment_strength", "counterfactuals",
                "cod_max_edits")  # fmt: skip
DIFF_METRICS = [f"{m}@{t:.2f}.coverage" for m in ("empirical", "ltt") for t in TARGETS] + ["aurc", "accuracy"]
TEACHER_KEYS = ("members", "folds", "teacher_epochs", "member_sampling", "bag_fraction")


def _key(job, training_args, keys) -> str:
    d = {**dataclasses.asdict(job), "epochs": int(training_args.num_train_epochs), "version": CACHE_VERSION}
    blob = json.dumps({k: d[k] for k in (*keys, "tasks", "version")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results files stay machine-independent)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from reportkd.utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _probs(model, prepared, **kw) -> dict[str, np.ndarray]:
    from reportkd.text.mtcnn.predict import predict_probs

    pad = prepared.tokenizer.pad_token_id
    out = {}
    for split in ("calibration", "test"):
        for task, p in predict_probs(model, getattr(prepared, split), pad_token_id=pad, **kw).items():
            out[f"{split}/{task}"] = p
    return out


def train_models(
    prepared, base, base_args, seed: int, students: list[str], dac: bool, cache: Path, log, cached_only: bool = False
) -> dict[str, dict]:
    """Trains (or loads cached probabilities of) baseline, ensembles, students and DAC for one seed."""
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
        arrays = _load_npz(path)
        if arrays is None and cached_only:
            log(f"seed {seed}: {name} not in the cache (--cached-only): left out")
            return None
        if arrays is None:
            start = time.perf_counter()
            arrays = build()
            _save_npz(path, arrays)
            log(f"seed {seed}: {name} trained in {time.perf_counter() - start:.0f} s")
        return arrays

    def build_baseline():
        return _probs(train_single(prepared, base, targs, work / "tmp"), prepared)

    results["baseline"] = cached("baseline", _key(base, targs, ("epochs",)), build_baseline)
    soft_cache: dict[str, dict[str, np.ndarray]] = {}
    for name in students:
        spec = dict(STUDENTS[name])
        teacher_name = spec.pop("teacher")
        t_job = dataclasses.replace(base, **TEACHERS[teacher_name])
        s_job = dataclasses.replace(t_job, **spec)
        t_key = _key(t_job, targs, TEACHER_KEYS + ("epochs",))

        module_dir = work / f"teacher-{teacher_name}-{t_key}"

        def build_teacher(t_job=t_job, module_dir=module_dir):
            ensemble = train_teacher_ensemble(prepared, t_job, targs, work / "tmp")
            ensemble.save_pretrained(module_dir)  # for students that need the teacher in memory (CoD, consistent)
            soft = soft_labels(ensemble, prepared, t_job, seed)
            out = _probs(ensemble, prepared)
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
            if s.consistent_teaching or s.counterfactuals != "none":
                from reportkd.text.mtcnn import MtCNNEnsembleForReportClassification

                module = MtCNNEnsembleForReportClassification.from_pretrained(module_dir).eval()
            start = time.perf_counter()
            transfer, counts = transfer_set(prepared, s, module, seed)
            if counts["cod_attempted"]:
                log(f"seed {seed}: {counts} counterfactuals in {time.perf_counter() - start:.0f} s")
            model = train_single(prepared, s, targs, work / "tmp", soft_labels=soft_cache[tn], teacher=module,
                                 transfer=transfer)  # fmt: skip
            return _probs(model, prepared)

        student = cached(f"student-{name}", s_key, build_student)
        if student is not None:
            results[f"student-{name}"] = student
    if dac:
        targets = {t: (0.97 if t in ("organ", "cancer_type") else 0.90) for t in base.tasks}

        def build_dac():
            model = train_dac(prepared, dataclasses.replace(base, dac_targets=targets), targs, work / "tmp")
            out = _probs(model, prepared)
            out.update({f"abstain/{k}": v for k, v in _probs(model, prepared, with_abstain=True).items()})
            return out

        dac_arrays = cached("dac", _key(base, targs, ("epochs",)) + "v1", build_dac)
        if dac_arrays is not None:
            results["dac"] = dac_arrays
    return results


def task_metrics(arrays: dict[str, np.ndarray], labels: dict[str, dict[str, np.ndarray]], delta: float) -> dict:
    """Per task: accuracy, AURC, and per target × method the test coverage / accuracy on accepted reports."""
    from reportkd.abstention import aurc, coverage_at_targets
    from reportkd.text.mtcnn import dac_decisions

    out = {}
    for task in labels["test"]:
        cal_p, test_p = arrays[f"calibration/{task}"], arrays[f"test/{task}"]
        cal_y, test_y = labels["calibration"][task], labels["test"][task]
        keep = test_y != -100
        row: dict[str, Any] = {
            "accuracy": float((test_p.argmax(1)[keep] == test_y[keep]).mean()),
            "aurc": aurc(test_p, test_y),
        }
        row.update(coverage_at_targets(cal_p, cal_y, test_p, test_y, TARGETS, delta=delta))
        if f"abstain/test/{task}" in arrays:  # DAC's own abstention
            pred, abstained = dac_decisions(arrays[f"abstain/test/{task}"][keep])
            accepted = ~abstained
            row["dac_own"] = {
                "coverage": float(accepted.mean()),
                "accuracy": float((pred[accepted] == test_y[keep][accepted]).mean()) if accepted.any() else None,
            }
        out[task] = row
    return out


@functools.cache
def _testable(target: float, delta: float) -> int:
    from reportkd.abstention.ltt import min_testable

    return min_testable(1 - target, delta, "binomial", error_rate=(1 - target) / 2)


def _min_accepted(target: float, delta: float, y_cal: np.ndarray) -> int:
    """``ltt_threshold``'s default ``min_accepted``, with ``min_testable`` (its slow part) cached per target."""
    return min(_testable(target, delta), max(int((y_cal != -100).sum()) // 2, 1))


def ltt_resampling(arrays, labels, targets, delta: float, resamples: int, seed: int = 0) -> dict[str, dict]:
    """Pools calibration + test, redraws equal-size splits; share of splits where the test accuracy on accepted
    reports reaches the target, for LTT (guarantee: ≥ 1 − δ of calibrations, on the population) and empirical."""
    from reportkd.abstention import empirical_threshold, ltt_threshold, selective_metrics

    rng = np.random.default_rng(seed)
    out = {}
    for task, target in targets.items():
        p = np.concatenate([arrays[f"calibration/{task}"], arrays[f"test/{task}"]])
        y = np.concatenate([labels["calibration"][task], labels["test"][task]])
        n_cal = len(labels["calibration"][task])
        stats = {m: {"met": 0, "with_coverage": 0, "coverage": []} for m in ("ltt", "empirical")}
        for _ in range(resamples):
            perm = rng.permutation(len(y))
            cal, test = perm[:n_cal], perm[n_cal:]
            for method, thr in (
                (
                    "ltt",
                    ltt_threshold(p[cal], y[cal], target, delta, min_accepted=_min_accepted(target, delta, y[cal])),
                ),
                ("empirical", empirical_threshold(p[cal], y[cal], target)),
            ):
                m = selective_metrics(p[test], y[test], thr.threshold)
                st = stats[method]
                st["coverage"].append(m["coverage"])
                if m["selective_accuracy"] is not None:
                    st["with_coverage"] += 1
                    st["met"] += m["selective_accuracy"] >= target
        out[task] = {"target": target, "resamples": resamples}
        for method, st in stats.items():
            out[task][method] = {
                # a split that accepts nothing accepts no error: it meets the target (vacuously), as in LTT's risk
                "met_fraction": (st["met"] + resamples - st["with_coverage"]) / resamples if resamples else None,
                "with_coverage": st["with_coverage"],
                "mean_coverage": float(np.mean(st["coverage"])),
            }
    return out


def unknown_as_missing(
    arrays: dict[str, np.ndarray], labels: dict[str, dict[str, np.ndarray]], task_labels: dict[str, list[str]]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Adds ``<task>~known`` for :data:`UNKNOWN_AS_MISSING`: reports labelled ``unknown`` dropped (missing) and the
    ``unknown`` class's probability removed and the rest renormalised (evaluation-time; the models are unchanged)."""
    arrays, labels = dict(arrays), {k: dict(v) for k, v in labels.items()}
    for task in UNKNOWN_AS_MISSING:
        if task not in task_labels or "unknown" not in task_labels[task]:
            continue
        u = task_labels[task].index("unknown")
        for split in ("calibration", "test"):
            y = labels[split][task].copy()
            y = np.where(y == u, -100, np.where(y > u, y - 1, y))
            labels[split][f"{task}~known"] = y
            if f"{split}/{task}" in arrays:
                p = np.delete(arrays[f"{split}/{task}"], u, axis=1)
                arrays[f"{split}/{task}~known"] = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    return arrays, labels


def halving_differences(
    per_seed_arrays: dict[int, dict[str, dict[str, np.ndarray]]],
    labels: dict[str, dict[str, np.ndarray]],
    tasks: list[str],
    delta: float,
    halvings: int,
) -> dict[str, Any]:
    """Model − baseline coverage over seeds × resampled calibration/test halvings (same halvings for every model).

    Calibration and test reports are pooled and redrawn ``halvings`` times into halves of the original sizes; for
    each seed and halving the model and the baseline of that seed are calibrated on the same half and measured on
    the other. Returns per model, task and ``method@target``: mean difference, its standard error over seeds (sd of
    the per-seed means / √seeds), the mean sd over halvings, the share of (seed, halving) pairs the model wins, and
    the model's and the baseline's mean coverage.
    """
    from reportkd.abstention import empirical_threshold, ltt_threshold, selective_metrics

    seeds = sorted(per_seed_arrays)
    models = sorted({m for a in per_seed_arrays.values() for m in a} - {"baseline", "dac"})
    out: dict[str, Any] = {m: {} for m in models}
    for task in tasks:
        y = np.concatenate([labels["calibration"][task], labels["test"][task]])
        n_cal = len(labels["calibration"][task])
        perms = [np.random.default_rng(1000 + h).permutation(len(y)) for h in range(halvings)]
        cov: dict[str, np.ndarray] = {}  # model → (seeds, halvings, methods × targets)
        for model in ["baseline", *models]:
            grid = np.full((len(seeds), halvings, 2 * len(TARGETS)), np.nan)
            for si, seed in enumerate(seeds):
                a = per_seed_arrays[seed].get(model)
                if a is None:
                    continue
                p = np.concatenate([a[f"calibration/{task}"], a[f"test/{task}"]])
                for h, perm in enumerate(perms):
                    cal, test = perm[:n_cal], perm[n_cal:]
                    for ti, target in enumerate(TARGETS):
                        ltt = ltt_threshold(
                            p[cal], y[cal], target, delta, min_accepted=_min_accepted(target, delta, y[cal])
                        )
                        for mi, thr in enumerate((empirical_threshold(p[cal], y[cal], target), ltt)):
                            m = selective_metrics(p[test], y[test], thr.threshold)
                            grid[si, h, mi * len(TARGETS) + ti] = m["coverage"]
            cov[model] = grid
        for model in models:
            d = cov[model] - cov["baseline"]
            row = {}
            for mi, method in enumerate(("empirical", "ltt")):
                for ti, target in enumerate(TARGETS):
                    k = mi * len(TARGETS) + ti
                    dk = d[..., k]
                    if np.isnan(dk).all():
                        continue
                    per_seed_mean = np.nanmean(dk, axis=1)
                    n = int(np.sum(~np.isnan(per_seed_mean)))
                    row[f"{method}@{target:.2f}"] = {
                        "mean": float(np.nanmean(dk)),
                        "se_seeds": float(np.nanstd(per_seed_mean, ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                        "sd_halvings": float(np.nanmean(np.nanstd(dk, axis=1, ddof=1))) if halvings > 1 else 0.0,
                        "wins": float(np.nanmean(dk > 0)),
                        "model": float(np.nanmean(cov[model][..., k])),
                        "baseline": float(np.nanmean(cov["baseline"][..., k])),
                        "seeds": n,
                    }
            out[model][task] = row
    return out


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


def summarise(per_seed: dict[int, dict[str, dict]]) -> dict[str, Any]:
    """Mean ± sd over seeds of every scalar, per model and task; paired student − baseline differences."""
    models = sorted({m for r in per_seed.values() for m in r})
    seeds = sorted(per_seed)

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield f"{prefix}{k}", float(v)

    summary: dict[str, Any] = {}
    for model in models:
        runs = [per_seed[s][model] for s in seeds if model in per_seed[s]]
        summary[model] = {}
        for task in runs[0]:
            values: dict[str, list[float]] = {}
            for r in runs:
                for k, v in leaves(r[task]):
                    values.setdefault(k, []).append(v)
            summary[model][task] = {
                k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
                for k, v in values.items()
            }
    diffs: dict[str, Any] = {}
    for model in models:
        if not model.startswith("student-"):
            continue
        diffs[model] = {}
        for task in summary[model]:
            d = {}
            for metric in DIFF_METRICS:
                pairs = [
                    (
                        dict(leaves(per_seed[s][model][task])).get(metric),
                        dict(leaves(per_seed[s]["baseline"][task])).get(metric),
                    )
                    for s in seeds
                    if model in per_seed[s]
                ]
                delta = [a - b for a, b in pairs if a is not None and b is not None]
                if delta:
                    d[metric] = {
                        "mean": float(np.mean(delta)),
                        "sd": float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0,
                        "wins": int(sum(x > 0 for x in delta)),
                        "n": len(delta),
                    }
            diffs[model][task] = d
    return {"models": summary, "student_minus_baseline": diffs}


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

    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} not found: this benchmark needs ../shared/data/tcga-reports (or --data FILE).")
    students = [s for s in args.students.split(",") if s]
    unknown = [s for s in students if s not in STUDENTS]
    if unknown:
        raise SystemExit(f"Unknown student variant(s) {unknown}; known: {', '.join(STUDENTS)}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = MtCNNJobArguments(tasks=list(TASKS), max_length=args.max_length, split_seed=args.split_seed)
    cache = Path(args.cache_dir)
    base_args = default_training_args(cache / "tmp", num_train_epochs=args.epochs, seed=args.seeds[0])
    if args.quick:
        base = dataclasses.replace(base, members=4, folds=2, embedding_dim=16, num_filters=8, max_length=64)
        base_args = dataclasses.replace(base_args, num_train_epochs=1)
        cache = cache / "quick"
        args.out_dir = str(cache)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    prepared = prepare_data(str(data), base, seed=args.seeds[0])
    labels = {
        split: labels_by_task(getattr(prepared, split), prepared.task_labels) for split in ("calibration", "test")
    }
    log(f"data: train {len(prepared.train)}, calibration {len(prepared.calibration)}, test {len(prepared.test)}")
    base_labels = labels
    per_seed_metrics: dict[int, dict[str, dict]] = {}
    per_seed_arrays: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for seed in args.seeds:
        arrays = train_models(prepared, base, base_args, seed, students, args.dac, cache, log, args.cached_only)
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
    ltt_targets = {t: (0.97 if t in ("organ", "cancer_type") else 0.90) for t in TASKS}
    guarantee = {
        m: ltt_resampling(a, labels, ltt_targets, args.delta, args.resamples)
        for m, a in first_arrays.items()
        if m in ("baseline", f"student-{students[0]}" if students else "")
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plots(first_arrays, labels, list(TASKS), out_dir, summary, args.name)
    result = {
        "command": "python benchmarks/abstention_tcga.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"job": dataclasses.asdict(base), "training": training_summary(base_args)},
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
