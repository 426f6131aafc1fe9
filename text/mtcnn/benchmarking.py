"""Numbers the MtCNN benchmarks compute (``benchmarks/abstention_tcga.py``, ``benchmarks/fewshot_tcga.py``).

Cached probabilities per model and seed (``.npz``, no pickle), per-task metrics at target accuracies, the
``unknown``-as-missing view of noisy tasks, mean ± sd over seeds with paired model − baseline differences, and the
same differences over seeds × resampled calibration/test halvings. NumPy in and out; only :func:`predict_splits`
touches a model.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = (0.80, 0.90, 0.95, 0.97)
# noisy tasks: also evaluated with "unknown" as missing (its reports dropped, its probability renormalised away)
UNKNOWN_AS_MISSING = ("histology_group", "t_stage", "laterality")
DIFF_METRICS = tuple(f"{m}@{t:.2f}.coverage" for m in ("empirical", "ltt") for t in TARGETS) + ("aurc", "accuracy")


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` to ``path`` atomically (plain ``.npz``, read back without pickle)."""
    from reportkd.utils import atomic_path

    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``path``, or None when it does not exist (pickled objects refused)."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def predict_splits(model, prepared, splits: tuple[str, ...] = ("calibration", "test"), **kw) -> dict[str, np.ndarray]:
    """``{"<split>/<task>": (n, classes) probabilities}`` of ``model`` on ``prepared``'s splits.

    Args:
        model: An MtCNN, HiSAN or ensemble (see :func:`reportkd.text.mtcnn.predict.predict_probs`).
        prepared: :class:`reportkd.text.mtcnn.pipeline.PreparedData`.
        splits: Split names of ``prepared``.
        **kw: Passed to ``predict_probs`` (e.g. ``with_abstain=True``).
    """
    from .predict import predict_probs

    pad = prepared.tokenizer.pad_token_id
    out = {}
    for split in splits:
        for task, p in predict_probs(model, getattr(prepared, split), pad_token_id=pad, **kw).items():
            out[f"{split}/{task}"] = p
    return out


def task_metrics(
    arrays: dict[str, np.ndarray],
    labels: dict[str, dict[str, np.ndarray]],
    delta: float,
    targets: tuple[float, ...] = TARGETS,
) -> dict[str, dict[str, Any]]:
    """Per task: test accuracy, AURC, and per target × method the test coverage / accuracy on accepted reports.

    Args:
        arrays: ``{"calibration/<task>", "test/<task>"}`` probabilities (``"abstain/test/<task>"``: DAC outputs).
        labels: ``{"calibration": {task: ids}, "test": {task: ids}}`` (``-100`` missing).
        delta: LTT risk level.
        targets: Target accuracies; thresholds from the calibration split.
    """
    from reportkd.abstention import aurc, coverage_at_targets

    out = {}
    for task in labels["test"]:
        cal_p, test_p = arrays[f"calibration/{task}"], arrays[f"test/{task}"]
        cal_y, test_y = labels["calibration"][task], labels["test"][task]
        keep = test_y != -100
        row: dict[str, Any] = {
            "accuracy": float((test_p.argmax(1)[keep] == test_y[keep]).mean()),
            "aurc": aurc(test_p, test_y),
        }
        row.update(coverage_at_targets(cal_p, cal_y, test_p, test_y, targets, delta=delta))
        if f"abstain/test/{task}" in arrays:  # DAC's own abstention
            from .dac import dac_decisions

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


def min_accepted(target: float, delta: float, y_cal: np.ndarray) -> int:
    """``ltt_threshold``'s default ``min_accepted``, with ``min_testable`` (its slow part) cached per target."""
    return min(_testable(target, delta), max(int((y_cal != -100).sum()) // 2, 1))


def ltt_resampling(arrays, labels, targets: dict[str, float], delta: float, resamples: int, seed: int = 0) -> dict:
    """Pools calibration + test, redraws equal-size splits; share of splits where the test accuracy on accepted
    reports reaches the target, for LTT (guarantee: ≥ 1 − δ of calibrations, on the population) and empirical.

    Args:
        arrays: Probabilities as in :func:`task_metrics`.
        labels: Labels as in :func:`task_metrics`.
        targets: Task → target accuracy.
        delta: LTT risk level.
        resamples: Redrawn splits.
        seed: Seed of the redraws.
    """
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
            ltt = ltt_threshold(p[cal], y[cal], target, delta, min_accepted=min_accepted(target, delta, y[cal]))
            for method, thr in (("ltt", ltt), ("empirical", empirical_threshold(p[cal], y[cal], target))):
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
    arrays: dict[str, np.ndarray],
    labels: dict[str, dict[str, np.ndarray]],
    task_labels: dict[str, list[str]],
    tasks: tuple[str, ...] = UNKNOWN_AS_MISSING,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Adds ``<task>~known`` for ``tasks``: reports labelled ``unknown`` dropped (missing) and the ``unknown``
    class's probability removed and the rest renormalised (evaluation-time; the models are unchanged).

    Args:
        arrays: Probabilities as in :func:`task_metrics` (not modified).
        labels: Labels as in :func:`task_metrics` (not modified).
        task_labels: Task → class names (the position of ``unknown``).
        tasks: The tasks to add a ``~known`` view of (skipped when they have no ``unknown`` class).
    """
    arrays, labels = dict(arrays), {k: dict(v) for k, v in labels.items()}
    for task in tasks:
        if task not in task_labels or "unknown" not in task_labels[task]:
            continue
        u = task_labels[task].index("unknown")
        for split in ("calibration", "test"):
            y = labels[split][task].copy()
            y = np.where(y == u, -100, np.where(y > u, y - 1, y))
            labels[split][f"{task}~known"] = y
            if f"{split}/{task}" in arrays:
                p = np.delete(arrays[f"{split}/{task}"], u, axis=1).astype(np.float64)
                mass = p.sum(1, keepdims=True)
                # a model sure of "unknown" (the rest underflowed to 0 in float32) says nothing else: uniform
                p = np.where(mass > 1e-12, p / np.maximum(mass, 1e-12), 1.0 / p.shape[1])
                arrays[f"{split}/{task}~known"] = p
    return arrays, labels


def halving_differences(
    per_seed_arrays: dict[int, dict[str, dict[str, np.ndarray]]],
    labels: dict[str, dict[str, np.ndarray]],
    tasks: list[str],
    delta: float,
    halvings: int,
    targets: tuple[float, ...] = TARGETS,
) -> dict[str, Any]:
    """Model − baseline coverage over seeds × resampled calibration/test halvings (same halvings for every model).

    Calibration and test reports are pooled and redrawn ``halvings`` times into halves of the original sizes; for
    each seed and halving the model and the baseline of that seed are calibrated on the same half and measured on
    the other.

    Args:
        per_seed_arrays: Seed → model name → probabilities (as in :func:`task_metrics`); one model is ``baseline``
            (``dac`` is left out).
        labels: Labels as in :func:`task_metrics`.
        tasks: Tasks to compare.
        delta: LTT risk level.
        halvings: Redrawn halvings (seeded ``1000 + h``).
        targets: Target accuracies.

    Returns:
        Per model, task and ``method@target``: mean difference, its standard error over seeds (sd of the per-seed
        means / √seeds), the mean sd over halvings, the share of (seed, halving) pairs the model wins, and the
        model's and the baseline's mean coverage.
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
            grid = np.full((len(seeds), halvings, 2 * len(targets)), np.nan)
            for si, seed in enumerate(seeds):
                a = per_seed_arrays[seed].get(model)
                if a is None:
                    continue
                p = np.concatenate([a[f"calibration/{task}"], a[f"test/{task}"]])
                for h, perm in enumerate(perms):
                    cal, test = perm[:n_cal], perm[n_cal:]
                    for ti, target in enumerate(targets):
                        ltt = ltt_threshold(
                            p[cal], y[cal], target, delta, min_accepted=min_accepted(target, delta, y[cal])
                        )
                        for mi, thr in enumerate((empirical_threshold(p[cal], y[cal], target), ltt)):
                            m = selective_metrics(p[test], y[test], thr.threshold)
                            grid[si, h, mi * len(targets) + ti] = m["coverage"]
            cov[model] = grid
        for model in models:
            d = cov[model] - cov["baseline"]
            row = {}
            for mi, method in enumerate(("empirical", "ltt")):
                for ti, target in enumerate(targets):
                    k = mi * len(targets) + ti
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


def _leaves(d: dict, prefix: str = ""):
    """``(dotted key, float)`` for every numeric leaf of a nested dict (booleans skipped)."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", float(v)


def summarise(
    per_seed: dict[int, dict[str, dict]],
    metrics: tuple[str, ...] = DIFF_METRICS,
    baseline: str = "baseline",
    prefix: str = "student-",
) -> dict[str, Any]:
    """Mean ± sd over seeds of every scalar, per model and task; paired model − baseline differences.

    Args:
        per_seed: Seed → model name → task → nested metrics (as from :func:`task_metrics`).
        metrics: Dotted metric keys to difference (e.g. ``"empirical@0.97.coverage"``).
        baseline: The model every difference is taken against (same seed).
        prefix: Models whose name starts with it get differences.

    Returns:
        ``{"models": {model: {task: {metric: {"mean", "sd", "n"}}}}, "student_minus_baseline": {model: {task:
        {metric: {"mean", "sd", "wins", "n"}}}}}`` (``wins``: seeds where the model is higher).
    """
    models = sorted({m for r in per_seed.values() for m in r})
    seeds = sorted(per_seed)
    summary: dict[str, Any] = {}
    for model in models:
        runs = [per_seed[s][model] for s in seeds if model in per_seed[s]]
        summary[model] = {}
        for task in runs[0]:
            values: dict[str, list[float]] = {}
            for r in runs:
                for k, v in _leaves(r[task]):
                    values.setdefault(k, []).append(v)
            summary[model][task] = {
                k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
                for k, v in values.items()
            }
    diffs: dict[str, Any] = {}
    for model in models:
        if not model.startswith(prefix) or model == baseline:
            continue
        diffs[model] = {}
        for task in summary[model]:
            d = {}
            for metric in metrics:
                pairs = [
                    (dict(_leaves(runs[model][task])).get(metric), dict(_leaves(runs[baseline][task])).get(metric))
                    for runs in (per_seed[s] for s in seeds)
                    if model in runs and baseline in runs
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


__all__ = [
    "DIFF_METRICS",
    "TARGETS",
    "UNKNOWN_AS_MISSING",
    "halving_differences",
    "load_npz",
    "ltt_resampling",
    "min_accepted",
    "predict_splits",
    "save_npz",
    "summarise",
    "task_metrics",
    "unknown_as_missing",
]
