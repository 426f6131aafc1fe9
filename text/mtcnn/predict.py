"""Prediction helpers shared by the MtCNN job, the DAC trainer, the CLI and the benchmarks.

Kept apart from the job and the trainers so that every module can import them without an import circle.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from reportkd.data import ReportCollator


@torch.no_grad()
def predict_member_probs(
    model,
    dataset: Dataset,
    *,
    pad_token_id: int = 0,
    batch_size: int = 128,
    temperature: float = 1.0,
    with_abstain: bool = False,
) -> dict[str, np.ndarray]:
    """Softmax per task: ``(M, N, C)`` per member for an ensemble, ``(N, C)`` for a single model.

    Args:
        model: An MtCNN or MtCNN ensemble.
        dataset: Rows with ``input_ids``.
        pad_token_id: Padding id of the tokenizer.
        batch_size: Prediction batch size.
        temperature: Softmax temperature (1 = the model's probabilities).
        with_abstain: DAC models: ``C + 1`` probabilities with the abstain class last (default: the real classes,
            renormalised).
    """
    model.eval()
    min_length = max(getattr(model.config, "kernel_sizes", [1]))
    loader = DataLoader(
        dataset.select_columns(["input_ids"]),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=ReportCollator(pad_token_id=pad_token_id, min_length=min_length),
    )
    device = next(model.parameters()).device
    cut = -1 if getattr(model.config, "abstain_class", False) and not with_abstain else None
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in tqdm(loader, desc="Predicting", leave=False):
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        for task, logits in out.logits.items():
            chunks.setdefault(task, []).append(torch.softmax(logits[..., :cut].float() / temperature, -1).cpu())
    # an ensemble's logits are (members, batch, C), a one-member ensemble's too: join along the batch axis
    return {t: torch.cat(c, dim=c[0].ndim - 2).numpy() for t, c in chunks.items()}


def predict_probs(model, dataset: Dataset, **kwargs) -> dict[str, np.ndarray]:
    """``(N, C)`` probabilities per task; an ensemble's are the mean of its members' softmax.

    Args:
        model: An MtCNN or MtCNN ensemble.
        dataset: Rows with ``input_ids``.
        **kwargs: ``pad_token_id``, ``batch_size``, ``temperature``, ``with_abstain`` (see
            :func:`predict_member_probs`).
    """
    probs = predict_member_probs(model, dataset, **kwargs)
    # an ensemble's are (members, N, C), a one-member ensemble's too
    return {t: p.mean(0) if p.ndim == 3 else p for t, p in probs.items()}


def labels_by_task(dataset: Dataset, task_labels: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Task → ``(N,)`` label ids (``-100`` = missing) from the ``labels`` column.

    Args:
        dataset: Encoded reports with a ``labels`` column (one id per task, in ``task_labels`` order).
        task_labels: Task → label names, as in the model config.
    """
    labels = np.asarray(dataset["labels"], dtype=np.int64).reshape(len(dataset), len(task_labels))
    return {t: labels[:, i] for i, t in enumerate(task_labels)}


__all__ = ["labels_by_task", "predict_member_probs", "predict_probs"]
