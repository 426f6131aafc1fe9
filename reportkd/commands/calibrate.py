"""``reportkd calibrate``: abstention thresholds at a target accuracy, written to a versioned thresholds file.

    reportkd calibrate --model runs/student --data calibration.jsonl --target-accuracy 0.97 \\
        --method ltt --delta 0.1 --out runs/student/thresholds.json
    reportkd calibrate --predictions probs.npz --target-accuracy 0.97 --mode joint --out thresholds.json

``--data`` must be reports the model never trained on (a calibration split) with every task's label column;
reports with a missing label are left out of that task's calibration and counted. ``--predictions`` calibrates the
saved probabilities of any model (format: :mod:`reportkd.abstention.predictions`). ``--method ltt`` gives
thresholds such that accuracy on accepted reports is >= the target with probability >= 1 - delta on new data from
the same source; ``empirical`` just reaches it on the calibration split (no guarantee). An unreachable target gives
threshold > 1: that task abstains on every report (coverage 0), reported as such.

The thresholds are bound to what was calibrated (``model_sha256`` and ``provenance`` in the file): the weights of
``--model``, or the model recorded in the ``--predictions`` file (with a fingerprint of the predictions). ``--model A
--predictions B`` is refused unless B records A's weights (``reportkd predict --save-probs`` does), or B records no
model and ``--assume-same-model`` is given. ``--out`` must not be an input; an existing one needs ``--overwrite``.
Probabilities must be finite, in [0, 1] and sum to 1; a task whose every label is missing is an error.
"""

from __future__ import annotations

import argparse
import sys

from ._classifier import (
    add_data_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
    get_predictions,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("input (either --model with --data, or --predictions)")
    src.add_argument("--model", help="Classifier directory (from `reportkd demo` or save_classifier).")
    src.add_argument(
        "--data", help="Labelled calibration reports: a file (.jsonl[.gz], .csv, .parquet) or hf:ORG/NAME[:SPLIT]."
    )
    src.add_argument("--predictions", help="Saved probabilities and labels (.npz / .jsonl; see reportkd.abstention).")
    p.add_argument("--out", required=True, help="Thresholds file to write (e.g. MODEL_DIR/thresholds.json).")
    add_overwrite_argument(p)
    p.add_argument(
        "--assume-same-model", action="store_true",
        help="With --model and --predictions: accept predictions that do not record which weights produced them.",
    )  # fmt: skip
    p.add_argument("--target-accuracy", type=float, default=0.97, help="Accuracy required on accepted reports.")
    p.add_argument(
        "--method", choices=("empirical", "ltt"), default="ltt",
        help="ltt (default): accuracy on accepted reports >= target with probability >= 1 - delta on new data; "
        "empirical: reaches the target on this split only.",
    )  # fmt: skip
    p.add_argument("--delta", type=float, default=0.1, help="LTT: allowed probability that the target is missed.")
    p.add_argument(
        "--mode", choices=("per-task", "joint"), default="per-task",
        help="joint: a report is auto-coded only if every task is accepted; the target is on the joint accuracy.",
    )  # fmt: skip
    p.add_argument("--p-value", choices=("binomial", "hoeffding_bentkus"), default="binomial", help="LTT p-value.")
    p.add_argument("--fwer", choices=("fixed_sequence", "bonferroni"), default="fixed_sequence", help="LTT testing.")
    p.add_argument("--temperature-scaling", action="store_true", help="Fit one temperature per task first.")
    p.add_argument(
        "--temperature-fraction", type=float, default=0.3,
        help="Share of the calibration reports that fit the temperatures and are left out of threshold calibration.",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="Seed of the temperature hold-out split.")
    add_data_arguments(p)
    add_model_arguments(p)


def format_calibration(c, missing: dict[str, int] | None = None) -> str:
    """A plain-text table of a :class:`~reportkd.abstention.Calibration`."""
    head = f"{'task':<16} {'n':>6} {'missing':>7} {'threshold':>10} {'coverage':>9} {'accuracy':>9}"
    lines = [head]
    rows = list(c.tasks.items()) + ([("(joint)", c.joint)] if c.joint is not None else [])
    for task, th in rows:
        reached = th.reached
        lines.append(
            f"{task:<16} {th.n:>6} {th.n_missing:>7} {f'{th.threshold:.4f}' if reached else '—':>10} "
            f"{th.coverage:>9.3f} {'—' if th.accuracy is None else f'{th.accuracy:.3f}':>9}"
            + ("" if reached else "  target unreachable: abstains on every report (coverage 0)")
        )
    return "\n".join(lines)


def binding(preds, clf, *, from_predictions: bool) -> tuple[str | None, dict]:
    """The weights fingerprint the thresholds are bound to, and how it was established (the file's provenance).

    Args:
        preds: The calibrated :class:`~reportkd.abstention.Predictions`.
        clf: The loaded classifier (None without ``--model``).
        from_predictions: The probabilities came from a ``--predictions`` file (not from running ``clf``).
    """
    if not from_predictions:
        return clf.model_sha256, {
            "calibrated_from": "model",
            "predictions_sha256": None,
            "model_sha256_from": "weights",
        }
    sha = preds.model_sha256 or (clf.model_sha256 if clf is not None else None)
    how = "predictions" if preds.model_sha256 else ("asserted" if sha else None)
    return sha, {"calibrated_from": "predictions", "predictions_sha256": preds.fingerprint(), "model_sha256_from": how}


def run(args: argparse.Namespace) -> int:
    from reportkd.abstention import calibrate, write_thresholds

    check_outputs(
        {"--out": args.out}, {"--data": args.data, "--predictions": args.predictions, "--model": args.model},
        overwrite=args.overwrite,
    )  # fmt: skip
    preds, clf, run_ = get_predictions(
        args, model=args.model, predictions=args.predictions, data=args.data, thresholds=None, require_labels=True
    )
    ltt = {"p_value": args.p_value, "fwer": args.fwer} if args.method == "ltt" else {}
    c = calibrate(
        preds.probs,
        preds.labels,
        args.target_accuracy,
        method=args.method,
        delta=args.delta,
        mode=args.mode,
        temperature_scaling=args.temperature_scaling,
        temperature_fraction=args.temperature_fraction,
        seed=args.seed,
        **ltt,
    )
    task_labels = clf.task_labels if clf is not None else preds.task_labels
    model_sha256, provenance = binding(preds, clf, from_predictions=bool(args.predictions))
    out = write_thresholds(
        args.out,
        c,
        task_labels,
        model_id=clf.model_id if clf is not None else preds.model_id,
        model_sha256=model_sha256,
        data=str(args.data or args.predictions),
        reports=len(preds),
        skipped_empty=len(run_.skipped_ids) if run_ is not None else 0,
        provenance=provenance,
    )
    guarantee = f", delta={args.delta}" if args.method == "ltt" else " (no guarantee on new data)"
    print(
        f"Calibrated {len(c.tasks)} task(s) on {c.calibration_size} reports"
        + (f" ({c.temperature_size} more fitted the temperatures)" if c.temperature_size else "")
        + (f", {len(run_.skipped_ids)} skipped for empty text" if run_ is not None and run_.skipped_ids else "")
        + f": method {args.method}{guarantee}, mode {args.mode}, target accuracy {args.target_accuracy:.1%}."
    )
    print(format_calibration(c))
    unreached = [t for t, th in c.tasks.items() if not th.reached]
    if unreached:
        print(f"Target unreachable for {unreached}: those tasks abstain on every report (coverage 0).")
    if model_sha256 is None:
        print(
            "warning: the predictions do not record which weights produced them, so these thresholds are bound to no "
            "model (predict/evaluate refuse them for a model unless --allow-other-weights).",
            file=sys.stderr,
        )
    print(f"Thresholds → {out}")
    return 0
