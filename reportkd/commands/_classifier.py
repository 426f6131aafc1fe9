"""Shared by the abstention commands: load a saved report classifier and run it on a reports file.

A classifier directory is what ``save_classifier`` writes: ``save_pretrained`` weights and config (with
``task_labels``), the tokenizer, and optionally ``thresholds.json``. Any multitask model whose ``forward`` returns
``logits`` as a dict task → ``(B, C_t)`` and that ``AutoModel`` can load works.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reportkd.abstention import (
    THRESHOLDS_NAME,
    Predictions,
    ThresholdsFile,
    load_predictions,
    read_thresholds,
    weights_fingerprint,
)
from reportkd.data import IGNORE_INDEX, LoadStats, encode_reports, load_reports

logger = logging.getLogger(__name__)


@dataclass
class Classifier:
    """A loaded classifier directory.

    Args:
        model: The model, in evaluation mode.
        tokenizer: Its tokenizer.
        thresholds: Its thresholds file (checked against the model), or None.
        task_labels: Task → class names (the model config's ``task_labels``).
        model_id: The directory as given.
        model_sha256: :func:`~reportkd.abstention.weights_fingerprint` of the directory.
    """

    model: Any
    tokenizer: Any
    thresholds: ThresholdsFile | None
    task_labels: dict[str, list[str]]
    model_id: str
    model_sha256: str | None


def load_classifier(
    model_dir: str | Path, *, thresholds: str | Path | None = "auto", allow_other_weights: bool = False
) -> Classifier:
    """Loads model, tokenizer and thresholds from a classifier directory.

    Args:
        model_dir: The directory.
        thresholds: A thresholds file; ``"auto"`` = ``<model_dir>/thresholds.json`` when present; None = none.
        allow_other_weights: Accept thresholds calibrated for other weights with the same label maps.
    """
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a saved model directory (no config.json); give the directory written by "
            "`reportkd demo` (e.g. reportkd-demo/student) or by save_classifier."
        )
    try:
        import reportkd.text.mtcnn  # noqa: F401  (registers the MtCNN models with AutoModel)
    except ImportError as e:  # a model of another family can still load
        logger.debug("reportkd.text.mtcnn not importable: %s", e)
    model = AutoModel.from_pretrained(model_dir).eval()
    task_labels = getattr(model.config, "task_labels", None)
    if not task_labels:
        raise ValueError(f"The model in {model_dir} has no task_labels in its config; it is not a report classifier.")
    task_labels = {t: list(v) for t, v in task_labels.items()}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sha = weights_fingerprint(model_dir)
    path = model_dir / THRESHOLDS_NAME if thresholds == "auto" else thresholds
    th = None
    if path is not None and (thresholds != "auto" or Path(path).is_file()):
        th = read_thresholds(path, task_labels=task_labels, model_sha256=sha, allow_other_weights=allow_other_weights)
    return Classifier(model, tokenizer, th, task_labels, str(model_dir), sha)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Options of a reports file read by a command."""
    p.add_argument("--text-column", default="text", help="Column with the report text.")
    p.add_argument("--id-column", default="id", help="Column with the report id (row numbers when absent).")
    p.add_argument(
        "--unknown-as-missing", action="store_true", help="Treat the label 'unknown' as missing (as in training)."
    )
    p.add_argument("--batch-size", type=int, default=128, help="Prediction batch size.")


@dataclass
class ModelRun:
    """Probabilities of a model on a reports file.

    Args:
        predictions: Ids, probabilities and labels (for the task columns the file has) of the kept reports.
        skipped_ids: Ids of reports skipped for empty text.
        stats: What :func:`~reportkd.data.load_reports` kept and skipped.
    """

    predictions: Predictions
    skipped_ids: list[str] = field(default_factory=list)
    stats: LoadStats | None = None


def run_model(clf: Classifier, data: str | Path, args: argparse.Namespace, *, require_labels: bool) -> ModelRun:
    """Runs ``clf`` on a reports file (JSONL / CSV / Parquet, e.g. the TCGA reports file).

    Args:
        clf: The classifier.
        data: Reports file.
        args: Namespace with the :func:`add_data_arguments` options.
        require_labels: Every task of the model needs a label column (calibration / evaluation).
    """
    from reportkd.data import read_records
    from reportkd.text.mtcnn.pipeline import predict_probs

    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"Report file {path} does not exist.")
    records = read_records(path)
    if not records:
        raise ValueError(f"No reports found in {path}.")
    columns = {k for r in records[:1000] for k in r}
    if args.text_column not in columns:
        raise ValueError(
            f"{path} has no text column {args.text_column!r}; columns: {sorted(columns)}. Use --text-column."
        )
    tasks = [t for t in clf.task_labels if t in columns]
    absent = [t for t in clf.task_labels if t not in columns]
    if require_labels and absent:
        raise ValueError(
            f"{path} has no label column for task(s) {absent} of the model (columns: {sorted(columns)}); "
            "calibration and evaluation need every task's labels."
        )
    skipped = [
        str(r.get(args.id_column) if r.get(args.id_column) is not None else i)
        for i, r in enumerate(records)
        if not isinstance(r.get(args.text_column), str) or not r.get(args.text_column).split()
    ]
    ds, stats = load_reports(records, text_column=args.text_column, task_columns=tasks, id_column=args.id_column)
    max_length = getattr(clf.model.config, "max_length", None) or None
    enc = encode_reports(
        ds, clf.tokenizer, clf.task_labels, text_column=args.text_column, max_length=max_length,
        unknown_as_missing=args.unknown_as_missing,
    )  # fmt: skip
    pad = clf.tokenizer.pad_token_id if clf.tokenizer.pad_token_id is not None else 0
    probs = predict_probs(clf.model, enc, pad_token_id=pad, batch_size=args.batch_size)
    probs = {t: np.asarray(probs[t], dtype=np.float64) for t in clf.task_labels}
    labels = None
    if tasks:
        y = np.asarray(enc["labels"], dtype=np.int64).reshape(len(enc), len(tasks))
        labels = {t: y[:, i] for i, t in enumerate(tasks)}
    preds = Predictions(list(ds["id"]), probs, clf.task_labels, labels, clf.model_id)
    return ModelRun(preds, skipped, stats)


def get_predictions(
    args: argparse.Namespace,
    *,
    model: str | None,
    predictions: str | None,
    data: str | None,
    thresholds: str | None = "auto",
    require_labels: bool = True,
) -> tuple[Predictions, Classifier | None, ModelRun | None]:
    """Probabilities from ``--model DIR --data FILE`` or from ``--predictions FILE`` (checked against the model).

    Args:
        args: Namespace with the :func:`add_data_arguments` options.
        model: Model directory, or None.
        predictions: Predictions file, or None.
        data: Reports file (needed with a model and no predictions file).
        thresholds: Thresholds file for the classifier (``"auto"``: the model directory's).
        require_labels: Every task needs labels.
    """
    if predictions and data:
        raise ValueError("Give either --data (run the model) or --predictions (saved probabilities), not both.")
    if not predictions and not (model and data):
        raise ValueError("Give --model DIR with --data FILE, or --predictions FILE.")
    clf = None
    if model:
        allow = getattr(args, "allow_other_weights", False)
        clf = load_classifier(model, thresholds=thresholds, allow_other_weights=allow)
    if predictions:
        preds = load_predictions(predictions)
        if clf is not None and preds.task_labels != clf.task_labels:
            raise ValueError(
                f"{predictions} holds probabilities for other tasks or label maps than the model in {model}; "
                "save the predictions of this model (reportkd predict --save-probs)."
            )
        run = None
    else:
        run = run_model(clf, data, args, require_labels=require_labels)
        preds = run.predictions
    preds.check_finite()
    if require_labels and preds.missing_label_tasks():
        raise ValueError(
            f"No labels for task(s) {preds.missing_label_tasks()} in "
            f"{predictions or data}; calibration and evaluation need every task's labels."
        )
    return preds, clf, run


def missing_counts(preds: Predictions) -> dict[str, int]:
    """Task → reports without a label."""
    return {t: int((y == IGNORE_INDEX).sum()) for t, y in (preds.labels or {}).items()}
