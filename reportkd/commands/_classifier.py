"""Shared by the abstention commands: load a saved report classifier safely and run it on a reports file.

A classifier directory is what ``save_classifier`` writes: ``save_pretrained`` weights and config (with
``task_labels``), the tokenizer, and optionally ``thresholds.json``. Any multitask model whose ``forward`` returns
``logits`` as a dict task → ``(B, C_t)`` and that ``AutoModel`` can load works.

Loading is safe by default: Python code shipped with a model (``auto_map`` in ``config.json`` or
``tokenizer_config.json``) is refused unless ``--trust-remote-code``, and weights must be safetensors unless
``--allow-pickle`` (a pickle ``pytorch_model.bin`` can run code when loaded). A broken ``config.json`` or a truncated
weights file is reported in one line naming the file (a :class:`~reportkd.errors.RuntimeFailure`: exit code 1).
Outputs are checked before anything runs: never an input file, never an existing file without ``--overwrite``, and
in a writable folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
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
from reportkd.data import IGNORE_INDEX, LoadStats, encode_reports, is_missing, load_reports
from reportkd.errors import RuntimeFailure

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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

    def decisions(self, probs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Probabilities after the thresholds file's temperatures, and the accepted mask per task (all accepted
        without thresholds).

        Args:
            probs: Task → ``(N, C)`` model probabilities.
        """
        from reportkd.abstention import apply_temperature, apply_thresholds

        th = self.thresholds
        if th is None:
            return probs, {t: np.ones(len(p), dtype=bool) for t, p in probs.items()}
        if th.temperatures:
            probs = {t: apply_temperature(p, th.temperatures.get(t, 1.0)) for t, p in probs.items()}
        return probs, apply_thresholds(probs, th.thresholds, th.mode)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The loader's safety switches (both off by default)."""
    p.add_argument(
        "--trust-remote-code", action="store_true",
        help="Run Python code shipped in the model folder (auto_map in its config). Only for folders you trust.",
    )  # fmt: skip
    p.add_argument(
        "--allow-pickle", action="store_true",
        help="Load pickle weights (pytorch_model.bin), which can run code when loaded; default: safetensors only.",
    )  # fmt: skip


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RuntimeFailure(
            f"{path} is not valid JSON ({getattr(e, 'msg', e)}); restore it or re-save the model with save_pretrained."
        ) from None


# Modules whose code reportkd's own save_pretrained ships with a folder (auto_map for plain-transformers users).
OWN_CODE_MODULES = {
    "configuration_mtcnn": "reportkd.text.mtcnn.configuration_mtcnn",
    "modeling_mtcnn": "reportkd.text.mtcnn.modeling_mtcnn",
    "configuration_slide": "reportkd.vlm.slide.configuration_slide",
    "modeling_slide": "reportkd.vlm.slide.modeling_slide",
}


def is_own_code(model_dir: Path, auto_map: Any) -> bool:
    """True when ``auto_map`` names only reportkd's own classes and every file it names is byte-identical to the
    installed module: reportkd then loads its registered classes and runs no code from the folder.

    Args:
        model_dir: The model directory.
        auto_map: The ``auto_map`` of its ``config.json``.
    """
    import importlib
    import importlib.util

    if not isinstance(auto_map, dict):
        return False
    for reference in auto_map.values():
        if not isinstance(reference, str) or "--" in reference or reference.count(".") != 1:
            return False  # tokenizer pairs, code from another repository, nested modules: not ours
        module, class_name = reference.split(".")
        if module not in OWN_CODE_MODULES:
            return False
        try:
            spec = importlib.util.find_spec(OWN_CODE_MODULES[module])
            installed = importlib.import_module(OWN_CODE_MODULES[module])
        except ImportError:
            return False
        shipped = model_dir / f"{module}.py"
        if spec is None or not spec.origin or not shipped.is_file() or not hasattr(installed, class_name):
            return False
        if shipped.read_bytes() != Path(spec.origin).read_bytes():
            return False
    return True


def check_model_dir(model_dir: str | Path, *, trust_remote_code: bool = False, allow_pickle: bool = False) -> Path:
    """Checks a model directory before anything in it is loaded; raises with one line naming the file and the fix.

    Refuses: a missing directory or ``config.json``; a ``config.json`` that is not a JSON object; ``auto_map`` (custom
    code) in ``config.json`` or ``tokenizer_config.json`` unless ``trust_remote_code`` or it is reportkd's own code
    (:func:`is_own_code`, which loads through the registered classes, never from the folder); pickle weights unless
    ``allow_pickle`` (safetensors are preferred when both exist); no weights; a truncated or corrupt safetensors file.

    Args:
        model_dir: The directory.
        trust_remote_code: Allow code shipped with the model.
        allow_pickle: Allow pickle weights (``*.bin``).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"Model directory {model_dir} does not exist (or is not a directory).")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a saved model directory (no config.json); give the directory written by "
            "`reportkd demo` (e.g. reportkd-demo/student) or by save_classifier."
        )
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise RuntimeFailure(f"{config_path} is not a JSON object; re-save the model with save_pretrained.")
    if not trust_remote_code:
        for name in ("config.json", "tokenizer_config.json"):
            path = model_dir / name
            content = config if name == "config.json" else (_read_json(path) if path.is_file() else {})
            auto_map = content.get("auto_map") if isinstance(content, dict) else None
            if auto_map and not (name == "config.json" and is_own_code(model_dir, auto_map)):
                raise ValueError(
                    f"{path} has auto_map: the model folder ships Python code, which reportkd does not run. Pass "
                    "--trust-remote-code only if you trust this folder and have read its code."
                )
    files = [p for p in model_dir.iterdir() if p.is_file()]
    safetensors = sorted(p for p in files if p.suffix == ".safetensors")
    pickles = sorted(p for p in files if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if not safetensors:
        if pickles and not allow_pickle:
            raise ValueError(
                f"{model_dir} holds only pickle weights ({', '.join(p.name for p in pickles)}), which can run code "
                "when loaded. Convert them to safetensors (model.save_pretrained(dir)), or pass --allow-pickle if you "
                "trust the file."
            )
        if not pickles:
            raise FileNotFoundError(
                f"{model_dir} has no weights file (model.safetensors); re-save the model with save_pretrained."
            )
    from safetensors import safe_open

    for path in safetensors:
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # SafetensorError: truncated, or not safetensors at all
            raise RuntimeFailure(
                f"{path} is truncated or corrupt ({e}); copy or download it again, or re-save the model."
            ) from None
    return model_dir


def load_classifier(
    model_dir: str | Path,
    *,
    thresholds: str | Path | None = "auto",
    allow_other_weights: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Classifier:
    """Loads model, tokenizer and thresholds from a classifier directory (checked first: :func:`check_model_dir`).

    Args:
        model_dir: The directory.
        thresholds: A thresholds file; ``"auto"`` = ``<model_dir>/thresholds.json`` when present; None = none.
        allow_other_weights: Accept thresholds calibrated for other (or unknown) weights with the same label maps.
        trust_remote_code: Run code shipped with the model (``auto_map``); off by default.
        allow_pickle: Load pickle weights when the directory has no safetensors; off by default.
    """
    from transformers import AutoModel, AutoTokenizer

    model_dir = check_model_dir(model_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    try:
        import reportkd.text.mtcnn  # noqa: F401  (registers the MtCNN models with AutoModel)
    except ImportError as e:  # a model of another family can still load
        logger.debug("reportkd.text.mtcnn not importable: %s", e)
    has_safetensors = any(model_dir.glob("*.safetensors"))
    try:
        model = AutoModel.from_pretrained(
            model_dir, trust_remote_code=trust_remote_code, use_safetensors=True if has_safetensors else None
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeFailure(
            f"Cannot load the model in {model_dir} ({type(e).__name__}: {first}); check that config.json, the "
            "weights and the tokenizer files come from one save_pretrained call (run with -v for details)."
        ) from e
    task_labels = getattr(model.config, "task_labels", None)
    if not task_labels:
        raise ValueError(f"The model in {model_dir} has no task_labels in its config; it is not a report classifier.")
    task_labels = {t: list(v) for t, v in task_labels.items()}
    sha = weights_fingerprint(model_dir)
    path = model_dir / THRESHOLDS_NAME if thresholds == "auto" else thresholds
    th = None
    if path is not None and (thresholds != "auto" or Path(path).is_file()):
        th = read_thresholds(path, task_labels=task_labels, model_sha256=sha, allow_other_weights=allow_other_weights)
    return Classifier(model, tokenizer, th, task_labels, str(model_dir), sha)


def model_options(args: argparse.Namespace) -> dict[str, bool]:
    """The :func:`load_classifier` switches given on the command line."""
    return {
        "allow_other_weights": getattr(args, "allow_other_weights", False),
        "trust_remote_code": getattr(args, "trust_remote_code", False),
        "allow_pickle": getattr(args, "allow_pickle", False),
    }


# ----------------------------------------------------------------------------------------------------- outputs


def add_overwrite_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="Replace output files that already exist.")


def _input_files(inputs: Mapping[str, str | os.PathLike | None]) -> list[tuple[str, Path]]:
    """(option, file) for every input; a model directory stands for its files (its thresholds.json aside)."""
    out = []
    for option, value in inputs.items():
        if not value:
            continue
        path = Path(value)
        if path.is_dir():
            out += [(option, p) for p in sorted(path.iterdir()) if p.is_file() and p.name != THRESHOLDS_NAME]
        out.append((option, path))
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None] | Sequence[tuple[str, str | os.PathLike | None]],
    inputs: Mapping[str, str | os.PathLike | None],
    *,
    overwrite: bool = False,
) -> None:
    """Checks output files before anything runs; raises ``ValueError`` naming the option and the fix.

    Refused: an output that is an input (or a file of an input model directory) or another output; an existing
    directory; an existing file unless ``overwrite``; a parent path that is a file; a folder that is not writable.

    Args:
        outputs: Option name (e.g. ``"--out"``) → output file (None: not written); or ``(option, file)`` pairs.
        inputs: Option name → input file or directory (None: not given).
        overwrite: Allow replacing existing output files.
    """
    files = _input_files(inputs)
    seen: list[tuple[str, Path]] = []
    for option, value in outputs.items() if isinstance(outputs, Mapping) else outputs:
        if not value:
            continue
        path = Path(value)
        for in_option, in_path in files:
            if _same(path, in_path):
                what = f"the {in_option} input" if in_path == Path(inputs[in_option]) else f"a file of {in_option}"
                raise ValueError(f"{option} {path} is {what}; it would be overwritten. Write to another file.")
        for other_option, other in seen:
            if _same(path, other):
                raise ValueError(f"{option} and {other_option} are the same file ({path}); give two different files.")
        seen.append((option, path))
        if path.is_dir():
            raise ValueError(f"{option} {path} is a directory; give a file name.")
        if path.exists() and not overwrite:
            raise ValueError(
                f"{option} {path} already exists; pass --overwrite to replace it, or choose another file."
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{option} {path}: {folder} is a file, not a folder; choose another path.")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {path}: folder {folder} is not writable; choose another path.")


def warn_duplicate_ids(ids: Sequence[str], source: str | os.PathLike) -> int:
    """Prints one warning when report ids repeat; returns the number of repeated rows."""
    n = len(ids) - len(set(ids))
    if n:
        counts: dict[str, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        example = next(i for i, c in counts.items() if c > 1)
        print(
            f"warning: {source}: {n} report(s) repeat an id already used (e.g. {example!r}); every row is kept, "
            "but rows sharing an id cannot be told apart in the outputs.",
            file=sys.stderr,
        )
    return n


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
        order: One entry per input record, in file order: ``(id, row of predictions)``, the row None for a report
            skipped for empty text.
        stats: What :func:`~reportkd.data.load_reports` kept and skipped.
    """

    predictions: Predictions
    order: list[tuple[str, int | None]] = field(default_factory=list)
    stats: LoadStats | None = None

    @property
    def skipped_ids(self) -> list[str]:
        """Ids of the reports skipped for empty text."""
        return [rid for rid, row in self.order if row is None]


def _task_columns(clf: Classifier, records: Sequence[Mapping[str, Any]], data: Any, args: argparse.Namespace,
                  require_labels: bool) -> list[str]:  # fmt: skip
    """The model's tasks that have a column among the first 1,000 records (refuses a missing text column)."""
    columns = {k for r in records[:1000] for k in r}
    if args.text_column not in columns:
        raise ValueError(
            f"{data} has no text column {args.text_column!r}; columns: {sorted(columns)}. Use --text-column."
        )
    absent = [t for t in clf.task_labels if t not in columns]
    if require_labels and absent:
        raise ValueError(
            f"{data} has no label column for task(s) {absent} of the model (columns: {sorted(columns)}); "
            "calibration and evaluation need every task's labels."
        )
    return [t for t in clf.task_labels if t in columns]


def _run_records(
    clf: Classifier, records: Sequence[Mapping[str, Any]], tasks: Sequence[str], args: argparse.Namespace, *,
    offset: int = 0, onnx_model: Any = None,
) -> ModelRun:  # fmt: skip
    """Probabilities of ``clf`` on a list of records (reports with empty text keep their place in ``order``).

    Args:
        records: Report records (one chunk of a file, or all of it).
        tasks: Label columns to keep.
        offset: Row number of the first record in the file (ids of records without one).
    """
    from reportkd.data import as_label
    from reportkd.text.mtcnn.pipeline import predict_probs

    order: list[tuple[str, int | None]] = []
    kept: list[dict[str, Any]] = []
    for i, r in enumerate(records):  # the rule of load_reports: text with at least one word is kept
        rid = r.get(args.id_column) if args.id_column else None
        rid = as_label(rid) if rid is not None and not is_missing(rid) else str(offset + i)
        text = r.get(args.text_column)
        if isinstance(text, str) and text.split():
            order.append((rid, len(kept)))
            kept.append({"id": rid, args.text_column: text, **{t: r.get(t) for t in tasks}})
        else:
            order.append((rid, None))
    if not kept:
        empty = {t: np.zeros((0, len(v))) for t, v in clf.task_labels.items()}
        labels = {t: np.zeros(0, dtype=np.int64) for t in tasks} if tasks else None
        preds = Predictions([], empty, clf.task_labels, labels, clf.model_id, clf.model_sha256)
        return ModelRun(preds, order, LoadStats(total=len(records), skipped_empty=len(records)))
    ds, stats = load_reports(kept, text_column=args.text_column, task_columns=tasks, id_column="id")
    stats.total, stats.skipped_empty = len(records), len(records) - len(kept)
    max_length = getattr(clf.model.config, "max_length", None) or None
    enc = encode_reports(
        ds, clf.tokenizer, clf.task_labels, text_column=args.text_column, max_length=max_length,
        unknown_as_missing=args.unknown_as_missing,
    )  # fmt: skip
    pad = clf.tokenizer.pad_token_id if clf.tokenizer.pad_token_id is not None else 0
    by_length = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    ordered = enc.select(by_length)
    if onnx_model is not None:
        probs = onnx_predict_probs(onnx_model, ordered, pad_token_id=pad, batch_size=args.batch_size)
    else:
        probs = predict_probs(clf.model, ordered, pad_token_id=pad, batch_size=args.batch_size)
    back = np.empty_like(by_length)
    back[by_length] = np.arange(len(by_length))
    probs = {t: np.asarray(probs[t], dtype=np.float64)[back] for t in clf.task_labels}
    labels = None
    if tasks:
        y = np.asarray(enc["labels"], dtype=np.int64).reshape(len(enc), len(tasks))
        labels = {t: y[:, i] for i, t in enumerate(tasks)}
    preds = Predictions([r["id"] for r in kept], probs, clf.task_labels, labels, clf.model_id, clf.model_sha256)
    return ModelRun(preds, order, stats)


def run_model(
    clf: Classifier, data: str | Path, args: argparse.Namespace, *, require_labels: bool, onnx_model: Any = None
) -> ModelRun:
    """Runs ``clf`` on a reports file or datasets spec (JSONL / CSV / Parquet, ``hf:ORG/NAME:SPLIT`` …), all at once.

    Reports are predicted in order of length (less padding per batch) and put back in file order.
    :func:`iter_model_runs` does the same in chunks of bounded size.

    Args:
        clf: The classifier.
        data: Reports file or datasets spec (:func:`~reportkd.data.parse_data_spec`).
        args: Namespace with the :func:`add_data_arguments` options.
        require_labels: Every task of the model needs a label column (calibration / evaluation).
        onnx_model: An :class:`~reportkd.text.mtcnn.export.OnnxClassifier` of ``clf``'s model to predict with
            instead of PyTorch (``reportkd predict --backend onnx``).
    """
    from reportkd.data import read_records

    records = read_records(data)
    if not records:
        raise ValueError(f"No reports found in {data}.")
    tasks = _task_columns(clf, records, data, args, require_labels)
    run = _run_records(clf, records, tasks, args, onnx_model=onnx_model)
    if not len(run.predictions):
        raise ValueError(f"Every report in {data} has empty text (column {args.text_column!r}); nothing to predict.")
    warn_duplicate_ids([rid for rid, _ in run.order], data)
    return run


def iter_model_runs(
    clf: Classifier, data: str | Path, args: argparse.Namespace, *, chunk_size: int, require_labels: bool = False,
    onnx_model: Any = None,
) -> Iterator[ModelRun]:  # fmt: skip
    """:func:`run_model` in chunks: reads, predicts and yields ``chunk_size`` reports at a time, in file order.

    Memory is bounded by the chunk, not by the file: records come from :func:`~reportkd.data.iter_records` (a
    generator), and only the first 1,000 are held ahead, to learn the columns as :func:`run_model` does. Outputs
    equal :func:`run_model`'s for any chunk size (ids of reports without one count rows over the whole file).

    Args:
        clf: The classifier.
        data: Reports file or datasets spec.
        args: Namespace with the :func:`add_data_arguments` options.
        chunk_size: Reports per chunk.
        require_labels: Every task needs a label column.
        onnx_model: See :func:`run_model`.
    """
    from reportkd.data import iter_records

    chunks = iter_records(data, chunk_size=chunk_size)
    head: list[list[dict]] = []
    for chunk in chunks:  # look ahead at most 1,000 records (plus one chunk) for the columns
        head.append(chunk)
        if sum(len(c) for c in head) >= 1000:
            break
    first = [r for c in head for r in c][:1000]
    if not first:
        raise ValueError(f"No reports found in {data}.")
    tasks = _task_columns(clf, first, data, args, require_labels)
    del first

    def rest() -> Iterator[list[dict]]:
        while head:
            yield head.pop(0)  # the look-ahead is released as it is consumed
        yield from chunks

    import datasets

    offset = 0
    for chunk in rest():
        was_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # no tokenizing bar per chunk; the caller shows one for the stream
        try:
            run = _run_records(clf, chunk, tasks, args, offset=offset, onnx_model=onnx_model)
        finally:
            if was_on:
                datasets.enable_progress_bars()
        yield run
        offset += len(chunk)


def onnx_predict_probs(onnx_model: Any, dataset: Any, *, pad_token_id: int, batch_size: int) -> dict[str, np.ndarray]:
    """Task → ``(N, C)`` probabilities of an exported model on encoded reports (rows with ``input_ids``).

    Args:
        onnx_model: An :class:`~reportkd.text.mtcnn.export.OnnxClassifier`.
        dataset: Encoded reports.
        pad_token_id: Padding id of the tokenizer.
        batch_size: Reports per onnxruntime call.
    """
    rows = dataset["input_ids"]
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(1, max(len(r) for r in batch))
        ids = np.full((len(batch), width), pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, r in enumerate(batch):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        for task, p in onnx_model.predict_proba(ids, mask).items():
            chunks.setdefault(task, []).append(p)
    return {t: np.concatenate(c) for t, c in chunks.items()}


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

    With both ``--model`` and ``--predictions``, the predictions must record the model's weights fingerprint
    (``reportkd predict --save-probs`` does); predictions that record none are accepted only with
    ``--assume-same-model``. Probabilities are validated (:meth:`Predictions.validate`); with ``require_labels``
    every task needs at least one label.

    Args:
        args: Namespace with the :func:`add_data_arguments` options (and optionally the loader switches,
            ``allow_other_weights`` and ``assume_same_model``).
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
    clf = load_classifier(model, thresholds=thresholds, **model_options(args)) if model else None
    if predictions:
        preds = load_predictions(predictions)
        if clf is not None:
            if preds.task_labels != clf.task_labels:
                raise ValueError(
                    f"{predictions} holds probabilities for other tasks or label maps than the model in {model}; "
                    "save the predictions of this model (reportkd predict --save-probs)."
                )
            if preds.model_sha256 is None and not getattr(args, "assume_same_model", False):
                raise ValueError(
                    f"{predictions} does not record which weights produced it, so it cannot be shown to come from "
                    f"the model in {model}. Save them with `reportkd predict --model {model} --save-probs FILE`, or "
                    "pass --assume-same-model if you know they did."
                )
            if preds.model_sha256 is not None and clf.model_sha256 and preds.model_sha256 != clf.model_sha256:
                raise ValueError(
                    f"{predictions} was produced by other weights (model_sha256 {preds.model_sha256}) than the model "
                    f"in {model} ({clf.model_sha256}); give that model's predictions, or drop --model."
                )
        warn_duplicate_ids(preds.ids, predictions)
        run = None
    else:
        run = run_model(clf, data, args, require_labels=require_labels)
        preds = run.predictions
    preds.validate()
    if require_labels:
        if preds.missing_label_tasks():
            raise ValueError(
                f"No labels for task(s) {preds.missing_label_tasks()} in "
                f"{predictions or data}; calibration and evaluation need every task's labels."
            )
        empty = [t for t, y in preds.labels.items() if not (np.asarray(y) != IGNORE_INDEX).any()]
        if empty:
            raise ValueError(
                f"Every label of task(s) {empty} is missing in {predictions or data} ({len(preds)} reports); "
                "calibration and evaluation need labelled reports for every task."
            )
    return preds, clf, run
