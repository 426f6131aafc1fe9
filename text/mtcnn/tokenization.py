"""Word-level tokenizer for OCR'd pathology reports, trained on the corpus with the `tokenizers` library.

Normalisation (NFKC, lower-case, runs of 3+ digits -> "000") keeps the short numbers that carry labels (pT2, G3,
N0, 3+3=6) while folding accession numbers, dates and OCR barcode noise ("1111111111") into one token.
Pre-tokenisation splits on whitespace and isolates every punctuation character.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"


def report_normalizer(long_number_digits: int | None = 3) -> normalizers.Normalizer:
    """NFKC + lower-case, and digit runs of at least `long_number_digits` digits replaced by "000".

    Args:
        long_number_digits: Minimum run length to fold; None keeps all numbers.
    """
    steps = [normalizers.NFKC(), normalizers.Lowercase()]
    if long_number_digits is not None:
        if long_number_digits < 1:
            raise ValueError(f"long_number_digits must be >= 1 or None, got {long_number_digits!r}.")
        steps.append(normalizers.Replace(Regex(rf"\d{{{long_number_digits},}}"), "000"))
    return normalizers.Sequence(steps)


def train_word_tokenizer(
    texts: Iterable[str],
    *,
    min_count: int = 2,
    max_vocab: int | None = None,
    max_length: int = 1500,
    long_number_digits: int | None = 3,
) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer: `[PAD]` = 0, `[UNK]` = 1, then words by decreasing corpus frequency.

    Call it with `truncation=True` (it truncates to `model_max_length = max_length`) and `padding=True` (right
    padding with `[PAD]`). Empty or whitespace-only text gives an empty id list; skipping such reports is the
    caller's job. Save and reload with `save_pretrained` / `AutoTokenizer.from_pretrained`.

    Args:
        texts: Training documents (None entries are skipped).
        min_count: Minimum corpus frequency for a word to get its own id; rarer words map to `[UNK]`.
        max_vocab: Maximum vocabulary size including the two special tokens (None: no limit).
        max_length: Maximum tokens per document kept by truncation (`model_max_length`).
        long_number_digits: Digit runs at least this long are folded to "000" (None: keep all numbers).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}.")
    if max_vocab is not None and max_vocab < 3:
        raise ValueError(f"max_vocab must be >= 3 (two special tokens and one word) or None, got {max_vocab!r}.")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length!r}.")
    tokenizer = Tokenizer(WordLevel(vocab={PAD_TOKEN: 0, UNK_TOKEN: 1}, unk_token=UNK_TOKEN))
    tokenizer.normalizer = report_normalizer(long_number_digits)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    trainer = WordLevelTrainer(
        vocab_size=max_vocab if max_vocab is not None else 2**31 - 1,
        min_frequency=min_count,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    tokenizer.train_from_iterator((text for text in texts if text is not None), trainer=trainer)
    if tokenizer.token_to_id(PAD_TOKEN) != 0 or tokenizer.token_to_id(UNK_TOKEN) != 1:
        raise RuntimeError("tokenizers did not place [PAD]=0 and [UNK]=1; this tokenizers version is unsupported.")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


__all__ = ["PAD_TOKEN", "UNK_TOKEN", "report_normalizer", "train_word_tokenizer"]
