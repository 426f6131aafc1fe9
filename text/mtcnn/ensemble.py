"""Vectorized teacher ensemble of MtCNN members (De Angeli et al., JAMIA Open 2022).

The N members are one module: every parameter has a leading member axis, one forward pass runs all members on the
same input batch (fused conv + max-pool kernel, `modeling_mtcnn.conv_max_pool`, chunked over members), and one
optimizer step updates them all (use a foreach/fused optimizer, the `Trainer` default). The loss is the sum of the
members' losses, so each member receives exactly the gradient it would get if trained alone. Gradient clipping
must be per member too: with `Trainer`, set `max_grad_norm=0` and add `MemberGradClipCallback(max_norm)` (the
default global `max_grad_norm=1.0` would scale all members by one shared factor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback
from transformers import initialization as init
from transformers.utils import ModelOutput

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


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
        features = conv_max_pool(
            self.config,
            self.embeddings.weight,
            [conv.weight for conv in self.convs],
            [conv.bias for conv in self.convs],
            input_ids,
            attention_mask,
        )
        hidden = self.dropout(features)
        logits = {task: self.classifiers[task](hidden) for task in self.config.task_names}
        loss = member_losses = None
        if labels is not None:
            member_losses = multitask_loss(logits, labels, self.config.task_names, member_mask, num_items)
            loss = member_losses.sum()
        return MtCNNEnsembleOutput(loss=loss, logits=logits, member_losses=member_losses, doc_embeddings=features)

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
]
