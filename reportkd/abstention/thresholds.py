"""The versioned abstention-thresholds file (``thresholds.json``, format ``reportkd.thresholds.v1``).

Written by ``reportkd calibrate`` (and ``save_classifier``), stored in the model directory and pushed with it, read
by ``reportkd predict`` / ``evaluate-abstention``. It records what the thresholds are valid for (the model's tasks
and label maps, as a fingerprint and in full, and optionally a hash of its weights) and how they were obtained::

    {
      "format": "reportkd.thresholds.v1",
      "model_id": "runs/student", "model_sha256": "3f9c…" | null,
      "fingerprint": "<label_map_fingerprint(task_labels)>", "task_labels": {"grade": ["G1", "G2", …], …},
      "method": "empirical" | "ltt", "mode": "per-task" | "joint",
      "target_accuracy": 0.97, "delta": 0.1 | null, "settings": {"p_value": "binomial", …},
      "calibration_size": 812, "temperature_size": 0, "temperatures": {"grade": 1.31, …} | null,
      "joint": {"threshold": …, "coverage": …, "accuracy": …, "n": …} | null,
      "tasks": {"grade": {"threshold": 0.93, "coverage": 0.61, "accuracy": 0.972, "n": 790, "n_missing": 22,
                          "target_accuracy": 0.97, "method": "ltt", "delta": 0.1, "reached": true}, …},
      "provenance": {"calibrated_from": "model" | "predictions", "predictions_sha256": "…" | null,
                     "model_sha256_from": "weights" | "predictions" | "asserted" | null},
      "reportkd_version": "0.1.0"
    }

``model_sha256`` binds the thresholds to the weights whose probabilities were calibrated: computed from the model
directory that ran (``model_sha256_from: "weights"``), taken from the predictions file that recorded it
(``"predictions"``), or asserted by the user (``"asserted"``, ``calibrate --assume-same-model``). Thresholds are
refused for a model with other weights, and thresholds bound to no weights are refused for a model that has a
fingerprint, unless ``--allow-other-weights``. ``predictions_sha256`` is :meth:`Predictions.fingerprint` of a
``--predictions`` file.

Thresholds must lie in ``[0, 1]``; the one exception is ``1.0000000000000002`` (``ABSTAIN_ALL``), written when the
target was unreachable: that task abstains on every report. A hand-edited value outside that range is refused.
Files written before ``model_id`` / ``task_labels`` / ``mode`` / ``delta`` existed still load (per-task mode).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data import label_map_fingerprint
from ..utils import write_json
from .calibration import Calibration
from .empirical import ABSTAIN_ALL, Threshold

THRESHOLDS_FORMAT = "reportkd.thresholds.v1"
THRESHOLDS_NAME = "thresholds.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class ThresholdsFile:
    """A loaded thresholds file.

    Args:
        calibration: Thresholds, mode, method, target, δ, temperatures.
        fingerprint: :func:`~reportkd.data.label_map_fingerprint` of the model's task label maps.
        task_labels: The label maps themselves (None in files that predate them).
        model_id: Model the thresholds were calibrated for (directory or hub id), if known.
        model_sha256: Short hash of that model's weight files (see :func:`weights_fingerprint`), if known.
        extra: Other top-level fields (kept when the file is rewritten).
    """

    calibration: Calibration
    fingerprint: str
    task_labels: dict[str, list[str]] | None = None
    model_id: str | None = None
    model_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        """Task → threshold."""
        return self.calibration.thresholds

    @property
    def mode(self) -> str:
        return self.calibration.mode

    @property
    def temperatures(self) -> dict[str, float] | None:
        return self.calibration.temperatures

    def check(
        self,
        task_labels: Mapping[str, Sequence[str]],
        *,
        model_sha256: str | None = None,
        source: str = "the thresholds file",
        allow_other_weights: bool = False,
    ) -> None:
        """Raises ``ValueError`` (saying what differs) unless these thresholds were made for this model.

        Args:
            task_labels: The model's task → label map.
            model_sha256: The model's :func:`weights_fingerprint` (None: not checked). Refused when the file has
                another, or none.
            source: How to name the file in messages.
            allow_other_weights: Accept thresholds calibrated for other (or unknown) weights with the same label
                maps.
        """
        problems = []
        model_tasks, file_tasks = list(task_labels), list(self.calibration.tasks)
        if set(model_tasks) != set(file_tasks):
            only_model = [t for t in model_tasks if t not in file_tasks]
            only_file = [t for t in file_tasks if t not in model_tasks]
            problems.append(f"tasks differ (only in the model: {only_model}; only in the file: {only_file})")
        if self.fingerprint != label_map_fingerprint(task_labels):
            if self.task_labels is not None:
                for t in model_tasks:
                    if t in self.task_labels and list(self.task_labels[t]) != list(task_labels[t]):
                        problems.append(
                            f"task {t!r} has label map {_short(self.task_labels[t])} in the file but "
                            f"{_short(task_labels[t])} in the model"
                        )
            if not problems:
                problems.append("the task/label-map fingerprint differs (labels or their order changed)")
        if problems:
            raise ValueError(
                f"{source} was calibrated for another model: {'; '.join(problems)}. "
                "Recalibrate with `reportkd calibrate --model DIR --data FILE --out thresholds.json` for this model."
            )
        if model_sha256 and not self.model_sha256 and not allow_other_weights:
            raise ValueError(
                f"{source} is not bound to any weights (no model_sha256: calibrated from predictions that do not "
                f"record the model that produced them), so it cannot be checked against this model ({model_sha256}). "
                "Recalibrate with `reportkd calibrate --model DIR --data FILE` (or on `reportkd predict --save-probs` "
                "output), or pass --allow-other-weights to use them anyway."
            )
        if model_sha256 and self.model_sha256 and model_sha256 != self.model_sha256 and not allow_other_weights:
            raise ValueError(
                f"{source} was calibrated for other weights (model_sha256 {self.model_sha256}, this model "
                f"{model_sha256}; model_id {self.model_id!r}) with the same label maps, e.g. the baseline instead of "
                "the student. Recalibrate for this model, or pass --allow-other-weights to use them anyway."
            )

    def to_dict(self) -> dict[str, Any]:
        return thresholds_to_dict(
            self.calibration,
            self.task_labels,
            fingerprint=self.fingerprint,
            model_id=self.model_id,
            model_sha256=self.model_sha256,
            **self.extra,
        )


def _short(names: Sequence[str], k: int = 6) -> str:
    names = list(names)
    return str(names if len(names) <= k else [*names[:k], f"… {len(names) - k} more"])


def _finite_threshold(value: float) -> float:
    return ABSTAIN_ALL if not math.isfinite(value) or value > 1 else float(value)


def _threshold_dict(th: Threshold) -> dict[str, Any]:
    d = th.to_dict()
    d["threshold"] = _finite_threshold(th.threshold)
    d["reached"] = th.reached
    return d


def thresholds_to_dict(
    calibration: Calibration | Mapping[str, Threshold],
    task_labels: Mapping[str, Sequence[str]] | None,
    *,
    fingerprint: str | None = None,
    model_id: str | None = None,
    model_sha256: str | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """The JSON-able content of a thresholds file (see the module docstring).

    Args:
        calibration: A :class:`~reportkd.abstention.Calibration`, or task → :class:`Threshold` (per-task mode).
        task_labels: The model's task → label map (gives the fingerprint; stored in full).
        fingerprint: Needed only when ``task_labels`` is None.
        model_id: Model directory or hub id.
        model_sha256: :func:`weights_fingerprint` of the model directory.
        **metadata: Extra top-level fields (JSON-able).
    """
    from .. import __version__

    if not isinstance(calibration, Calibration):
        tasks = dict(calibration)
        first = next(iter(tasks.values()), None)
        calibration = Calibration(
            tasks,
            "per-task",
            first.method if first else "empirical",
            first.target_accuracy if first else float("nan"),
            first.delta if first else None,
            calibration_size=max((th.n + th.n_missing for th in tasks.values()), default=0),
        )
    if task_labels is None and fingerprint is None:
        raise ValueError("Give the model's task_labels (or at least its label-map fingerprint).")
    reserved = {"format", "tasks", "fingerprint", "task_labels", "model_id", "model_sha256"}
    clash = sorted(reserved & set(metadata))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved by the thresholds file format.")
    c = calibration
    return {
        "format": THRESHOLDS_FORMAT,
        "model_id": model_id,
        "model_sha256": model_sha256,
        "fingerprint": fingerprint or label_map_fingerprint(task_labels),
        "task_labels": {t: list(v) for t, v in task_labels.items()} if task_labels is not None else None,
        "method": c.method,
        "mode": c.mode,
        "target_accuracy": c.target_accuracy,
        "delta": c.delta,
        "settings": dict(c.settings),
        "calibration_size": c.calibration_size,
        "temperature_size": c.temperature_size,
        "temperatures": dict(c.temperatures) if c.temperatures else None,
        "joint": _threshold_dict(c.joint) if c.joint is not None else None,
        "tasks": {t: _threshold_dict(th) for t, th in c.tasks.items()},
        "reportkd_version": __version__,
        **metadata,
    }


def write_thresholds(
    path: str | os.PathLike,
    calibration: Calibration | Mapping[str, Threshold],
    task_labels: Mapping[str, Sequence[str]],
    *,
    model_id: str | None = None,
    model_sha256: str | None = None,
    **metadata: Any,
) -> Path:
    """Writes a thresholds file atomically (a failing write leaves any previous file untouched).

    Args:
        path: Output ``.json`` (e.g. ``<model dir>/thresholds.json``).
        calibration: See :func:`thresholds_to_dict`.
        task_labels: The model's task → label map; its tasks must be exactly the calibrated ones.
        model_id: Model directory or hub id.
        model_sha256: :func:`weights_fingerprint` of the model directory.
        **metadata: Extra top-level fields.
    """
    content = thresholds_to_dict(calibration, task_labels, model_id=model_id, model_sha256=model_sha256, **metadata)
    if set(content["tasks"]) != set(task_labels):
        raise ValueError(
            f"Thresholds cover tasks {sorted(content['tasks'])} but the model has {sorted(task_labels)}; "
            "calibrate every task of the model."
        )
    return write_json(path, content)


def thresholds_from_dict(d: Mapping[str, Any], *, source: str = "the thresholds file") -> ThresholdsFile:
    """Parses the content of a thresholds file, raising ``ValueError`` on a malformed one.

    Args:
        d: The decoded JSON.
        source: How to name the file in messages.
    """
    if not isinstance(d, Mapping) or d.get("format") != THRESHOLDS_FORMAT:
        found = d.get("format") if isinstance(d, Mapping) else type(d).__name__
        raise ValueError(
            f"{source} is not a reportkd thresholds file (format {found!r}, expected {THRESHOLDS_FORMAT!r})."
        )
    for key in ("fingerprint", "tasks"):
        if key not in d:
            raise ValueError(f"{source} lacks the {key!r} field; rewrite it with `reportkd calibrate`.")
    names = {f.name for f in fields(Threshold)}
    tasks = {}
    if not isinstance(d["tasks"], Mapping) or not d["tasks"]:
        raise ValueError(f"{source}: 'tasks' must map each task to its threshold; rewrite it with reportkd calibrate.")
    for task, entry in d["tasks"].items():
        tasks[task] = _threshold(entry, names, f"{source}: task {task!r}")
    joint = d.get("joint")
    calibration = Calibration(
        tasks,
        d.get("mode") or "per-task",
        d.get("method") or "empirical",
        d.get("target_accuracy", float("nan")),
        d.get("delta"),
        _threshold(joint, names, f"{source}: joint") if joint else None,
        d.get("temperatures") or None,
        int(d.get("calibration_size") or 0),
        int(d.get("temperature_size") or 0),
        dict(d.get("settings") or {}),
    )
    if calibration.mode not in ("per-task", "joint"):
        raise ValueError(f"{source}: unknown mode {calibration.mode!r} (expected 'per-task' or 'joint').")
    temps = calibration.temperatures or {}
    bad = {t: v for t, v in temps.items() if not isinstance(v, (int, float)) or not v > 0}
    if bad:
        raise ValueError(f"{source}: temperatures must be positive numbers, got {bad}.")
    known = {
        "format", "model_id", "model_sha256", "fingerprint", "task_labels", "method", "mode", "target_accuracy",
        "delta", "settings", "calibration_size", "temperature_size", "temperatures", "joint", "tasks",
    }  # fmt: skip
    return ThresholdsFile(
        calibration,
        d["fingerprint"],
        {t: list(v) for t, v in d["task_labels"].items()} if d.get("task_labels") else None,
        d.get("model_id"),
        d.get("model_sha256"),
        {k: v for k, v in d.items() if k not in known},
    )


def _threshold(entry: Mapping[str, Any], names: set[str], where: str) -> Threshold:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} is not an object; rewrite the file with `reportkd calibrate`.")
    required = ("threshold", "coverage", "accuracy", "n", "target_accuracy")
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"{where} lacks {missing}; rewrite the file with `reportkd calibrate`.")
    value = entry["threshold"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} has no valid threshold ({value!r}); rewrite the file with `reportkd calibrate`.")
    if not (0.0 <= value <= 1.0 or value == ABSTAIN_ALL):
        raise ValueError(
            f"{where} has threshold {value!r}, outside [0, 1] (only {ABSTAIN_ALL!r}, 'abstain on every report', may "
            "exceed 1; a negative one would switch abstention off). Recalibrate with `reportkd calibrate`."
        )
    return Threshold(**{k: v for k, v in entry.items() if k in names})


def read_thresholds(
    path: str | os.PathLike,
    *,
    task_labels: Mapping[str, Sequence[str]] | None = None,
    model_sha256: str | None = None,
    allow_other_weights: bool = False,
) -> ThresholdsFile:
    """Reads a thresholds file; with ``task_labels`` also checks it was made for that model.

    Args:
        path: The ``.json`` file.
        task_labels: The model's task → label map (checked when given).
        model_sha256: The model's :func:`weights_fingerprint` (checked when both sides have one).
        allow_other_weights: See :meth:`ThresholdsFile.check`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Thresholds file {path} does not exist; create it with `reportkd calibrate`.")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}).") from None
    th = thresholds_from_dict(d, source=str(path))
    if task_labels is not None:
        th.check(task_labels, model_sha256=model_sha256, source=str(path), allow_other_weights=allow_other_weights)
    return th


def weights_fingerprint(model_dir: str | os.PathLike) -> str | None:
    """Short SHA-256 over the weight files (``*.safetensors``, ``*.bin``) of a model directory; None if it has none.

    Args:
        model_dir: A ``save_pretrained`` directory.
    """
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


__all__ = [
    "THRESHOLDS_FORMAT",
    "THRESHOLDS_NAME",
    "ThresholdsFile",
    "read_thresholds",
    "thresholds_from_dict",
    "thresholds_to_dict",
    "weights_fingerprint",
    "write_thresholds",
]
