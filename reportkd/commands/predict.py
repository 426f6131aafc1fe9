"""``reportkd predict``: label reports or abstain, per task, with the calibrated thresholds.

    reportkd predict --model runs/student --data new_reports.jsonl --out predictions.jsonl
    reportkd predict --model runs/student --backend onnx --data new_reports.jsonl --out predictions.jsonl
    reportkd predict --model runs/student --data hf:org/pathology-reports:test --out predictions.jsonl

Thresholds come from ``--thresholds FILE`` or, by default, ``MODEL_DIR/thresholds.json``; a file made for another
model (tasks, label maps or weights) is refused. Without any, every prediction is accepted (a warning says so).
Each output line is one report::

    {"id": "r1", "auto_coded": false,
     "tasks": {"grade": {"label": "abstain", "prediction": "G2", "probability": 0.81},
               "organ": {"label": "kidney", "prediction": "kidney", "probability": 0.998}}}

``label`` is the class or ``"abstain"`` (send to a human); ``auto_coded`` is true when every task is labelled. In joint
mode a report is labelled for every task or for none. Lines follow the input order; a report with empty text keeps
its place, with ``"skipped": "empty text"``, and abstains on every task. Summary counts are printed at the end.

``--data`` is a file (JSONL, gzip too, CSV / TSV, Parquet) or a ``datasets`` spec (``hf:ORG/NAME[:SPLIT]``,
``json:GLOB``; see :func:`reportkd.data.parse_data_spec`). It is streamed: ``--chunk-size`` reports at a time are
read, predicted and written, so memory does not grow with the file. The output does not depend on the chunk size
(with ``--batch-size 1`` bit for bit; otherwise a report's padding can move its probabilities in the 6th decimal).
``--save-probs`` keeps every probability until the end (reports × classes floats), and the duplicate-id check keeps
the ids.

Model loading is safe by default (no code from the model folder without ``--trust-remote-code``, safetensors only
without ``--allow-pickle``). ``--out`` / ``--save-probs`` must not be inputs and are not replaced without
``--overwrite``; they are checked before the model runs. ``--save-probs`` records the model's weights fingerprint,
so thresholds calibrated on that file are bound to this model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._classifier import (
    add_data_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
    iter_model_runs,
    load_classifier,
    model_options,
)

ABSTAIN = "abstain"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Classifier directory.")
    p.add_argument(
        "--data", required=True,
        help="Reports to label: a file (.jsonl[.gz], .csv, .parquet) or a datasets spec (hf:ORG/NAME[:SPLIT], "
        "json:GLOB); labels not needed.",
    )  # fmt: skip
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
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    p.add_argument(
        "--chunk-size", type=int, default=4096,
        help="Reports read, predicted and written at a time (bounds memory; results equal up to float rounding).",
    )  # fmt: skip
    add_overwrite_argument(p)
    add_data_arguments(p)
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from reportkd.abstention import THRESHOLDS_NAME, Predictions, save_predictions
    from reportkd.utils import atomic_path

    if args.save_probs and not args.save_probs.lower().endswith((".npz", ".jsonl", ".jsonl.gz")):
        raise ValueError(f"--save-probs {args.save_probs}: use a .npz, .jsonl or .jsonl.gz file name.")
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}.")
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
    th = clf.thresholds
    if th is None:
        print(
            f"warning: no thresholds for {args.model} (give --thresholds or run `reportkd calibrate`); "
            "every prediction is accepted.",
            file=sys.stderr,
        )
    tasks = list(clf.task_labels)
    labelled = dict.fromkeys(tasks, 0)
    n = skipped = coded = 0
    ids: dict[str, int] = {}  # id → count, for the duplicate warning
    kept: list[Predictions] = []
    with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        runs = iter_model_runs(clf, args.data, args, chunk_size=args.chunk_size, onnx_model=onnx_model)
        progress = None
        for result in runs:  # read, predict, write one chunk at a time
            if progress is None:  # after the first chunk: a bad --data fails without a bar
                progress = tqdm(desc="Predicting reports", unit=" reports", disable=args.no_progress)
            progress.update(len(result.order))
            preds = result.predictions
            preds.validate()
            probs, accepted = clf.decisions(preds.probs)
            for line in output_lines(clf, result, probs, accepted):
                f.write(json.dumps(line) + "\n")
            for rid, _ in result.order:
                ids[rid] = ids.get(rid, 0) + 1
            n, skipped = n + len(preds), skipped + len(result.skipped_ids)
            for t in tasks:
                labelled[t] += int(accepted[t].sum())
            coded += int(np.all([accepted[t] for t in tasks], axis=0).sum()) if len(preds) else 0
            if args.save_probs:
                kept.append(preds)
        if progress is not None:
            progress.close()
        if n == 0:
            raise ValueError(
                f"Every report in {args.data} has empty text (column {args.text_column!r}); nothing to predict."
            )
    repeated = sum(c - 1 for c in ids.values())
    if repeated:
        example = next(i for i, c in ids.items() if c > 1)
        print(
            f"warning: {args.data}: {repeated} report(s) repeat an id already used (e.g. {example!r}); every row is "
            "kept, but rows sharing an id cannot be told apart in the outputs.",
            file=sys.stderr,
        )
    if args.save_probs:
        save_predictions(args.save_probs, concat_predictions(kept))
    total = n + skipped
    mode = f"{th.mode} thresholds from {th.model_id or 'file'}" if th is not None else "no thresholds"
    print(f"Labelled {total} reports ({n} predicted, {skipped} skipped for empty text; {mode}) → {args.out}")
    print(f"{'task':<16} {'labelled':>9} {'abstain':>8} {'coverage':>9}")
    for t in tasks:
        k = labelled[t]
        print(f"{t:<16} {k:>9} {total - k:>8} {k / total if total else 0:>9.3f}")
    print(
        f"{'(all tasks)':<16} {coded:>9} {total - coded:>8} {coded / total if total else 0:>9.3f}  reports auto-coded"
    )
    if args.save_probs:
        print(f"Probabilities → {args.save_probs}")
    return 0


def output_lines(
    clf: Any, result: Any, probs: dict[str, np.ndarray], accepted: dict[str, np.ndarray]
) -> Iterator[dict[str, Any]]:
    """The output lines of one :class:`~._classifier.ModelRun`, in input order (skipped reports keep their place).

    Args:
        clf: The classifier (its ``task_labels``).
        result: The run.
        probs: Task → ``(N, C)`` probabilities of its rows (temperatures applied).
        accepted: Task → ``(N,)`` accepted mask.
    """
    tasks = list(clf.task_labels)
    pred = {t: probs[t].argmax(1) for t in tasks}
    conf = {t: probs[t].max(1) for t in tasks}
    for rid, i in result.order:
        if i is None:
            empty = {t: {"label": ABSTAIN, "prediction": None, "probability": None} for t in tasks}
            yield {"id": rid, "auto_coded": False, "skipped": "empty text", "tasks": empty}
            continue
        row: dict[str, Any] = {"id": rid, "auto_coded": all(bool(accepted[t][i]) for t in tasks), "tasks": {}}
        for t in tasks:
            name = clf.task_labels[t][int(pred[t][i])]
            row["tasks"][t] = {
                "label": name if accepted[t][i] else ABSTAIN,
                "prediction": name,
                "probability": round(float(conf[t][i]), 6),
            }
        yield row


def concat_predictions(parts: list[Any]) -> Any:
    """One :class:`~reportkd.abstention.Predictions` from the chunks' (same model and tasks)."""
    from reportkd.abstention import Predictions

    first = parts[0]
    probs = {t: np.concatenate([p.probs[t] for p in parts]) for t in first.task_labels}
    labels = None
    if first.labels:
        labels = {t: np.concatenate([p.labels[t] for p in parts]) for t in first.labels}
    ids = [i for p in parts for i in p.ids]
    return Predictions(ids, probs, first.task_labels, labels, first.model_id, first.model_sha256)
