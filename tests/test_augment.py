"""Report augmentations keep labels and ids, are deterministic per seed and change the text; the collator re-draws."""

import random

import pytest

from reportkd.synthetic import generate_reports
from reportkd.text.mtcnn.augment import (
    AugmentingCollator,
    AugmentPolicy,
    augment_records,
    augment_text,
    ocr_noise,
    shuffle_sentences,
    span_dropout,
    word_dropout,
)
from reportkd.text.mtcnn.tokenization import train_word_tokenizer

TEXT = "Right kidney, radical nephrectomy. Clear cell renal cell carcinoma, grade 2. Margins negative; pT1a."


@pytest.fixture(scope="module")
def records():
    return generate_reports(20, seed=4)


def test_augmented_records_keep_ids_and_labels_and_change_the_text(records):
    out = augment_records(records, seed=3, views=2)
    assert len(out) == 2 * len(records)
    for i, new in enumerate(out):
        old = records[i // 2]
        assert {k: v for k, v in new.items() if k != "text"} == {k: v for k, v in old.items() if k != "text"}
    assert sum(new["text"] != records[i // 2]["text"] for i, new in enumerate(out)) == len(out)


def test_augmentations_are_deterministic_per_seed_and_differ_across_seeds(records):
    assert augment_records(records, seed=5) == augment_records(records, seed=5)
    assert augment_records(records, seed=5) != augment_records(records, seed=6)
    assert augment_text(TEXT, 1) == augment_text(TEXT, 1)


def test_traceable_ids_when_asked(records):
    out = augment_records(records[:2], seed=0, views=2, id_suffix="#aug")
    assert [r["id"] for r in out] == [f"{records[i]['id']}#aug{v}" for i in range(2) for v in range(2)]


def test_each_augmentation_keeps_meaningful_content():
    rng = random.Random(0)
    words = TEXT.split()
    dropped = word_dropout(TEXT, 0.3, rng).split()
    assert 0 < len(dropped) < len(words) and all(w in words for w in dropped)
    assert 0 < len(span_dropout(TEXT, 0.3, rng).split()) < len(words)
    shuffled = shuffle_sentences(TEXT, random.Random(3))
    assert sorted(shuffled.split()) == sorted(words) and shuffled != TEXT
    noisy = ocr_noise(TEXT, 0.5, random.Random(1))
    assert noisy != TEXT and len(noisy.split()) > len(words) // 2
    assert word_dropout("one", 0.99, rng) == "one"  # never empty
    assert augment_text(TEXT, 0, AugmentPolicy.scaled(0.0)) == TEXT


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="word_dropout"):
        AugmentPolicy(word_dropout=1.5)


def test_collator_draws_a_fresh_view_per_batch_and_keeps_labels(records):
    tok = train_word_tokenizer([r["text"] for r in records], min_count=1, max_length=64)
    rows = [{"text": r["text"], "input_ids": [1, 2], "labels": [0, 1]} for r in records[:4]]
    collator = AugmentingCollator(tok, AugmentPolicy(word_dropout=0.3), seed=0, max_length=64, min_length=3)
    first, second = collator(rows), collator(rows)
    assert first["labels"].tolist() == [[0, 1]] * 4
    assert not first["input_ids"].equal(second["input_ids"]) or first["input_ids"].shape != second["input_ids"].shape
    again = AugmentingCollator(tok, AugmentPolicy(word_dropout=0.3), seed=0, max_length=64, min_length=3)
    assert again(rows)["input_ids"].equal(first["input_ids"])
