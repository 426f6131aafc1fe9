"""CoD: counterfactual-explanation-infused distillation for MtCNN teachers (Chen et al., ICLR 2023, "CoD").

For a report and a task, :func:`counterfactual_edits` finds a small set of words whose deletion flips the teacher's
prediction: greedy, gradient × input saliency (the word whose embedding supports the current prediction most is
deleted, every occurrence, then the saliency is recomputed), at most ``max_edits`` words. Once the prediction flips,
edits are pruned until the set is *1-minimal*: putting back any single deleted word undoes the flip (tested).
Saliency is per report even in a batch: each report gets private copies of its embedding rows.

:func:`counterfactual_transfer_set` turns them into transfer data for the student: the edited reports, labelled
by the teacher (soft labels only: no hard labels), with ids ``"<id>#cf-<task>"`` and the source id kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class Counterfactual:
    """One counterfactual: the edited token ids and what changed.

    Args:
        index: Row of the source report in the input.
        task: Task whose prediction flips.
        input_ids: Token ids with the deleted words removed.
        deleted: Deleted token ids (each stands for every occurrence of that word).
        original: The teacher's class before the edit.
        flipped_to: The teacher's class after it.
    """

    index: int
    task: str
    input_ids: list[int]
    deleted: list[int] = field(default_factory=list)
    original: int = -1
    flipped_to: int = -1


def _delete(ids: Sequence[int], words: Sequence[int]) -> list[int]:
    drop = set(words)
    kept = [t for t in ids if t not in drop]
    return kept


def _batch(rows: list[list[int]], pad: int, min_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(min_length, max(len(r) for r in rows))
    ids = torch.full((len(rows), length), pad, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long, device=device)
    return ids, (ids != pad).long()


def _mean_probs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, task: str) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask)["logits"][task].float()
    probs = logits.softmax(-1)
    return probs.mean(0) if probs.dim() == 3 else probs  # ensembles: mean over members


@torch.no_grad()
def predict_classes(model: nn.Module, rows: list[list[int]], task: str, pad: int, min_length: int) -> np.ndarray:
    """The teacher's class (eval mode) for each row of token ids (mean softmax over members for an ensemble)."""
    device = next(model.parameters()).device
    ids, mask = _batch(rows, pad, min_length, device)
    was_training = model.training
    model.eval()
    try:
        return _mean_probs(model, ids, mask, task).argmax(-1).cpu().numpy()
    finally:
        model.train(was_training)


def _saliency(model: nn.Module, rows: list[list[int]], task: str, targets: np.ndarray, pad: int, min_length: int):
    """Per row, token id → gradient × input of log p(target) w.r.t. that word's embedding (all occurrences)."""
    emb = model.embeddings
    table = emb.weight
    stacked = table if table.dim() == 3 else table.unsqueeze(0)  # (M, V, E)
    head = pad + 1  # rows 0..pad keep their ids (special tokens); each report's words get private rows after them
    uniques, remapped, offset = [], [], head
    for r in rows:
        uniq, inverse = np.unique(np.asarray(r, dtype=np.int64), return_inverse=True)
        uniques.append(uniq)
        remapped.append([int(u) if u < head else int(offset + j) for u, j in zip(np.asarray(r), inverse)])
        offset += len(uniq)
    gather = torch.as_tensor(np.concatenate([np.arange(head), *uniques]), device=table.device)
    private = stacked.detach()[:, gather].clone().requires_grad_(True)
    original = emb.weight
    try:
        emb.weight = nn.Parameter(private if table.dim() == 3 else private[0], requires_grad=True)
        ids, mask = _batch(remapped, pad, min_length, table.device)
        probs = _mean_probs(model, ids, mask, task)
        chosen = probs[torch.arange(len(rows)), torch.as_tensor(targets, device=probs.device)]
        chosen.clamp_min(1e-12).log().sum().backward()
        grad = emb.weight.grad
        grad = grad if grad.dim() == 3 else grad.unsqueeze(0)
        score = (grad * private.detach()).sum((0, 2)).cpu().numpy()  # (rows,) summed over members and dims
    finally:
        emb.weight = original
    out, offset = [], head
    for uniq in uniques:
        out.append({int(u): float(score[offset + j]) for j, u in enumerate(uniq) if u >= head})
        offset += len(uniq)
    return out


def counterfactual_edits(
    model: nn.Module,
    rows: Sequence[Sequence[int]],
    task: str,
    *,
    max_edits: int = 4,
    pad_token_id: int = 0,
    min_length: int = 5,
    protected: Sequence[int] = (),
) -> list[Counterfactual | None]:
    """Greedy saliency-guided word deletions (≤ ``max_edits`` words) that flip the teacher's class for ``task``.

    Args:
        model: The teacher (an MtCNN or MtCNN ensemble); used in eval mode, its weights are not changed.
        rows: Token ids of the reports (one batch).
        task: The task whose prediction should flip.
        max_edits: Most words deleted.
        pad_token_id: Padding id.
        min_length: Pad to at least this length (the widest convolution window).
        protected: Token ids never deleted (e.g. ``[UNK]``).

    Returns:
        Per row a :class:`Counterfactual` (1-minimal: restoring any one deleted word undoes the flip), or None
        when ``max_edits`` deletions do not flip it.
    """
    was_training = model.training
    model.eval()
    try:
        rows = [list(map(int, r)) for r in rows]
        original = predict_classes(model, rows, task, pad_token_id, min_length)
        edits: list[list[int]] = [[] for _ in rows]
        current = [list(r) for r in rows]
        active = list(range(len(rows)))
        skip = set(protected)
        for _ in range(max_edits):
            if not active:
                break
            sal = _saliency(model, [current[i] for i in active], task, original[active], pad_token_id, min_length)
            for i, scores in zip(active, sal):
                candidates = {t: s for t, s in scores.items() if t not in skip and t not in edits[i]}
                if candidates and len(current[i]) > 1:
                    word = max(candidates, key=candidates.get)
                    edits[i].append(word)
                    current[i] = _delete(current[i], [word]) or current[i][:1]
            now = predict_classes(model, [current[i] for i in active], task, pad_token_id, min_length)
            active = [i for i, c in zip(active, now) if c == original[i]]
        done = set(range(len(rows))) - set(active)
        out: list[Counterfactual | None] = [None] * len(rows)
        for i in sorted(done):
            words = _prune(model, rows[i], edits[i], task, int(original[i]), pad_token_id, min_length)
            ids = _delete(rows[i], words)
            flipped = int(predict_classes(model, [ids], task, pad_token_id, min_length)[0])
            out[i] = Counterfactual(i, task, ids, words, int(original[i]), flipped)
        return out
    finally:
        model.train(was_training)


def _prune(model, row, words, task, original, pad, min_length) -> list[int]:
    """Drops deletions that are not needed until restoring any single one undoes the flip (1-minimal)."""
    words = list(words)
    changed = True
    while changed and len(words) > 1:
        changed = False
        trials = [[w for w in words if w != drop] for drop in words]
        classes = predict_classes(model, [_delete(row, t) for t in trials], task, pad, min_length)
        for trial, cls in zip(trials, classes):
            if cls != original:  # still flipped without this word: not needed
                words, changed = trial, True
                break
    return words


def counterfactual_transfer_set(
    model: nn.Module,
    dataset: Any,
    tasks: Sequence[str],
    *,
    max_edits: int = 4,
    pad_token_id: int = 0,
    min_length: int = 5,
    batch_size: int = 32,
    protected: Sequence[int] = (),
    rows: Sequence[int] | None = None,
) -> dict[str, list]:
    """Counterfactuals of ``dataset`` rows as transfer data: one per row and task that flips, task cycled by row.

    Args:
        model: The teacher.
        dataset: Rows with ``id`` and ``input_ids``.
        tasks: Tasks to flip; row ``i`` flips ``tasks[i % len(tasks)]``.
        max_edits: Most words deleted per counterfactual.
        pad_token_id: Padding id.
        min_length: The widest convolution window.
        batch_size: Reports per saliency batch.
        protected: Token ids never deleted.
        rows: Which rows to use (default all).

    Returns:
        Columns ``id`` (``"<id>#cf-<task>"``), ``source_id``, ``task``, ``input_ids``, ``deleted``.
    """
    rows = list(range(len(dataset))) if rows is None else list(rows)
    out: dict[str, list] = {"id": [], "source_id": [], "task": [], "input_ids": [], "deleted": []}
    by_task: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_task.setdefault(tasks[k % len(tasks)], []).append(r)
    for task, members in by_task.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            batch = dataset.select(chunk)
            cfs = counterfactual_edits(
                model, batch["input_ids"], task, max_edits=max_edits, pad_token_id=pad_token_id,
                min_length=min_length, protected=protected,
            )  # fmt: skip
            for cf, rid in zip(cfs, batch["id"]):
                if cf is None:
                    continue
                out["id"].append(f"{rid}#cf-{task}")
                out["source_id"].append(rid)
                out["task"].append(task)
                out["input_ids"].append(cf.input_ids)
                out["deleted"].append(cf.deleted)
    return out


__all__ = ["Counterfactual", "counterfactual_edits", "counterfactual_transfer_set", "predict_classes"]
