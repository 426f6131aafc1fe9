"""Vectorized teacher ensemble of MtCNN members (De Angeli et al., JAMIA Open 2022).

The N members are one module: every parameter has a leading member axis, one forward pass runs all members on the
same input batch (fused conv + max-pool kernel, `modeling_mtcnn.conv_max_pool`, chunked over members), and one
optimizer step updates them all (use a foreach/fused optimizer, the `Trainer` default). The loss is the sum of the
members' losses, so each member receives exactly the gradient it would get if trained alone. Gradient clipping
must be per member too: with `Trainer`, set `max_grad_norm=0` and add `MemberGradClipCallback(max_norm)` (the
default global `max_grad_norm=1.0` would scale all members by one shared factor).

Bounded memory for large ensembles (64-1,000 members): with `config.member_chunk_size` set below N, the forward runs
members chunk by chunk end to end (convolution, heads, loss) and, when gradients are on, under activation
checkpointing, so only one chunk's activations are alive at a time (recomputed in the backward; results identical
to the unchunked pass, dropout masks aside). :func:`held_out_probability_sums` predicts member probabilities chunk
by chunk and keeps only per-report sums, never the (members, reports, classes) array. Measured on CPU
(``benchmarks/teacher_scaling.py``, 64 / 256 members): the tensors saved for the backward shrink 8x (16.7 -> 2.1 MB
at 256 members), but they were already small next to the parameters, gradients and AdamW state (~16 bytes per
parameter: 1.5 GB at 256 members), which set the peak, and a step costs 2-3x the time; leave it off (None) unless
activations are the limit (large batches on a GPU). To bound parameter memory, train the members in groups
(``reportkd.text.mtcnn.teachers``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import TrainerCallback
from transformers import initialization as init
from transformers.utils import ModelOutput

from reportkd.data import ReportCollator

from .configuration_mtcnn import MtCNNConfig, MtCNNEnsembleConfig
from .modeling_mtcnn import MtCNNForReportClassification, MtCNNPreTrainedModel, conv_max_pool, multitask_loss

# Config fields that must agree between members (everything that shapes weights or their meaning).
_ARCH_FIELDS = ("vocab_size", "embedding_dim", "num_filters", "kernel_sizes", "pad_token_id", "tasks", "task_labels")
_NOT_COPIED = ("model_type", "transformers_version", "architectures", "num_members", "share_embeddings")


@dataclass
class MtCNNEnsembleOutput(ModelOutput):
    """Output of `MtCNNEnsembleForReportClassification`.

    Args:
        loss: Sum over members of each member's multitask loss (when labels are given).
        logits: Task -> (N, B, C_t) logits of every member.
        member_losses: (N,) loss of each member.
        doc_embeddings: (N, B, H) pooled document embeddings before dropout.
    """

    loss: torch.FloatTensor | None = None
    logits: dict[str, torch.FloatTensor] | None = None
    member_losses: torch.FloatTensor | None = None
    doc_embeddings: torch.FloatTensor | None = None


class StackedEmbedding(nn.Module):
    """(M, V, E) embedding tables; M = members, or 1 when shared. Row `padding_idx` is initialised to zero."""

    def __init__(self, members: int, vocab: int, dim: int, padding_idx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, vocab, dim))
        self.padding_idx = padding_idx


class StackedConv1d(nn.Module):
    """Per-member `nn.Conv1d` weights (N, F, E, k) and biases (N, F)."""

    def __init__(self, members: int, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(members, out_channels))


class StackedLinear(nn.Module):
    """Per-member linear layers: (N, B, H) -> (N, B, C) with weights (N, C, H) and biases (N, C)."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(n, B, H) -> (n, B, C) for members ``start:stop`` (default all)."""
        weight, bias = self.weight[start:stop], self.bias[start:stop]
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def fold_member_mask(folds: torch.LongTensor, num_members: int, num_folds: int) -> torch.Tensor:
    """Out-of-fold training mask: member m holds out fold `m % num_folds` and trains on the other folds.

    Pass it as `member_mask` when training; its negation, as `member_mask` of `soft_labels`, gives out-of-fold
    soft labels (each report labelled only by members that never trained on it).

    Args:
        folds: (B,) fold id of each row, in [0, num_folds).
        num_members: Ensemble size (a multiple of num_folds gives each fold the same number of teachers).
        num_folds: Number of folds k.

    Returns:
        (num_members, B) bool mask, True where the member trains on the row.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}.")
    held_out = torch.arange(num_members, device=folds.device) % num_folds
    return folds.unsqueeze(0) != held_out.unsqueeze(1)


@torch.no_grad()
def clip_member_grad_norm_(model: MtCNNEnsembleForReportClassification, max_norm: float) -> torch.Tensor:
    """Clip each member's gradient norm separately (`clip_grad_norm_` over the whole ensemble would couple members).

    Parameters without a member axis (a shared embedding table) are left unclipped.

    Args:
        model: The ensemble, after `backward()`.
        max_norm: Largest allowed L2 norm of one member's gradient.

    Returns:
        (N,) member gradient norms before clipping.
    """
    n = model.num_members
    grads = [p.grad for p in model.parameters() if p.grad is not None and p.shape[0] == n]
    if not grads:
        return torch.zeros(n)
    norms = torch.stack([g.reshape(n, -1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype).view(n, *([1] * (g.dim() - 1))))
    return norms


class MemberGradClipCallback(TrainerCallback):
    """`Trainer` callback clipping each member's gradient norm; use it with `TrainingArguments(max_grad_norm=0)`.

    Args:
        max_norm: Largest allowed L2 norm of one member's gradient.
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = max_norm

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if isinstance(model, MtCNNEnsembleForReportClassification):
            clip_member_grad_norm_(model, self.max_norm)


class MtCNNEnsembleForReportClassification(MtCNNPreTrainedModel):
    """N independent MtCNN members trained together as one vectorized module.

    Args:
        config: `MtCNNEnsembleConfig` (a plain `MtCNNConfig` is converted); `num_members` sets N,
            `share_embeddings` one embedding table for all members (default: one each).
    """

    config_class = MtCNNEnsembleConfig
    # `MtCNNDistillationTrainer` computes the loss itself (the same function, normalised by the (N, T) per-member
    # counts of the whole accumulation step and all processes). A plain `Trainer` uses `forward`'s per-batch mean
    # (`accepts_loss_kwargs` stays False, so it divides by the accumulation steps).

    def __init__(self, config: MtCNNConfig) -> None:
        if not isinstance(config, MtCNNEnsembleConfig):
            config = MtCNNEnsembleConfig(**_config_kwargs(config), num_members=config.num_members)
        super().__init__(config)
        n = config.num_members
        self.embeddings = StackedEmbedding(
            1 if config.share_embeddings else n, config.vocab_size, config.embedding_dim, config.pad_token_id
        )
        self.convs = nn.ModuleList(
            StackedConv1d(n, config.embedding_dim, config.num_filters, k) for k in config.kernel_sizes
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifiers = nn.ModuleDict(
            {task: StackedLinear(n, config.hidden_size, c) for task, c in config.num_labels.items()}
        )
        self.post_init()

    @property
    def num_members(self) -> int:
        return self.config.num_members

    def _init_weights(self, module: nn.Module) -> None:
        # Xavier-uniform per member (fans of one member's layer); every member draws its own values.
        if isinstance(module, StackedEmbedding):
            init.normal_(module.weight, mean=0.0, std=self.config.embedding_init_std)
            if not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[:, module.padding_idx])
        elif isinstance(module, (StackedConv1d, StackedLinear)):
            fan_out, fan_in = module.weight.shape[1], module.weight.shape[2]
            receptive = module.weight[0, 0, 0].numel()
            bound = math.sqrt(6.0 / ((fan_in + fan_out) * receptive))
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        member_mask: torch.Tensor | None = None,
        member_mask_by_row: torch.Tensor | None = None,
        **kwargs,
    ) -> MtCNNEnsembleOutput:
        """Logits of every member and, with labels, the summed member losses.

        Args:
            input_ids: (B, L) token ids shared by all members.
            attention_mask: Optional (B, L) mask.
            labels: Optional (B, T) class ids in `config.task_names` order, -100 for a missing label.
            member_mask: Optional (N, B) bool; member m trains only on rows where it is True (bagging,
                out-of-fold training). Rows are still computed for every member, they just carry no loss.
            member_mask_by_row: The same mask as (B, N), the layout a data collator builds from a per-example
                column; give one of the two.
            **kwargs: `num_items_in_batch`: (N, T) labelled rows per member and task over the accumulation step and
                processes (custom training loops; `MtCNNDistillationTrainer` computes its loss itself); others
                are ignored.
        """
        num_items = kwargs.get("num_items_in_batch")
        if not (torch.is_tensor(num_items) and num_items.dim() >= 1):
            num_items = None  # a plain count (or none): this batch's own per-member counts
        if member_mask_by_row is not None:
            if member_mask is not None:
                raise ValueError("Give member_mask (N, B) or member_mask_by_row (B, N), not both.")
            member_mask = member_mask_by_row.transpose(0, 1)
        chunk = self.config.member_chunk_size or self.num_members
        if chunk >= self.num_members:
            features, logits = self._members_forward(0, self.num_members, input_ids, attention_mask)
        else:  # bounded memory: chunks end to end, each recomputed in the backward (activation checkpointing)
            parts = []
            for start in range(0, self.num_members, chunk):
                stop = min(self.num_members, start + chunk)
                if torch.is_grad_enabled():
                    parts.append(checkpoint(self._chunk_outputs, start, stop, input_ids, attention_mask,
                                            use_reentrant=False))  # fmt: skip
                else:
                    parts.append(self._chunk_outputs(start, stop, input_ids, attention_mask))
            features = torch.cat([p[0] for p in parts])
            logits = {t: torch.cat([p[1 + i] for p in parts]) for i, t in enumerate(self.config.task_names)}
        loss = member_losses = None
        if labels is not None:
            member_losses = multitask_loss(logits, labels, self.config.task_names, member_mask, num_items)
            loss = member_losses.sum()
        return MtCNNEnsembleOutput(loss=loss, logits=logits, member_losses=member_losses, doc_embeddings=features)

    def _members_forward(
        self, start: int, stop: int, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pooled features (n, B, H) and task logits (n, B, C_t) of members ``start:stop``."""
        table = self.embeddings.weight
        features = conv_max_pool(
            self.config,
            table if table.shape[0] == 1 else table[start:stop],
            [conv.weight[start:stop] for conv in self.convs],
            [conv.bias[start:stop] for conv in self.convs],
            input_ids,
            attention_mask,
        )
        hidden = self.dropout(features)
        return features, {task: self.classifiers[task](hidden, start, stop) for task in self.config.task_names}

    def _chunk_outputs(self, start, stop, input_ids, attention_mask) -> tuple[torch.Tensor, ...]:
        features, logits = self._members_forward(start, stop, input_ids, attention_mask)
        return (features, *logits.values())  # a tuple of tensors, as activation checkpointing needs

    def soft_labels(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        temperature: float = 1.0,
        member_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher soft labels: mean over members of softmax(logits / temperature), in eval mode, no gradients.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: Optional (B, L) mask.
            temperature: Softmax temperature (> 0).
            member_mask: Optional (N, B) bool: average only the members marked True for each row (e.g.
                `~fold_member_mask(...)` for out-of-fold labels); every row needs at least one member.

        Returns:
            Task -> (B, C_t) probabilities.
        """
        out = self._predict(lambda: self(input_ids, attention_mask=attention_mask), temperature)
        weights = None
        if member_mask is not None:
            shape = (self.num_members, input_ids.shape[0])
            if member_mask.shape != shape:
                raise ValueError(
                    f"member_mask must be (num_members, batch) = {shape}, got {tuple(member_mask.shape)}."
                )
            weights = member_mask.to(device=input_ids.device, dtype=torch.float32)
            if bool((weights.sum(0) == 0).any()):
                raise ValueError("member_mask leaves a row without any member; every row needs one teacher.")
        result = {}
        for task, logits in out.logits.items():
            probs = F.softmax(logits.float() / temperature, dim=-1)
            if weights is None:
                result[task] = probs.mean(0)
            else:
                result[task] = (probs * weights.unsqueeze(-1)).sum(0) / weights.sum(0).unsqueeze(-1)
        return result

    predict_proba = soft_labels

    def member(self, index: int) -> MtCNNForReportClassification:
        """A standalone `MtCNNForReportClassification` holding copies of member `index`'s exact weights.

        Args:
            index: Member index in [0, N).
        """
        if not -self.num_members <= index < self.num_members:
            raise IndexError(f"member index {index} out of range for an ensemble of {self.num_members} members.")
        index %= self.num_members
        config = MtCNNConfig(**_config_kwargs(self.config))
        model = MtCNNForReportClassification(config)
        table = self.embeddings.weight
        state = {"embeddings.weight": table[index if table.shape[0] > 1 else 0]}
        for j, conv in enumerate(self.convs):
            state[f"convs.{j}.weight"], state[f"convs.{j}.bias"] = conv.weight[index], conv.bias[index]
        for task, head in self.classifiers.items():
            state[f"classifiers.{task}.weight"], state[f"classifiers.{task}.bias"] = (
                head.weight[index],
                head.bias[index],
            )
        model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        return model.to(device=table.device, dtype=table.dtype).train(self.training)

    @classmethod
    def from_members(cls, members: Sequence[MtCNNForReportClassification]) -> MtCNNEnsembleForReportClassification:
        """Stack trained single models (same architecture and tasks) into an ensemble with copies of their weights.

        Args:
            members: At least one `MtCNNForReportClassification`.
        """
        if not members:
            raise ValueError("from_members needs at least one member.")
        first = members[0].config
        for i, m in enumerate(members):
            if not isinstance(m, MtCNNForReportClassification):
                raise TypeError(f"member {i} is a {type(m).__name__}, expected MtCNNForReportClassification.")
            diff = [f for f in _ARCH_FIELDS if getattr(m.config, f) != getattr(first, f)]
            if diff:
                raise ValueError(
                    f"member {i} differs from member 0 in {diff}; members must share architecture and tasks."
                )
        config = MtCNNEnsembleConfig(**_config_kwargs(first), num_members=len(members))
        ensemble = cls(config)
        states = [m.state_dict() for m in members]
        with torch.no_grad():
            ensemble.embeddings.weight.copy_(torch.stack([s["embeddings.weight"] for s in states]))
            for j, conv in enumerate(ensemble.convs):
                conv.weight.copy_(torch.stack([s[f"convs.{j}.weight"] for s in states]))
                conv.bias.copy_(torch.stack([s[f"convs.{j}.bias"] for s in states]))
            for task, head in ensemble.classifiers.items():
                head.weight.copy_(torch.stack([s[f"classifiers.{task}.weight"] for s in states]))
                head.bias.copy_(torch.stack([s[f"classifiers.{task}.bias"] for s in states]))
        return ensemble.to(device=members[0].device, dtype=members[0].dtype)


@torch.no_grad()
def held_out_probability_sums(
    model: nn.Module,
    dataset: Dataset,
    weights: np.ndarray | None = None,
    *,
    pad_token_id: int = 0,
    batch_size: int = 128,
    temperature: float = 1.0,
    member_chunk_size: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per report: the weighted sum over members of softmax(logits / temperature), and the sum of the weights.

    An ensemble's members are predicted ``member_chunk_size`` at a time (default the config's, else all) and only the
    sums are kept, so 1,000 members need no (members, reports, classes) array. Dividing the sums by the weights
    (with ``weights = ~training mask``) gives out-of-fold soft labels; adding the sums of several models gives the
    mean over all their members (mixed teachers, :mod:`reportkd.text.mtcnn.teachers`).

    Args:
        model: An MtCNN ensemble, or any single report classifier (MtCNN, HiSAN: one member).
        dataset: Rows with ``input_ids``.
        weights: Optional (members, reports) weights (bool or float), e.g. the members that did not train on each
            report; default 1 everywhere.
        pad_token_id: Padding id of the tokenizer.
        batch_size: Reports per forward pass.
        temperature: Softmax temperature (> 0).
        member_chunk_size: Members per forward pass (ensembles only).

    Returns:
        Task -> (reports, classes) weighted sums, and the (reports,) weight totals.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    is_ensemble = isinstance(model, MtCNNEnsembleForReportClassification)
    n_members = model.num_members if is_ensemble else 1
    n_rows = len(dataset)
    if weights is None:
        weights = np.ones((n_members, n_rows), dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (n_members, n_rows):
        raise ValueError(f"weights must be (members, reports) = {(n_members, n_rows)}, got {weights.shape}.")
    chunk = member_chunk_size or (model.config.member_chunk_size if is_ensemble else None) or n_members
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    min_length = max(getattr(model.config, "kernel_sizes", None) or [1])
    collate = ReportCollator(pad_token_id=pad_token_id, min_length=min_length)
    sums = {task: np.zeros((n_rows, n), dtype=np.float64) for task, n in model.config.num_labels.items()}
    try:
        for begin in range(0, n_rows, batch_size):
            rows = slice(begin, min(n_rows, begin + batch_size))
            batch = collate([{"input_ids": ids} for ids in dataset[rows]["input_ids"]])
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            for start in range(0, n_members, chunk):
                stop = min(n_members, start + chunk)
                if is_ensemble:
                    logits = model._members_forward(start, stop, ids, mask)[1]
                else:
                    logits = {t: v.unsqueeze(0) for t, v in model(input_ids=ids, attention_mask=mask).logits.items()}
                w = torch.from_numpy(weights[start:stop, rows]).to(device).unsqueeze(-1)
                for task, value in logits.items():
                    probs = F.softmax(value[..., : sums[task].shape[1]].float() / temperature, -1)
                    sums[task][rows] += (probs * w).sum(0).double().cpu().numpy()
    finally:
        model.train(was_training)
    return sums, weights.sum(0)


def _config_kwargs(config: MtCNNConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_COPIED}


__all__ = [
    "MemberGradClipCallback",
    "MtCNNEnsembleForReportClassification",
    "MtCNNEnsembleOutput",
    "StackedConv1d",
    "StackedEmbedding",
    "StackedLinear",
    "clip_member_grad_norm_",
    "fold_member_mask",
    "held_out_probability_sums",
]
