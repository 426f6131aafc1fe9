"""ROUGE-L (longest common subsequence F-measure) as a local ``evaluate`` module, computed with ``rouge-score``."""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = """ROUGE-L between generated texts and references: the F-measure (with precision and recall) of their
longest common subsequence of tokens, averaged over pairs. Tokens are rouge-score's default: lower-cased
alphanumeric words."""

_KWARGS = """
Args:
    predictions: Generated texts.
    references: One reference text per prediction.
    use_stemmer: Porter-stem words before matching (default False).
Returns:
    rougeL, rougeL_precision, rougeL_recall: means over pairs, in [0, 1].
"""


def rouge_l(predictions: list[str], references: list[str], use_stemmer: bool = False) -> dict[str, float]:
    """Mean ROUGE-L F-measure, precision and recall over ``(prediction, reference)`` pairs.

    Args:
        predictions: Generated texts (``None`` counts as empty).
        references: References, one per prediction.
        use_stemmer: Porter-stem words before matching.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: give one reference each.")
    if not predictions:
        return {"rougeL": 0.0, "rougeL_precision": 0.0, "rougeL_recall": 0.0}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    scores = [scorer.score(str(r or ""), str(p or ""))["rougeL"] for p, r in zip(predictions, references)]
    n = len(scores)
    return {
        "rougeL": sum(s.fmeasure for s in scores) / n,
        "rougeL_precision": sum(s.precision for s in scores) / n,
        "rougeL_recall": sum(s.recall for s in scores) / n,
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RougeL(evaluate.Metric):
    """ROUGE-L, loadable offline with ``evaluate.load(<path of this folder>)``."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer: bool = False):
        return rouge_l(predictions, references, use_stemmer=use_stemmer)
