"""Report datasets: loading, validation, label maps, encoding, collation and stored teacher outputs."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from .utils import atomic_path

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
MISSING_STRINGS = frozenset({"", "nan", "none", "null", "n/a", "na"})


@dataclass
class LoadStats:
    """What :func:`load_reports` kept and skipped."""

    total: int = 0
    kept: int = 0
    skipped_empty: int = 0
    missing_labels: dict[str, int] = field(default_factory=dict)


def is_missing(value: Any) -> bool:
    """True for None, NaN and empty / null-like strings."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_STRINGS


def as_label(value: Any) -> str:
    """A label or id as text; integer-valued floats read as integers (``3.0`` → ``"3"``, as pandas writes an integer
    column with gaps), so a CSV's class ids match the label map.

    Args:
        value: A non-missing cell value.
    """
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------------------- where reports come from
REPORT_SUFFIXES = (
    ".jsonl",
    ".jsonl.gz",
    ".ndjson",
    ".json",
    ".json.gz",
    ".csv",
    ".csv.gz",
    ".tsv",
    ".tsv.gz",
    ".parquet",
)
DATASET_SCHEMES = ("hf", "json", "csv", "parquet")
DATA_SPEC_SYNTAX = (
    "a local file (.jsonl[.gz], .json, .csv[.gz], .tsv, .parquet) or a datasets spec: hf:ORG/NAME[/CONFIG][:SPLIT] "
    "(a Hugging Face Hub dataset), json:GLOB[:SPLIT], csv:GLOB[:SPLIT] or parquet:GLOB[:SPLIT] (local files read by "
    "datasets.load_dataset); SPLIT defaults to train and may slice, e.g. test[:1000]"
)


@dataclass(frozen=True)
class DatasetSpec:
    """A ``datasets.load_dataset`` source written as one string (see :func:`parse_data_spec`).

    Args:
        scheme: ``"hf"`` (a hub dataset) or a packaged builder (``"json"``, ``"csv"``, ``"parquet"``).
        path: The hub id, or the glob of local files.
        config: The hub dataset's configuration (``ORG/NAME/CONFIG``), or None.
        split: The split (``"train"`` by default; ``datasets`` slicing such as ``test[:10%]`` allowed).
    """

    scheme: str
    path: str
    config: str | None = None
    split: str = "train"

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``datasets.load_dataset``."""
        if self.scheme == "hf":
            return {"path": self.path, "name": self.config, "split": self.split}
        return {"path": self.scheme, "data_files": self.path, "split": self.split}

    def __str__(self) -> str:
        config = f"/{self.config}" if self.config else ""
        return f"{self.scheme}:{self.path}{config}:{self.split}"


def parse_data_spec(source: str | os.PathLike) -> DatasetSpec | None:
    """The :class:`DatasetSpec` a ``--data`` value names, or None when it is a local file path.

    An existing path is always a file (a ``Path`` is parsed like its string). Otherwise
    ``hf:ORG/NAME[/CONFIG][:SPLIT]`` names a hub dataset and ``json:GLOB[:SPLIT]`` / ``csv:GLOB[:SPLIT]`` /
    ``parquet:GLOB[:SPLIT]`` local files read by ``datasets``.

    Args:
        source: The ``--data`` value.
    """
    if Path(source).exists():
        return None
    scheme, sep, rest = str(source).partition(":")
    if not sep or scheme not in DATASET_SCHEMES:
        return None
    path, _, split = rest.partition(":")
    config = None
    if scheme == "hf" and path.count("/") == 2:
        path, config = path.rsplit("/", 1)
    if not path or (scheme == "hf" and path.count("/") > 1) or (sep and rest.endswith(":")):
        raise ValueError(f"Bad --data spec {str(source)!r}: use {DATA_SPEC_SYNTAX}.")
    return DatasetSpec(scheme, path, config, split or "train")


def load_dataset_spec(spec: DatasetSpec, *, streaming: bool = False) -> Any:
    """``datasets.load_dataset`` of ``spec``; any failure becomes one line naming the source and the fix.

    Args:
        spec: The source.
        streaming: Return an ``IterableDataset`` (rows read lazily; no split slicing).
    """
    from .errors import RuntimeFailure, UsageError

    try:
        import datasets
    except ImportError:  # a core dependency today; kept for slim installs
        raise ImportError("--data with a datasets spec needs the datasets package: pip install datasets") from None
    if spec.scheme != "hf":
        import glob

        if not glob.glob(spec.path, recursive=True):
            raise FileNotFoundError(f"No file matches {spec.path!r} (from --data {spec}); check the path or glob.")
    what = f"the hub dataset {spec.path!r}" if spec.scheme == "hf" else f"{spec.scheme} files {spec.path!r}"
    try:
        return datasets.load_dataset(**spec.load_kwargs(), streaming=streaming)
    except (ValueError, KeyError) as e:  # unknown split or configuration, bad slicing
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"Cannot load {what} split {spec.split!r}: {first}. Fix the spec: {DATA_SPEC_SYNTAX}.") from e
    except Exception as e:  # offline, unknown or gated id, network
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        fix = (
            "check the id, the network and `hf auth login` for gated datasets; offline, download it once and set "
            "HF_HUB_OFFLINE=1, or export it to a file and pass --data FILE"
            if spec.scheme == "hf"
            else "check the files and their format"
        )
        raise RuntimeFailure(f"Cannot load {what} with datasets ({type(e).__name__}: {first}); {fix}.") from e


def _chunks(rows: Iterable[dict], chunk_size: int | None) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if chunk_size and len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_rows(path: Path, opener: Any) -> Iterator[dict]:
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {lineno} is not valid JSON ({e.msg}).") from None


def _file_chunks(path: Path, chunk_size: int | None) -> Iterator[list[dict]]:
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else open
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        yield from _chunks(_jsonl_rows(path, opener), chunk_size)
    elif name.endswith((".json", ".json.gz")):  # one JSON document: read whole, then chunked
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        yield from _chunks(data if isinstance(data, list) else data.get("data", []), chunk_size)
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        import pandas as pd

        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        if chunk_size is None:
            yield pd.read_csv(path, sep=sep).to_dict("records")
        else:
            with pd.read_csv(path, sep=sep, chunksize=chunk_size) as reader:
                for frame in reader:
                    yield frame.to_dict("records")
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        if chunk_size is None:
            yield pq.read_table(path).to_pylist()
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
                yield batch.to_pylist()
    else:
        raise ValueError(
            f"Unsupported report file {path.name!r}: use .jsonl, .jsonl.gz, .json, .csv, .tsv or .parquet "
            "(or a datasets spec such as hf:ORG/NAME:SPLIT)."
        )


def iter_records(source: str | os.PathLike, *, chunk_size: int | None = None) -> Iterator[list[dict]]:
    """Reports of a file or a datasets spec as lists of at most ``chunk_size`` records, read lazily.

    JSONL (gzip too), CSV / TSV and Parquet files are streamed (memory bounded by the chunk, whatever the file
    size); a ``.json`` document is read whole first. A datasets spec is streamed (``streaming=True``) unless its
    split is sliced. The one function every ``--data`` goes through (:func:`read_records`, :func:`load_reports`).

    Args:
        source: A path or a spec (:func:`parse_data_spec`; syntax in ``DATA_SPEC_SYNTAX``).
        chunk_size: Records per chunk; None: one chunk with everything.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}.")
    spec = parse_data_spec(source)
    if spec is None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"Report file {path} does not exist (or is not a file). --data takes {DATA_SPEC_SYNTAX}."
            )
        yield from _file_chunks(path, chunk_size)
        return
    streaming = chunk_size is not None and "[" not in spec.split
    ds = load_dataset_spec(spec, streaming=streaming)
    if streaming:
        yield from _chunks(iter(ds), chunk_size)
        return
    step = chunk_size or max(1, len(ds))
    for start in range(0, len(ds), step):
        yield ds.select(range(start, min(start + step, len(ds)))).to_list()


def report_source(data: str | os.PathLike) -> str | os.PathLike | Dataset:
    """What a job that fingerprints its input takes for ``--data``: a file path unchanged, a datasets spec loaded
    (a ``datasets.Dataset``, whose fingerprint stands for the content).

    Args:
        data: A path or a spec (:func:`parse_data_spec`).
    """
    spec = parse_data_spec(data)
    return data if spec is None else load_dataset_spec(spec)


def read_records(source: str | os.PathLike) -> list[dict]:
    """Every report of a file or a datasets spec, as a list of dicts (see :func:`iter_records`).

    Args:
        source: A path or a spec such as ``hf:ORG/NAME:test`` or ``json:reports/*.jsonl``.
    """
    return [r for chunk in iter_records(source) for r in chunk]


def load_reports(
    source: str | os.PathLike | Dataset | Sequence[Mapping[str, Any]],
    *,
    text_column: str = "text",
    task_columns: Sequence[str] = (),
    id_column: str | None = "id",
    min_words: int = 1,
) -> tuple[Dataset, LoadStats]:
    """Loads reports from a file, a datasets spec, a ``datasets.Dataset`` or a list of records and validates them.

    Reports whose text is empty, whitespace-only or shorter than ``min_words`` words are skipped and counted (with
    a warning). Missing labels (None, NaN, empty strings) are kept as None: the task's loss ignores them.

    Args:
        source: Path to JSONL(.gz) / JSON / CSV / TSV / Parquet, a datasets spec (``hf:ORG/NAME:SPLIT``, see
            :func:`parse_data_spec`), a ``Dataset`` or a list of dicts.
        text_column: Column holding the report text.
        task_columns: Label columns to keep.
        id_column: Optional id column; row numbers are used when it is absent.
        min_words: Minimum number of whitespace-separated words for a report to be kept.

    Returns:
        The dataset (columns ``id``, text column, task columns) and the :class:`LoadStats`.
    """
    if isinstance(source, Dataset):
        columns, records = list(source.column_names), source.to_list()
        origin = "the dataset"
    elif isinstance(source, (str, os.PathLike)):
        records = read_records(source)  # a file or a datasets spec
        columns = sorted({k for r in records[:1000] for k in r})
        origin = str(source)
    else:
        records = [dict(r) for r in source]
        columns = sorted({k for r in records[:1000] for k in r})
        origin = "the records"
    if not records:
        raise ValueError(f"No reports found in {origin}.")
    wanted = [text_column, *task_columns]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"Column(s) {missing} not found in {origin}. Available columns: {columns}. "
            "Pass --text-column / --tasks with names from that list."
        )
    stats = LoadStats(total=len(records), missing_labels={t: 0 for t in task_columns})
    out: dict[str, list] = {"id": [], text_column: [], **{t: [] for t in task_columns}}
    for i, rec in enumerate(records):
        text = rec.get(text_column)
        if not isinstance(text, str) or len(text.split()) < max(min_words, 1):
            stats.skipped_empty += 1
            continue
        rid = rec.get(id_column) if id_column else None
        out["id"].append(as_label(rid) if rid is not None and not is_missing(rid) else str(i))
        out[text_column].append(text)
        for t in task_columns:
            v = rec.get(t)
            if is_missing(v):
                stats.missing_labels[t] += 1
                v = None
            out[t].append(None if v is None else as_label(v))
    stats.kept = len(out["id"])
    if stats.skipped_empty:
        why = "empty or whitespace-only text" if min_words <= 1 else f"text shorter than {min_words} words"
        logger.warning("Skipped %d of %d reports with %s.", stats.skipped_empty, stats.total, why)
    if stats.kept == 0:
        raise ValueError(f"Every report in {origin} has empty text (column {text_column!r}); nothing to train on.")
    return Dataset.from_dict(out), stats


def build_label_maps(
    dataset: Dataset | Mapping[str, Sequence[Any]],
    tasks: Sequence[str],
    *,
    min_class_count: int = 5,
    other_label: str = "other",
    unknown_as_missing: bool = False,
) -> dict[str, list[str]]:
    """Per-task label maps: classes seen at least ``min_class_count`` times, most frequent first, then ``other``.

    Every map ends with ``other_label``; rarer classes and classes unseen at training time map to it.

    Args:
        dataset: Training data with the task columns.
        tasks: Task columns.
        min_class_count: Classes seen fewer times go to ``other_label``.
        other_label: Name of the catch-all class.
        unknown_as_missing: Treat the value ``"unknown"`` as a missing label instead of a class.
    """
    maps = {}
    for task in tasks:
        counts = Counter(v for v in dataset[task] if not is_missing(v) and not (unknown_as_missing and v == "unknown"))
        if not counts:
            raise ValueError(f"Task {task!r} has no labels in the training data; drop it from --tasks.")
        keep = sorted(
            (c for c, n in counts.items() if n >= min_class_count and c != other_label), key=lambda c: (-counts[c], c)
        )
        maps[task] = [*keep, other_label]
    return maps


def encode_labels(
    values: Iterable[Any], label_map: Sequence[str], *, other_label: str = "other", unknown_as_missing: bool = False
) -> list[int]:
    """Class ids for ``values``: missing → ``-100``; classes outside the map → ``other_label``'s id."""
    index = {c: i for i, c in enumerate(label_map)}
    other = index.get(other_label)
    out = []
    for v in values:
        if is_missing(v) or (unknown_as_missing and v == "unknown"):
            out.append(IGNORE_INDEX)
        elif v in index:
            out.append(index[v])
        else:
            out.append(other if other is not None else IGNORE_INDEX)
    return out


def encode_reports(
    dataset: Dataset,
    tokenizer: Any,
    task_labels: Mapping[str, Sequence[str]] | None = None,
    *,
    text_column: str = "text",
    max_length: int | None = None,
    unknown_as_missing: bool = False,
) -> Dataset:
    """Adds ``input_ids`` and (when the task columns exist) ``labels`` ``(T,)`` columns.

    Args:
        dataset: Output of :func:`load_reports`.
        tokenizer: A ``PreTrainedTokenizerFast``.
        task_labels: Task → label map (the model config's ``task_labels``).
        text_column: Text column.
        max_length: Truncation length (the tokenizer's ``model_max_length`` by default).
        unknown_as_missing: See :func:`build_label_maps`.
    """
    tasks = [t for t in (task_labels or {}) if t in dataset.column_names]

    def _map(batch):
        enc = tokenizer(batch[text_column], truncation=True, max_length=max_length, add_special_tokens=False)
        out = {"input_ids": enc["input_ids"]}
        if tasks:
            cols = [encode_labels(batch[t], task_labels[t], unknown_as_missing=unknown_as_missing) for t in tasks]
            out["labels"] = [list(row) for row in zip(*cols)]
        return out

    return dataset.map(_map, batched=True, desc="Tokenizing reports")


class ReportCollator:
    """Pads ``input_ids`` and stacks labels and stored teacher outputs into tensors.

    Args:
        pad_token_id: Padding id.
        min_length: Pad every batch to at least this length (the widest convolution window).
        teacher_key: Feature key of stored teacher outputs (task → probabilities).
    """

    def __init__(self, pad_token_id: int = 0, min_length: int = 1, teacher_key: str = "teacher_probs") -> None:
        self.pad_token_id = pad_token_id
        self.min_length = min_length
        self.teacher_key = teacher_key

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        length = max(self.min_length, max(len(f["input_ids"]) for f in features))
        ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"], dtype=torch.long)
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": (ids != self.pad_token_id).long()}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        if self.teacher_key in features[0]:
            tasks = features[0][self.teacher_key].keys()
            batch[self.teacher_key] = {
                t: torch.tensor(np.asarray([f[self.teacher_key][t] for f in features]), dtype=torch.float32)
                for t in tasks
            }
        return batch


def split_indices(n: int, fractions: Sequence[float], *, seed: int = 0) -> list[np.ndarray]:
    """Random disjoint index sets with the given fractions (the last one takes the remainder)."""
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {list(fractions)}.")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *[round(f * n) for f in fractions[:-1]]])
    parts = [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return [np.sort(p) for p in [*parts, perm[bounds[-1] :]]]


def label_map_fingerprint(task_labels: Mapping[str, Sequence[str]]) -> str:
    """A short stable hash of the tasks and their label maps (to refuse files made for another model)."""
    blob = json.dumps({t: list(v) for t, v in task_labels.items()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_soft_labels(
    path: str | os.PathLike,
    ids: Sequence[str],
    probs: Mapping[str, np.ndarray],
    task_labels: Mapping[str, Sequence[str]],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes teacher soft labels next to the data (safetensors, atomically) so students train without the teacher.

    Args:
        path: Output ``.safetensors`` file.
        ids: Report ids, in row order.
        probs: Task → ``(N, C_t)`` probabilities.
        task_labels: The label maps the probabilities refer to.
        metadata: Extra string-able metadata (members, temperature, folds…).
    """
    from safetensors.numpy import save_file

    n = len(ids)
    tensors = {}
    for task, p in probs.items():
        p = np.ascontiguousarray(p, dtype=np.float32)
        if p.shape != (n, len(task_labels[task])):
            raise ValueError(f"soft labels for {task!r} have shape {p.shape}, expected {(n, len(task_labels[task]))}.")
        tensors[f"probs.{task}"] = p
    meta = {
        "format": "reportkd.soft_labels.v1",
        "ids": json.dumps(list(ids)),
        "task_labels": json.dumps({t: list(v) for t, v in task_labels.items()}),
        "fingerprint": label_map_fingerprint(task_labels),
        **{k: json.dumps(v) for k, v in (metadata or {}).items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_soft_labels(
    path: str | os.PathLike,
    *,
    ids: Sequence[str] | None = None,
    task_labels: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Loads soft labels written by :func:`save_soft_labels`, checking they match the data and label maps.

    Args:
        path: The ``.safetensors`` file.
        ids: Expected report ids in row order; a mismatch raises.
        task_labels: Expected label maps; a mismatch raises.

    Returns:
        Task → ``(N, C_t)`` probabilities, and the metadata (ids, task_labels and extras decoded).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        raw = f.metadata() or {}
        if raw.get("format") != "reportkd.soft_labels.v1":
            raise ValueError(f"{path} is not a reportkd soft-label file (no 'reportkd.soft_labels.v1' metadata).")
        probs = {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys()}
    meta = {k: (v if k in ("format", "fingerprint") else json.loads(v)) for k, v in raw.items()}
    if task_labels is not None and meta["fingerprint"] != label_map_fingerprint(task_labels):
        raise ValueError(
            f"{path} was made for other tasks or label maps than this model's; recompute the soft labels."
        )
    if ids is not None and list(ids) != meta["ids"]:
        raise ValueError(f"{path} holds soft labels for other reports (ids differ); recompute them for this data.")
    return probs, meta


def attach_teacher_outputs(dataset: Dataset, probs: Mapping[str, np.ndarray], key: str = "teacher_probs") -> Dataset:
    """Adds a ``key`` column (task → probability list per row) that :class:`ReportCollator` stacks."""
    n = len(dataset)
    for task, p in probs.items():
        if len(p) != n:
            raise ValueError(f"teacher outputs for {task!r} have {len(p)} rows but the dataset has {n}.")
    rows = [{t: probs[t][i].tolist() for t in probs} for i in range(n)]
    if key in dataset.column_names:
        dataset = dataset.remove_columns(key)
    return dataset.add_column(key, rows)
