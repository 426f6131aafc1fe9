"""Meaning-keeping report augmentations for consistent teaching (Beyer et al., CVPR 2022), pure and seeded.

Every function takes the text and a ``random.Random`` (or a seed) and returns new text; labels and ids are never
touched (:func:`augment_records` copies them). The views imitate what real OCR'd reports vary in: words and spans
lost, sections in another order, and the OCR errors of :mod:`reportkd.synthetic` (character confusions, split and
merged words, stray symbols). :class:`AugmentingCollator` draws a fresh view of each report every time it is batched,
so the teacher (run on the same batch by the trainer) labels exactly the view the student sees.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reportkd.data import ReportCollator

_SENTENCE = re.compile(r"(?<=[.;:\n])\s+")


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """Drops each whitespace-separated word with probability ``p`` (keeps at least one word).

    Args:
        text: Report text.
        p: Drop probability in [0, 1).
        rng: Random source.
    """
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words[:1])


def span_dropout(text: str, p: float, rng: random.Random, max_span: int = 8) -> str:
    """Drops spans of 1..``max_span`` words; about a fraction ``p`` of the words is removed (at least one kept).

    Args:
        text: Report text.
        p: Share of words removed, in [0, 1).
        rng: Random source.
        max_span: Longest span dropped at once.
    """
    words = text.split()
    n = len(words)
    keep = [True] * n
    for _ in range(int(round(p * n / ((1 + max_span) / 2)))):
        start, length = rng.randrange(max(n, 1)), rng.randint(1, max_span)
        keep[start : start + length] = [False] * len(keep[start : start + length])
    kept = [w for w, k in zip(words, keep) if k]
    return " ".join(kept or words[:1])


def shuffle_sentences(text: str, rng: random.Random, p: float = 1.0) -> str:
    """With probability ``p``, shuffles the report's sentences / lines (split after ``.``, ``;``, ``:`` or a newline).

    Args:
        text: Report text.
        rng: Random source.
        p: Probability of shuffling at all.
    """
    parts = [s for s in _SENTENCE.split(text) if s]
    if len(parts) < 2 or rng.random() >= p:
        return text
    rng.shuffle(parts)
    return " ".join(parts)


def ocr_noise(text: str, p: float, rng: random.Random) -> str:
    """OCR errors in about a fraction ``p`` of the words, as :mod:`reportkd.synthetic` makes them (no page breaks).

    Args:
        text: Report text.
        p: Share of words damaged, in [0, 1).
        rng: Random source.
    """
    from reportkd.synthetic import _ocr

    if p <= 0:
        return text
    # _ocr inserts page-break lines with probability min(1, 12 p); keep the content: no patient line
    return _ocr(rng, text, p, patient="")


@dataclass(frozen=True)
class AugmentPolicy:
    """How strong each augmentation of :func:`augment_text` is (0 turns one off).

    Args:
        word_dropout: Probability of dropping a word.
        span_dropout: Share of words dropped in spans.
        shuffle: Probability of shuffling the sentences.
        ocr: Share of words given an OCR error.
    """

    word_dropout: float = 0.1
    span_dropout: float = 0.1
    shuffle: float = 0.5
    ocr: float = 0.05

    def __post_init__(self) -> None:
        for name in ("word_dropout", "span_dropout", "shuffle", "ocr"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0 and not (name == "shuffle" and value == 1.0):
                raise ValueError(f"augmentation {name} must be in [0, 1), got {value!r}.")

    @classmethod
    def scaled(cls, strength: float) -> AugmentPolicy:
        """The default mix with every rate multiplied by ``strength`` (0: no augmentation; 1: the defaults)."""
        base = cls()
        names = ("word_dropout", "span_dropout", "shuffle", "ocr")
        return cls(*(min(getattr(base, n) * strength, 0.95) for n in names))


def augment_text(text: str, rng: random.Random | int, policy: AugmentPolicy | None = None) -> str:
    """One augmented view: sentence shuffle, span dropout, word dropout, then OCR noise.

    Args:
        text: Report text.
        rng: Random source or seed (the same seed gives the same view).
        policy: Rates (default :class:`AugmentPolicy`).
    """
    rng = random.Random(rng) if isinstance(rng, int) else rng
    policy = policy or AugmentPolicy()
    if policy.shuffle:
        text = shuffle_sentences(text, rng, policy.shuffle)
    if policy.span_dropout:
        text = span_dropout(text, policy.span_dropout, rng)
    if policy.word_dropout:
        text = word_dropout(text, policy.word_dropout, rng)
    if policy.ocr:
        text = ocr_noise(text, policy.ocr, rng)
    return text


def augment_records(
    records: Sequence[Mapping[str, Any]],
    seed: int,
    *,
    views: int = 1,
    text_column: str = "text",
    policy: AugmentPolicy | None = None,
    id_suffix: str | None = None,
) -> list[dict[str, Any]]:
    """``views`` augmented copies of each record: every other field (id, labels) copied unchanged.

    Args:
        records: Reports as dicts.
        seed: Seed; view ``v`` of record ``i`` uses ``Random(f"{seed}/{i}/{v}")``, so it does not depend on the rest.
        views: Copies per record.
        text_column: The text field.
        policy: Augmentation rates.
        id_suffix: When set, ids become ``f"{id}{id_suffix}{v}"`` (traceable, unique); None keeps the id.
    """
    out = []
    for i, record in enumerate(records):
        for v in range(views):
            rng = random.Random(f"{seed}/{i}/{v}")
            new = dict(record)
            new[text_column] = augment_text(str(record[text_column]), rng, policy)
            if id_suffix is not None and "id" in new:
                new["id"] = f"{new['id']}{id_suffix}{v}"
            out.append(new)
    return out


class AugmentingCollator(ReportCollator):
    """Re-tokenises a fresh augmented view of each report's text every time it is batched.

    Args:
        tokenizer: The job's word tokenizer.
        policy: Augmentation rates.
        seed: Base seed; batch ``b`` uses ``Random(f"{seed}/{b}")`` (deterministic over a run).
        text_column: The text field of the dataset rows.
        max_length: Tokens kept per report.
        pad_token_id: Padding id.
        min_length: Pad every batch to at least this length (the widest convolution window).
    """

    def __init__(
        self,
        tokenizer: Any,
        policy: AugmentPolicy,
        seed: int = 0,
        *,
        text_column: str = "text",
        max_length: int = 512,
        pad_token_id: int = 0,
        min_length: int = 1,
    ) -> None:
        super().__init__(pad_token_id=pad_token_id, min_length=min_length)
        self.tokenizer, self.policy, self.seed = tokenizer, policy, seed
        self.text_column, self.max_length = text_column, max_length
        self.batches = 0

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}/{self.batches}")
        self.batches += 1
        texts = [augment_text(str(f[self.text_column]), rng, self.policy) for f in features]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=False)
        features = [{**f, "input_ids": ids} for f, ids in zip(features, enc["input_ids"])]
        return super().__call__(features)


__all__ = [
    "AugmentPolicy",
    "AugmentingCollator",
    "augment_records",
    "augment_text",
    "ocr_noise",
    "shuffle_sentences",
    "span_dropout",
    "word_dropout",
]
