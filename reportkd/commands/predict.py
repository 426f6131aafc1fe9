"""``reportkd predict``: label reports or abstain, per task, with the calibrated thresholds.

    reportkd predict --model runs/student --data new_reports.jsonl --out predictions.jsonl
    reportkd predict --model runs/student --backend onnx --data new_reports.jsonl --out predictions.jsonl

Thresholds come from ``--thresholds FILE`` or, by default, ``MODEL_DIR/thresholds.json``; a file made for another
model (tasks, label maps or weights) is refused. Without any, every prediction is accepted (a warning says so).
Each output line is one report::

    {"id": "r1", "auto_coded": false,
     "tasks": {"grade": {"label": "abstain", "prediction": "G2", "probability": 0.81},
               "organ": {"label": "kidney", "prediction": "kidney", "probability": 0.998}}}

``label`` is the class or ``"abstain"`` (send to a human); ``auto_coded`` is true when every task is labelled. In joint
mode a report is labelled for every task or for none. Lines follow the input order; a report with empty text keeps
its place, with ``"skipped": "empty text"``, and abstains on every task. Summary counts are printed at the end.

Model loading is safe by default (no code from the model folder without ``--trust-remote-code``, safetensors only
without ``--allow-pickle``). ``--out`` / ``--save-probs`` must not be inputs and are not replaced without
``--overwrite``; they are checked before the model runs. ``--save-probs`` records the model's weights fingerprint,
so thresholds calibrated on that file are bound to this model.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ._classifier import (
    add_data_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
    load_classifier,
    model_options,
    run_model,
)

ABSTAIN = "abstain"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Classifier directory.")
    p.add_argument("--data", required=True, help="Reports to label (.jsonl[.gz], .csv, .parquet); labels not needed.")
    p.add_argument("--out", required=True, help="Output JSONL, one line per report.")
    p.add_argument("--thresholds", help="Thresholds file (default: MODEL_DIR/thresholds.json when present).")
    p.add_argument(
        "--allow-other-weights", action="store_true",
        help="Use thresholds calibrated for other (or unknown) weights with the same label maps.",
    )  # fmt: skip
    p.add_argument("--save-probs", help="Also save every class probability (.npz / .jsonl) for --predictions use.")
    p.add_argument(
        "--backend", choices=("torch", "onnx"), default="torch",
        help="Run the model with PyTorch or with onnxruntime on its ONNX export (reportkd export --format onnx).",
    )  # fmt: skip
    p.add_argument("--onnx", help="ONNX file for --backend onnx (default: MODEL_DIR/model.onnx).")
    p.add_argument("--threads", type=int, help="CPU threads for prediction (default: the library's, all cores).")
    add_overwrite_argument(p)
    add_data_arguments(p)
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from reportkd.abstention import THRESHOLDS_NAME, apply_temperature, apply_thresholds, save_predictions
    from reportkd.utils import atomic_path

    if args.save_probs and not args.save_probs.lower().endswith((".npz", ".jsonl", ".jsonl.gz")):
        raise ValueError(f"--save-probs {args.save_probs}: use a .npz, .jsonl or .jsonl.gz file name.")
    thresholds_in = args.thresholds or f"{args.model}/{THRESHOLDS_NAME}"
    check_outputs(
        {"--out": args.out, "--save-probs": args.save_probs},
        {"--data": args.data, "--model": args.model, "--thresholds": thresholds_in},
        overwrite=args.overwrite,
    )
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}.")
    if args.onnx and args.backend != "onnx":
        raise ValueError("--onnx FILE is read by --backend onnx; add --backend onnx.")
    onnx_model = None
    if args.backend == "onnx":
        from pathlib import Path

        from reportkd.text.mtcnn.export import ONNX_NAME, OnnxClassifier

        onnx_path = Path(args.onnx or Path(args.model) / ONNX_NAME)
        if not onnx_path.is_file():
            raise FileNotFoundError(
                f"{onnx_path} does not exist; export the model first: reportkd export --model {args.model} "
                "--format onnx (or give --onnx FILE)."
            )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    clf = load_classifier(args.model, thresholds=args.thresholds or "auto", **model_options(args))
    if args.backend == "onnx":
        onnx_model = OnnxClassifier(onnx_path, threads=args.threads)
        onnx_model.check(clf.task_labels, clf.model_sha256)
    result = run_model(clf, args.data, args, require_labels=False, onnx_model=onnx_model)
    preds = result.predictions
    preds.validate()
    th = clf.thresholds
    probs = preds.probs
    if th is not None and th.temperatures:
        probs = {t: apply_temperature(p, th.temperatures.get(t, 1.0)) for t, p in probs.items()}
    if th is None:
        print(
            f"warning: no thresholds for {args.model} (give --thresholds or run `reportkd calibrate`); "
            "every prediction is accepted.",
            file=sys.stderr,
        )
        accepted = {t: np.ones(len(preds), dtype=bool) for t in probs}
    else:
        accepted = apply_thresholds(probs, th.thresholds, th.mode)
    tasks = list(clf.task_labels)
    pred = {t: probs[t].argmax(1) for t in tasks}
    conf = {t: probs[t].max(1) for t in tasks}
    every = np.all([accepted[t] for t in tasks], axis=0)
    with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rid, i in result.order:  # input order; skipped reports keep their place
            if i is None:
                empty = {t: {"label": ABSTAIN, "prediction": None, "probability": None} for t in tasks}
                f.write(json.dumps({"id": rid, "auto_coded": False, "skipped": "empty text", "tasks": empty}) + "\n")
                continue
            row = {"id": rid, "auto_coded": bool(every[i]), "tasks": {}}
            for t in tasks:
                name = clf.task_labels[t][int(pred[t][i])]
                row["tasks"][t] = {
                    "label": name if accepted[t][i] else ABSTAIN,
                    "prediction": name,
                    "probability": round(float(conf[t][i]), 6),
                }
            f.write(json.dumps(row) + "\n")
    if args.save_probs:
        save_predictions(args.save_probs, preds)
    n, skipped = len(preds), len(result.skipped_ids)
    total = n + skipped
    mode = f"{th.mode} thresholds from {th.model_id or 'file'}" if th is not None else "no thresholds"
    print(f"Labelled {total} reports ({n} predicted, {skipped} skipped for empty text; {mode}) → {args.out}")
    print(f"{'task':<16} {'labelled':>9} {'abstain':>8} {'coverage':>9}")
    for t in tasks:
        k = int(accepted[t].sum())
        print(f"{t:<16} {k:>9} {total - k:>8} {k / total if total else 0:>9.3f}")
    k = int(every.sum())
    print(f"{'(all tasks)':<16} {k:>9} {total - k:>8} {k / total if total else 0:>9.3f}  reports auto-coded")
    if args.save_probs:
        print(f"Probabilities → {args.save_probs}")
    return 0
