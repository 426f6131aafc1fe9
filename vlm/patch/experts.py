"""Offline experts for demos and benchmarks: a patch encoder trained supervised on one synthetic task, then frozen.

Real runs distil public pathology encoders (``teachers: [uni_v1, conch_v1, ...]``); without network access, the
recipe and ``benchmarks/patch_distill.py`` make experts that are good at different things by training each on a
different labelled synthetic task (tissue class, nuclear size, ...).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .data import TileDataset, random_hed_jitter
from .modeling import PatchEncoder

logger = logging.getLogger(__name__)


def train_expert(
    encoder: PatchEncoder,
    data: TileDataset,
    task: str,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> PatchEncoder:
    """Trains ``encoder`` with a linear head on ``data.labels[task]`` (flips, HED jitter), then freezes it.

    Args:
        encoder: The expert to train (in place).
        data: Labelled tiles.
        task: The label to learn.
        steps: Optimiser steps (AdamW, one-cycle schedule).
        batch_size: Tiles per step.
        learning_rate: Peak learning rate.
        seed: Seed of the head and the batches.
    """
    if task not in data.labels:
        raise ValueError(f"The expert's task {task!r} is not a label of the tiles (labels: {sorted(data.labels)}).")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        y_all = data.labels[task]
        head = torch.nn.Linear(encoder.embedding_dim, int(y_all.max()) + 1)
        params = [*encoder.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=max(steps, 1),
                                                    pct_start=0.1)  # fmt: skip
        pixels = data.pixels()
        encoder.train().requires_grad_(True)
        for step in range(steps):
            idx = torch.randint(0, len(data), (batch_size,), generator=gen)
            x = random_hed_jitter(pixels[idx], sigma=0.05, bias=0.05)
            x = torch.where(torch.rand(batch_size, 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
            loss = F.cross_entropy(head(encoder(encoder.normalize(x))["embedding"]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 100 == 0 or step == steps - 1:
                logger.info("expert %s: step %d/%d, loss %.3f", task, step + 1, steps, loss.item())
    return encoder.eval().requires_grad_(False)
