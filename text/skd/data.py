"""Prompt-completion batches in the layout of :class:`~reportkd.text.skd.SKDTrainer`: ``[prompt | completion]``.

Prompts are left-padded to a common width ``P`` and completions right-padded to ``C``, so every row's completion
starts at column ``P``: the student's logits for the completion are the last ``C + 1`` positions minus one (the
first response token included), for dataset and sampled completions alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (left padding and holes do not shift positions)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class PromptCompletionCollator:
    """Tokenizes ``prompt`` / ``completion`` rows (or takes ``prompt_input_ids`` / ``completion_input_ids``).

    Rows may be plain strings or conversations (lists of ``{"role", "content"}`` messages, rendered with the
    tokenizer's chat template). The completion ends with EOS and every completion token is a label; prompt and
    padding labels are ``-100``.

    Args:
        tokenizer: The shared tokenizer (needs an EOS token; pads with EOS when it has no pad token).
        max_prompt_length: Longer prompts keep their last tokens (``None``: no limit).
        max_completion_length: Longer completions are cut (EOS then dropped) (``None``: no limit).
    """

    tokenizer: Any
    max_prompt_length: int | None = 512
    max_completion_length: int | None = 128

    def __post_init__(self) -> None:
        if self.tokenizer.eos_token_id is None:
            raise ValueError("The tokenizer has no EOS token: set tokenizer.eos_token so completions can end.")

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def encode(self, row: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        """Token ids of a row's prompt and completion (with EOS)."""
        if "prompt_input_ids" in row:
            prompt, completion = list(row["prompt_input_ids"]), list(row.get("completion_input_ids") or [])
        else:
            if "prompt" not in row:
                raise KeyError(f"Rows need 'prompt' and 'completion' (or pre-tokenized ids); got keys {sorted(row)}.")
            prompt, completion = self._encode_text(row["prompt"], row.get("completion"))
        if completion and completion[-1] != self.tokenizer.eos_token_id:
            completion = completion + [self.tokenizer.eos_token_id]
        if self.max_prompt_length is not None:
            prompt = prompt[-self.max_prompt_length :]
        if self.max_completion_length is not None:
            completion = completion[: self.max_completion_length]
        return prompt, completion

    def _encode_text(self, prompt, completion) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if isinstance(prompt, Sequence) and not isinstance(prompt, str):  # conversational
            prompt_text = tok.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
            completion_text = ""
            if completion:
                full = tok.apply_chat_template(list(prompt) + list(completion), tokenize=False)
                if not full.startswith(prompt_text):
                    raise ValueError("The chat template renders the prompt differently inside the conversation.")
                completion_text = full[len(prompt_text) :]
            prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
            return prompt_ids, tok(completion_text, add_special_tokens=False)["input_ids"] if completion_text else []
        prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        completion_ids = tok(completion, add_special_tokens=False)["input_ids"] if completion else []
        return prompt_ids, completion_ids

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(r) for r in rows]
        return collate_prompt_completion(encoded, self.pad_token_id)


def collate_prompt_completion(
    encoded: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Builds ``prompt_input_ids`` / ``prompt_attention_mask`` and ``input_ids`` / ``attention_mask`` / ``labels``.

    Args:
        encoded: ``(prompt_ids, completion_ids)`` per row.
        pad_token_id: Padding token id.
    """
    if any(len(p) == 0 for p, _ in encoded):
        raise ValueError("Empty prompt: every row needs at least one prompt token.")
    width_p = max(len(p) for p, _ in encoded)
    width_c = max(max(len(c) for _, c in encoded), 1)
    batch = len(encoded)
    prompt = torch.full((batch, width_p), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((batch, width_p), dtype=torch.long)
    completion = torch.full((batch, width_c), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((batch, width_c), dtype=torch.long)
    for i, (p, c) in enumerate(encoded):
        if p:
            prompt[i, width_p - len(p) :] = torch.tensor(p)
            prompt_mask[i, width_p - len(p) :] = 1
        if c:
            completion[i, : len(c)] = torch.tensor(c)
            completion_mask[i, : len(c)] = 1
    labels = torch.cat(
        [torch.full_like(prompt, IGNORE_INDEX), completion.masked_fill(completion_mask == 0, IGNORE_INDEX)], 1
    )
    return {
        "prompt_input_ids": prompt,
        "prompt_attention_mask": prompt_mask,
        "input_ids": torch.cat([prompt, completion], 1),
        "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
        "labels": labels,
    }
