"""Corpus BLEU as a local ``evaluate`` module, computed with ``sacrebleu``."""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = """Corpus-level BLEU (sacrebleu, 13a tokenisation) of generated texts against one reference each."""

_KWARGS = """
Args:
    predictions: Generated texts.
    references: One reference text per prediction.
    lowercase: Compare lower-cased texts (default False).
Returns:
    bleu: corpus BLEU in [0, 100] (sacrebleu's scale); precisions: 1- to 4-gram precisions in [0, 100];
    brevity_penalty; length_ratio.
"""


def corpus_bleu(predictions: list[str], references: list[str], lowercase: bool = False) -> dict:
    """Corpus BLEU of ``predictions`` against one reference each.

    Args:
        predictions: Generated texts (``None`` counts as empty).
        references: References, one per prediction.
        lowercase: Compare lower-cased texts.
    """
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: give one reference each.")
    if not predictions:
        return {"bleu": 0.0, "precisions": [0.0] * 4, "brevity_penalty": 0.0, "length_ratio": 0.0}
    result = sacrebleu.corpus_bleu(
        [str(p or "") for p in predictions], [[str(r or "") for r in references]], lowercase=lowercase
    )
    return {
        "bleu": float(result.score),
        "precisions": [float(p) for p in result.precisions],
        "brevity_penalty": float(result.bp),
        "length_ratio": float(result.sys_len / result.ref_len) if result.ref_len else 0.0,
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu(evaluate.Metric):
    """BLEU, loadable offline with ``evaluate.load(<path of this folder>)``."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, lowercase: bool = False):
        return corpus_bleu(predictions, references, lowercase=lowercase)
