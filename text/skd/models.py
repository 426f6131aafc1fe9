"""Offline building blocks: a byte-level BPE tokenizer trained on a corpus and causal LMs built from a config.

On a machine with the model hub, recipes take hub ids instead; these helpers make the same recipes run offline
(and give tests tiny random models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2, lowercase: bool = False
) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer (``tokenizers``) and wraps it as a ``PreTrainedTokenizerFast``.

    Args:
        texts: Training texts (prompts and completions).
        vocab_size: Vocabulary size including the special tokens ``<pad> </s> <s> <unk>``.
        min_frequency: Minimum pair frequency of a merge.
        lowercase: Lower-case text before tokenizing.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def causal_lm_from_config(
    config: Mapping[str, Any], tokenizer: Any = None, *, seed: int | None = None
) -> PreTrainedModel:
    """A randomly initialised causal LM from a config dict (``model_type`` plus that family's fields).

    Args:
        config: E.g. ``{"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, ...}``.
        tokenizer: Sets ``vocab_size`` and the pad / bos / eos ids when given.
        seed: Seed of the initialisation.
    """
    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError("The model config needs a 'model_type' (e.g. 'llama' or 'gpt2').")
    if tokenizer is not None:
        config.setdefault("vocab_size", len(tokenizer))
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(tokenizer, name, None) is not None:
                config.setdefault(name, getattr(tokenizer, name))
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
