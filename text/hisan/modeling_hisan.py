"""Multitask hierarchical self-attention network (HiSAN) report classifier (Gao et al., 2018/2019; ORNL's FrESCO).

Words → lines of ``words_per_line`` words: word-level multi-head self-attention, then target attention (a learned
query per head) pools each line into a vector; lines → document: line-level self-attention and target attention;
one linear head per task. Padded positions never receive attention and empty lines are skipped, so a report gives
the same probabilities alone or padded in a batch. Same inputs, outputs, loss and ``predict_proba`` as
:class:`reportkd.text.mtcnn.MtCNNForReportClassification`, so it trains with the same trainers and job stages.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..mtcnn.modeling_mtcnn import MtCNNOutput, MtCNNPreTrainedModel, multitask_loss
from .configuration_hisan import HiSANConfig


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, dropout: nn.Module | None = None
) -> torch.Tensor:
    """Scaled dot-product attention over the valid keys only; a query without valid keys gets a zero output.

    Args:
        q: (..., heads, Q, d) queries.
        k: (..., heads, K, d) keys.
        v: (..., heads, K, d_v) values.
        key_mask: (..., K) bool, True for valid keys.
        dropout: Optional dropout on the attention weights.
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    keep = key_mask[..., None, None, :]
    # a finite fill (not -inf) keeps all-masked rows finite; multiplying by the mask then zeroes them exactly
    weights = torch.softmax(scores.masked_fill(~keep, torch.finfo(scores.dtype).min), -1) * keep.to(scores.dtype)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v


class HierarchicalLevel(nn.Module):
    """One level of HiSAN: multi-head self-attention (ELU projections) over a sequence, then target attention.

    Args:
        in_dim: Size of the input vectors.
        heads: Attention heads.
        dim_per_head: Size of one head.
        dropout: Dropout on the attention weights.
    """

    def __init__(self, in_dim: int, heads: int, dim_per_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_per_head = heads, dim_per_head
        total = heads * dim_per_head
        self.query, self.key, self.value = (nn.Linear(in_dim, total) for _ in range(3))
        self.target = nn.Parameter(torch.empty(heads, 1, dim_per_head))
        self.attention_dropout = nn.Dropout(dropout)
        self.target_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x).unflatten(-1, (self.heads, self.dim_per_head)).transpose(-2, -3)  # (..., heads, S, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, S, in_dim) sequences with (N, S) bool mask → (N, heads * dim_per_head) pooled vectors."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        attended = masked_attention(q, k, v, mask, self.attention_dropout)
        pooled = masked_attention(self.target.to(attended.dtype), attended, attended, mask, self.target_dropout)
        return pooled.squeeze(-2).flatten(-2)  # (N, heads, 1, d) -> (N, heads * d)


class HiSANForReportClassification(MtCNNPreTrainedModel):
    """Multitask HiSAN over word embeddings: one softmax head per task.

    Args:
        config: A :class:`HiSANConfig`.
    """

    config_class = HiSANConfig
    base_model_prefix = "hisan"

    def __init__(self, config: HiSANConfig) -> None:
        super().__init__(config)
        heads, per_head = config.attention_heads, config.attention_dim_per_head
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.word_level = HierarchicalLevel(config.embedding_dim, heads, per_head, config.dropout)
        self.line_level = HierarchicalLevel(config.hidden_size, heads, per_head, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.classifiers = nn.ModuleDict(
            {task: nn.Linear(config.hidden_size, n) for task, n in config.num_outputs.items()}
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, HierarchicalLevel):
            init.uniform_(module.target, 0.0, 1.0)  # FrESCO: uniform target vectors
        else:
            super()._init_weights(module)  # normal embeddings (zero pad row), Xavier linears with zero biases

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Document embeddings (B, heads * dim_per_head) before the final dropout.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: Optional (B, L) mask; masked positions are treated as padding.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
        vocab = self.config.vocab_size
        if input_ids.numel() and bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            raise ValueError(
                f"input_ids hold ids outside [0, {vocab}); tokenize with the model's tokenizer or set vocab_size "
                "to the tokenizer's length."
            )
        pad, width = self.config.pad_token_id, self.config.words_per_line
        valid = input_ids != pad
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                    f"{tuple(input_ids.shape)}."
                )
            valid &= attention_mask.bool()
        used = valid.any(0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 0
        n_lines = max(1, math.ceil(length / width))  # lines after the batch's last token are dropped
        extra = n_lines * width - length
        ids = F.pad(input_ids[:, :length].masked_fill(~valid[:, :length], pad), (0, extra), value=pad)
        valid = F.pad(valid[:, :length], (0, extra), value=False)
        batch = ids.shape[0]
        ids, valid = ids.view(batch, n_lines, width), valid.view(batch, n_lines, width)
        line_valid = valid.any(-1)  # (B, n_lines): empty lines skip the word level
        words = self.dropout(self.embeddings(ids[line_valid]))  # (R, W, E)
        line_vectors = self.word_level(words, valid[line_valid])  # (R, H)
        lines = line_vectors.new_zeros(batch, n_lines, line_vectors.shape[-1])
        lines[line_valid] = line_vectors
        return self.line_level(self.dropout(lines), line_valid)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MtCNNOutput:
        """Logits of every task and, with labels, the multitask loss (as `MtCNNForReportClassification`).

        Args:
            input_ids: (B, L) token ids (right-padded).
            attention_mask: Optional (B, L) mask; masked positions are treated as padding.
            labels: Optional (B, T) class ids in `config.task_names` order, -100 for a missing label.
            **kwargs: Ignored (e.g. `num_items_in_batch` from `Trainer`).
        """
        features = self.encode(input_ids, attention_mask)
        hidden = self.dropout(features)
        logits = {task: self.classifiers[task](hidden) for task in self.config.task_names}
        loss = None
        if labels is not None:
            stacked = {task: value.unsqueeze(0) for task, value in logits.items()}
            loss = multitask_loss(stacked, labels, self.config.task_names)[0]
        return MtCNNOutput(loss=loss, logits=logits, doc_embeddings=features)

    def predict_proba(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, temperature: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """Class probabilities softmax(logits / temperature) per task, in eval mode and without gradients.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: Optional (B, L) mask.
            temperature: Softmax temperature (> 0).
        """
        out = self._predict(lambda: self(input_ids, attention_mask=attention_mask), temperature)
        return {task: F.softmax(value.float() / temperature, dim=-1) for task, value in out.logits.items()}


__all__ = ["HiSANForReportClassification", "HierarchicalLevel", "masked_attention"]
