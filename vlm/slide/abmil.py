"""Gated attention-based multiple-instance learning (ABMIL, Ilse, Tomczak & Welling 2018) as a slide probe.

Trained on each slide's patch features (or a slide encoder's patch tokens) with AdamW and early stopping on the
validation balanced accuracy; the global RNG is left untouched (seeded locally).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reportkd.evaluation import balanced_accuracy

from .data import pad_slides


def _bacc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return balanced_accuracy(labels.numpy(), probs.argmax(-1).numpy(), probs.shape[-1])


class GatedABMIL(nn.Module):
    """Gated attention-based MIL (Ilse, Tomczak & Welling 2018) over a padded batch of bags.

    Args:
        input_dim: Patch-feature width.
        num_classes: Classes.
        hidden: Width after the first layer.
        attention_dim: Width of the gated attention.
        dropout: Dropout after the first layer.
    """

    def __init__(
        self, input_dim: int, num_classes: int, *, hidden: int = 128, attention_dim: int = 64, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention_v = nn.Linear(hidden, attention_dim)
        self.attention_u = nn.Linear(hidden, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, C), attention (B, N))`` for bags ``x (B, N, D)`` with ``mask (B, N)``."""
        h = self.embed(x)
        a = self.attention_w(torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))).squeeze(-1)
        a = a.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.classifier((a.unsqueeze(-1) * h).sum(1)), a


def _bags(
    patches: Sequence[torch.Tensor], index: Sequence[int], max_patches: int | None, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    feats = []
    for i in index:
        p = patches[i]
        if max_patches is not None and p.shape[0] > max_patches:
            p = p[torch.randperm(p.shape[0], generator=generator)[:max_patches]]
        feats.append(p.float())
    batch = pad_slides(feats, [torch.zeros(len(f), 2, dtype=torch.long) for f in feats])
    return batch["features"], batch["patch_mask"]


@torch.no_grad()
def abmil_predict_proba(
    model: GatedABMIL, patches: Sequence[torch.Tensor], index: Sequence[int], *, batch_size: int = 16
) -> torch.Tensor:
    """``(len(index), C)`` class probabilities of the given slides (all their patches)."""
    model.eval()
    out = [
        model(*_bags(patches, index[i : i + batch_size], None, None))[0].softmax(-1)
        for i in range(0, len(index), batch_size)
    ]
    return torch.cat(out)


def train_abmil(
    patches: Sequence[torch.Tensor],
    labels: torch.Tensor,
    train_index: Sequence[int],
    val_index: Sequence[int],
    *,
    num_classes: int,
    hidden: int = 128,
    dropout: float = 0.25,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    max_epochs: int = 50,
    patience: int = 8,
    batch_size: int = 8,
    max_patches: int | None = 4096,
    seed: int = 0,
) -> tuple[GatedABMIL, dict[str, Any]]:
    """Trains :class:`GatedABMIL` with AdamW and early stopping on validation balanced accuracy (ties: lower loss).

    Args:
        patches: Per slide ``(N_i, D)`` patch features.
        labels: ``(S,)`` class ids.
        train_index: Training slides.
        val_index: Validation slides (early stopping).
        num_classes: Classes.
        hidden: Hidden width.
        dropout: Dropout.
        lr: Learning rate.
        weight_decay: AdamW weight decay.
        max_epochs: Epoch limit.
        patience: Epochs without validation improvement before stopping.
        batch_size: Bags per step (padded, masked).
        max_patches: Random patches per training bag (None: all).
        seed: Seed of initialisation, shuffling and patch sampling (global RNG untouched).

    Returns:
        The best model (on validation) and ``{"epochs", "best_epoch", "val_balanced_accuracy"}``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = GatedABMIL(patches[0].shape[-1], num_classes, hidden=hidden, dropout=dropout)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        train_index = list(train_index)
        best_state, best_key, best_epoch, epoch = None, None, 0, 0
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = [train_index[i] for i in torch.randperm(len(train_index), generator=gen)]
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                x, mask = _bags(patches, idx, max_patches, gen)
                loss = F.cross_entropy(model(x, mask)[0], labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            probs = abmil_predict_proba(model, patches, list(val_index))
            y = labels[list(val_index)]
            key = (_bacc(probs, y), -F.nll_loss(probs.clamp_min(1e-12).log(), y).item())
            if best_key is None or key > best_key:
                best_state, best_key, best_epoch = copy.deepcopy(model.state_dict()), key, epoch
            elif epoch - best_epoch >= patience:
                break
        model.load_state_dict(best_state)
    return model, {"epochs": epoch, "best_epoch": best_epoch, "val_balanced_accuracy": best_key[0]}
