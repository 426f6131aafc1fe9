"""Field-level clinical accuracy of generated synoptic lines, as a local ``evaluate`` module.

A synoptic line is ``field: value | field: value | ...`` (e.g. ``organ: kidney | histology: clear cell renal cell
carcinoma | grade: G2 | t_stage: T1 | laterality: left | behavior: malignant``). Each generated line is parsed
and every field of its reference is scored by exact match after normalisation (lower case, single spaces).
A missing field, a malformed line or an empty output is wrong for the fields it lacks; it never raises.
"""

from __future__ import annotations

import re

import datasets
import evaluate

_DESCRIPTION = __doc__

_KWARGS = """
Args:
    predictions: Generated synoptic lines.
    references: Reference synoptic lines.
    fields: Fields to score (default: every field of each reference).
    case_sensitive: Compare values with their case (default False).
Returns:
    field_accuracy: mean of the per-field accuracies; exact_match: fraction of lines with every field right;
    parse_rate: fraction of predictions that contain every scored field; accuracy_<field>: per-field accuracy;
    known_accuracy_<field>: accuracy over references whose value is not "unknown" (when there are any).
"""


def _norm(text: str, case_sensitive: bool) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if case_sensitive else text.lower()


def parse_synoptic(line: str | None, case_sensitive: bool = False) -> dict[str, str]:
    """Parses ``field: value | ...`` into a dict; tolerant of junk (parts without a colon are skipped, the first
    occurrence of a field wins, field names are lower-cased with spaces turned into underscores).

    Args:
        line: A synoptic line (anything; non-strings give ``{}``).
        case_sensitive: Keep the case of values.
    """
    if not isinstance(line, str):
        return {}
    fields: dict[str, str] = {}
    for part in line.split("|"):
        if ":" not in part:
            continue
        key, value = part.split(":", 1)
        key = re.sub(r"\s+", "_", key.strip().lower())
        if key and key not in fields:
            fields[key] = _norm(value, case_sensitive)
    return fields


def synoptic_accuracy(
    predictions: list[str], references: list[str], fields: list[str] | None = None, case_sensitive: bool = False
) -> dict[str, float]:
    """Per-field exact-match accuracy of generated synoptic lines (see the module docstring).

    Args:
        predictions: Generated lines.
        references: Reference lines, one per prediction.
        fields: Fields to score (default: every field of each reference).
        case_sensitive: Compare values with their case.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: give one reference each.")
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    known_correct: dict[str, int] = {}
    known_total: dict[str, int] = {}
    exact = parsed = 0
    for pred, ref in zip(predictions, references):
        p, r = parse_synoptic(pred, case_sensitive), parse_synoptic(ref, case_sensitive)
        names = list(fields) if fields is not None else list(r)
        names = [f for f in names if f in r]
        hits = [p.get(f) == r[f] for f in names]
        exact += all(hits) and bool(names)
        parsed += all(f in p for f in names)
        for f, hit in zip(names, hits):
            total[f] = total.get(f, 0) + 1
            correct[f] = correct.get(f, 0) + hit
            if r[f] != "unknown":
                known_total[f] = known_total.get(f, 0) + 1
                known_correct[f] = known_correct.get(f, 0) + hit
    n = len(predictions)
    out: dict[str, float] = {
        "field_accuracy": sum(correct[f] / total[f] for f in total) / len(total) if total else 0.0,
        "exact_match": exact / n if n else 0.0,
        "parse_rate": parsed / n if n else 0.0,
    }
    for f in total:
        out[f"accuracy_{f}"] = correct[f] / total[f]
    for f in known_total:
        out[f"known_accuracy_{f}"] = known_correct[f] / known_total[f]
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class SynopticAccuracy(evaluate.Metric):
    """Field-level synoptic accuracy, loadable offline with ``evaluate.load(<path of this folder>)``."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, fields=None, case_sensitive: bool = False):
        return synoptic_accuracy(predictions, references, fields=fields, case_sensitive=case_sensitive)
