"""``reportkd evaluate-abstention``: accuracy, coverage and selective accuracy on labelled reports, with plots.

    reportkd evaluate-abstention --model runs/student --data test.jsonl \\
        --baseline-model runs/baseline --out-dir eval/
    reportkd evaluate-abstention --predictions student.npz --thresholds thresholds.json \\
        --baseline-predictions baseline.npz --baseline-thresholds baseline_thresholds.json

Prints per model and task: labelled reports, accuracy, coverage and selective accuracy at the thresholds, AURC, ECE,
NLL and Brier, and a joint row (a report is right when every task is). Writes ``metrics.json``,
``risk_coverage.png`` (risk–coverage curves, baseline vs student when both are given, calibrated operating points
marked) and ``reliability.png`` (reliability diagrams) into ``--out-dir``. Thresholds come from ``--thresholds`` or
the model directory; temperatures stored with them are applied first. Nothing is written when an input is invalid:
outputs are checked first (never an input; existing ones only with ``--overwrite``; a writable folder), models load
safely (``--trust-remote-code`` / ``--allow-pickle`` to opt in), thresholds must match the model's weights (or the
weights recorded in a predictions file), probabilities must be valid and every task needs labels.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ._classifier import (
    add_data_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
    get_predictions,
)

OUTPUT_FILES = ("metrics.json", "risk_coverage.png", "reliability.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model under evaluation (--model with --data, or --predictions)")
    m.add_argument("--model", help="Classifier directory.")
    m.add_argument("--predictions", help="Saved probabilities and labels (.npz / .jsonl).")
    m.add_argument("--thresholds", help="Thresholds file (default: MODEL_DIR/thresholds.json when present).")
    m.add_argument("--name", default="student", help="Name of this model in tables and plots.")
    b = p.add_argument_group("optional baseline to compare with")
    b.add_argument("--baseline-model", help="Baseline classifier directory (run on --data).")
    b.add_argument("--baseline-predictions", help="Baseline saved probabilities.")
    b.add_argument("--baseline-thresholds", help="Baseline thresholds file (default: its model directory's).")
    b.add_argument("--baseline-name", default="baseline", help="Name of the baseline in tables and plots.")
    p.add_argument(
        "--data", help="Labelled reports (a file or hf:ORG/NAME[:SPLIT]) for the model(s) given as directories."
    )
    p.add_argument("--out-dir", default="abstention-eval", help="Where metrics.json and the PNG plots go.")
    add_overwrite_argument(p)
    p.add_argument("--n-bins", type=int, default=15, help="Confidence bins of ECE and the reliability diagrams.")
    p.add_argument(
        "--allow-other-weights", action="store_true",
        help="Use thresholds calibrated for other (or unknown) weights with the same label maps.",
    )  # fmt: skip
    p.add_argument(
        "--assume-same-model", action="store_true",
        help="With --model and --predictions: accept predictions that do not record which weights produced them.",
    )  # fmt: skip
    add_data_arguments(p)
    add_model_arguments(p)


def _evaluate(args: argparse.Namespace, model, predictions, thresholds) -> dict[str, Any]:
    """Loads one model's probabilities and thresholds and computes every metric (nothing written)."""
    import numpy as np

    from reportkd.abstention import apply_temperature, apply_thresholds, joint_confidence_and_correct, read_thresholds
    from reportkd.abstention.metrics import (
        joint_report,
        reliability_bins,
        risk_coverage_curve,
        risk_coverage_from_scores,
        selective_report,
    )

    data = args.data if model and not predictions else None
    preds, clf, _ = get_predictions(
        args, model=model, predictions=predictions, data=data, thresholds=thresholds or "auto", require_labels=True
    )
    th = clf.thresholds if clf is not None else None
    if clf is None and thresholds:
        th = read_thresholds(
            thresholds, task_labels=preds.task_labels, model_sha256=preds.model_sha256,
            allow_other_weights=args.allow_other_weights,
        )  # fmt: skip
    probs = preds.probs
    if th is not None and th.temperatures:
        probs = {t: apply_temperature(p, th.temperatures.get(t, 1.0)) for t, p in probs.items()}
    accepted = apply_thresholds(probs, th.thresholds, th.mode) if th is not None else None
    tasks = {
        t: selective_report(probs[t], preds.labels[t], accepted[t] if accepted else None, n_bins=args.n_bins)
        for t in probs
    }
    every = np.all(list(accepted.values()), axis=0) if accepted else None
    joint = joint_report(probs, preds.labels, every)
    curves = {t: risk_coverage_curve(probs[t], preds.labels[t]) for t in probs}
    conf, correct, _ = joint_confidence_and_correct(probs, preds.labels)
    curves["(joint)"] = risk_coverage_from_scores(conf, correct)
    points = {
        t: (m["coverage"], 1 - m["selective_accuracy"])
        for t, m in [*tasks.items(), ("(joint)", joint)]
        if m.get("selective_accuracy") is not None
    }
    return {
        "source": str(model or predictions),
        "reports": len(preds),
        "thresholds": None
        if th is None
        else {"mode": th.mode, "method": th.calibration.method, "target_accuracy": th.calibration.target_accuracy,
              "delta": th.calibration.delta, "thresholds": th.thresholds, "temperatures": th.temperatures},
        "tasks": tasks,
        "joint": joint,
        "_curves": curves,
        "_bins": {t: reliability_bins(probs[t], preds.labels[t], args.n_bins) for t in probs},
        "_points": points,
    }  # fmt: skip


def _json_safe(obj: Any) -> Any:
    """NaN → None, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from reportkd.abstention import plot_reliability, plot_risk_coverage
    from reportkd.utils import write_json

    if args.n_bins < 1:
        raise ValueError(f"--n-bins must be >= 1, got {args.n_bins}.")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out-dir {out} is a file; give a folder.")
    inputs = {
        "--data": args.data, "--model": args.model, "--predictions": args.predictions, "--thresholds": args.thresholds,
        "--baseline-model": args.baseline_model, "--baseline-predictions": args.baseline_predictions,
        "--baseline-thresholds": args.baseline_thresholds,
    }  # fmt: skip
    check_outputs([("--out-dir", out / name) for name in OUTPUT_FILES], inputs, overwrite=args.overwrite)
    results = {args.name: _evaluate(args, args.model, args.predictions, args.thresholds)}
    if args.baseline_model or args.baseline_predictions:
        if args.baseline_name == args.name:
            raise ValueError("--name and --baseline-name must differ.")
        results[args.baseline_name] = _evaluate(
            args, args.baseline_model, args.baseline_predictions, args.baseline_thresholds
        )
    # every input is valid: print and write
    print(
        f"{'model':<10} {'task':<14} {'n':>6} {'missing':>7} {'accuracy':>8} {'coverage':>8} {'sel.acc':>8} "
        f"{'AURC':>6} {'ECE':>6} {'NLL':>6} {'Brier':>6}"
    )
    for name, r in results.items():
        for task, m in [*r["tasks"].items(), ("(joint)", r["joint"])]:
            print(
                f"{name:<10} {task:<14} {m['n']:>6} {m['n_missing']:>7} {_fmt(m['accuracy']):>8} "
                f"{_fmt(m.get('coverage')):>8} {_fmt(m.get('selective_accuracy')):>8} {_fmt(m.get('aurc')):>6} "
                f"{_fmt(m.get('ece')):>6} {_fmt(m.get('nll')):>6} {_fmt(m.get('brier')):>6}"
            )
        if r["thresholds"] is None:
            print(f"{name}: no thresholds (give --thresholds); coverage and selective accuracy not computed.")
        else:
            unreached = [t for t, v in r["thresholds"]["thresholds"].items() if v > 1]
            if unreached:
                print(f"{name}: target unreachable at calibration for {unreached}: coverage 0 (all abstain).")
    targets = [r["thresholds"]["target_accuracy"] for r in results.values() if r["thresholds"]]
    rc = plot_risk_coverage(
        {n: r["_curves"] for n, r in results.items()},
        out / "risk_coverage.png",
        target_accuracy=targets[0] if targets else None,
        operating_points={n: r["_points"] for n, r in results.items()},
    )
    rel = plot_reliability({n: r["_bins"] for n, r in results.items()}, out / "reliability.png")
    metrics = {n: _json_safe({k: v for k, v in r.items() if not k.startswith("_")}) for n, r in results.items()}
    js = write_json(out / "metrics.json", {"data": args.data, "models": metrics})
    print(f"Metrics → {js}; plots → {rc}, {rel}")
    return 0
