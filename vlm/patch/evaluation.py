"""Evaluation of patch encoders: linear probe and kNN on labelled tiles, teacher-student agreement (linear CKA,
similarity-row cosine, top-k neighbour overlap), stain robustness (PLISM spirit) and speed (images/s, FLOPs).

Every function takes an ``embed`` callable ``(B, 3, H, W) pixels in [0, 1] -> (B, D)``; :func:`embedder` makes one
from a :class:`~reportkd.vlm.patch.PatchEncoder`, a :class:`~reportkd.vlm.patch.PatchTeacher` or an encoder bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..evaluation import linear_probe
from .data import TileDataset, stain_variants
from .heads import PatchTeacher
from .modeling import PatchEncoder, count_flops

Embed = Callable[[torch.Tensor], torch.Tensor]


def embedder(model: Any) -> Embed:
    """An ``embed`` function of ``[0, 1]`` pixels for a student, an expert or an encoder bundle.

    Args:
        model: :class:`PatchEncoder`, :class:`PatchTeacher`, an ``EncoderBundle`` or a registry spec / folder.
    """
    if isinstance(model, PatchEncoder):
        return lambda x: model(model.normalize(x))["embedding"]
    from .heads import load_teacher_spec

    teacher = model if isinstance(model, PatchTeacher) else load_teacher_spec(model)
    return lambda x: teacher(x)["embedding"]


@torch.no_grad()
def embed_pixels(embed: Embed, pixels: torch.Tensor, *, batch_size: int = 128) -> torch.Tensor:
    """``(N, D)`` float32 embeddings of ``(N, 3, H, W)`` pixels in [0, 1], in batches.

    Args:
        embed: The embedding function.
        pixels: The tiles.
        batch_size: Tiles per call.
    """
    return torch.cat([embed(pixels[i : i + batch_size]).float().cpu() for i in range(0, len(pixels), batch_size)])


def knn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 *, k: int = 20) -> float:  # fmt: skip
    """Accuracy of a cosine kNN vote (similarity-weighted) of the ``k`` nearest training tiles.

    Args:
        train: ``(N, D)`` training embeddings.
        train_labels: ``(N,)`` labels.
        test: ``(M, D)`` test embeddings.
        test_labels: ``(M,)`` labels.
        k: Neighbours.
    """
    sim = F.normalize(test.float(), dim=-1) @ F.normalize(train.float(), dim=-1).T
    top, idx = sim.topk(min(k, len(train)), dim=-1)
    votes = torch.zeros(len(test), int(train_labels.max()) + 1).scatter_add_(1, train_labels[idx], top.exp())
    return (votes.argmax(-1) == test_labels).float().mean().item()


def probe_metrics(embed: Embed, train: TileDataset, test: TileDataset, *, k: int = 20) -> dict[str, dict[str, float]]:
    """Per task: linear-probe accuracy (L-BFGS logistic regression) and kNN accuracy on frozen embeddings.

    Args:
        embed: The embedding function.
        train: Labelled tiles to fit on.
        test: Labelled tiles to score.
        k: kNN neighbours.
    """
    xtr, xte = embed_pixels(embed, train.pixels()), embed_pixels(embed, test.pixels())
    out = {}
    for task in train.labels:
        ytr, yte = train.labels[task], test.labels[task]
        lin = linear_probe(xtr, ytr, xte, yte)
        out[task] = {"linear_probe_acc": lin["linear_probe_acc"], "knn_acc": knn_accuracy(xtr, ytr, xte, yte, k=k)}
    return out


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two embeddings of the same tiles (widths may differ; 1: same geometry up to rotation).

    Args:
        x: ``(N, D_x)``.
        y: ``(N, D_y)``.
    """
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    num = (x.T @ y).pow(2).sum()
    return float(num / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()).clamp_min(1e-12))


def agreement(student: torch.Tensor, teacher: torch.Tensor, *, k: int = 10) -> dict[str, float]:
    """Teacher-student agreement on the same tiles: linear CKA, mean cosine between their similarity rows, and the
    overlap of each tile's ``k`` nearest neighbours.

    Args:
        student: ``(N, D_s)`` student embeddings.
        teacher: ``(N, D_t)`` teacher embeddings.
        k: Neighbours for the overlap.
    """
    eye = torch.eye(len(student), dtype=torch.bool)
    s = (F.normalize(student.float(), dim=-1) @ F.normalize(student.float(), dim=-1).T).masked_fill(eye, -2)
    t = (F.normalize(teacher.float(), dim=-1) @ F.normalize(teacher.float(), dim=-1).T).masked_fill(eye, -2)
    k = min(k, len(student) - 1)
    ns, nt = s.topk(k, dim=-1).indices, t.topk(k, dim=-1).indices
    overlap = (ns.unsqueeze(-1) == nt.unsqueeze(-2)).any(-1).float().mean().item()
    rows = F.cosine_similarity(s.masked_fill(eye, 0), t.masked_fill(eye, 0), dim=-1).mean().item()
    return {"cka": linear_cka(student, teacher), "similarity_cosine": rows, f"knn_overlap@{k}": overlap}


def stain_robustness(embed: Embed, pixels: torch.Tensor, *, num_variants: int = 4, strength: float = 0.3,
                     seed: int = 0) -> dict[str, float]:  # fmt: skip
    """PLISM-style robustness: the same tiles under ``num_variants`` stain variants (HED changes).

    ``stain_top1``: how often a tile's nearest neighbour among another variant's tiles is itself (over all ordered
    pairs of variants); ``stain_cosine``: mean cosine between a tile's embeddings under two variants.

    Args:
        embed: The embedding function.
        pixels: ``(N, 3, H, W)`` tiles in [0, 1] (real tiles preferred).
        num_variants: Variants including the original.
        strength: Range of the HED factors.
        seed: Seed of the variants.
    """
    variants = stain_variants(pixels, num_variants, strength=strength, seed=seed)
    emb = F.normalize(torch.stack([embed_pixels(embed, v) for v in variants]), dim=-1)  # (V, N, D)
    target = torch.arange(emb.shape[1])
    top1, cos, pairs = 0.0, 0.0, 0
    for a in range(len(emb)):
        for b in range(len(emb)):
            if a == b:
                continue
            top1 += ((emb[a] @ emb[b].T).argmax(-1) == target).float().mean().item()
            cos += (emb[a] * emb[b]).sum(-1).mean().item()
            pairs += 1
    return {"stain_top1": top1 / pairs, "stain_cosine": cos / pairs}


@torch.no_grad()
def speed(model: Any, image_size: int, *, batch_size: int = 64, seconds: float = 1.0) -> dict[str, float]:
    """Images per second (batched forward, after a warm-up) and forward GFLOPs per image.

    Args:
        model: :class:`PatchEncoder` or :class:`PatchTeacher`.
        image_size: Input side the encoder is fed.
        batch_size: Images per forward.
        seconds: Measuring time.
    """
    embed = embedder(model)
    x = torch.rand(batch_size, 3, image_size, image_size)
    embed(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embed(x)
        n += batch_size
    net = model if isinstance(model, PatchEncoder) else model.model
    size = image_size if isinstance(model, PatchEncoder) else (model.input_size or image_size)
    fwd = (lambda z: model(z)) if isinstance(model, PatchEncoder) else None
    return {"images_per_s": n / (time.perf_counter() - start), "gflops": count_flops(net, size, forward=fwd) / 1e9}


def evaluate_patch_encoder(
    model: Any,
    train: TileDataset,
    test: TileDataset,
    *,
    teachers: Mapping[str, Any] | None = None,
    robustness_tiles: torch.Tensor | None = None,
    with_speed: bool = True,
) -> dict[str, Any]:
    """Probes per task, agreement with each teacher, stain robustness and speed of one encoder.

    Args:
        model: The encoder (student or expert).
        train: Labelled tiles the probes fit on.
        test: Labelled tiles the probes score (also the agreement tiles).
        teachers: Name → expert to compare with (agreement on ``test``).
        robustness_tiles: ``(N, 3, H, W)`` tiles in [0, 1] for the stain test (default: ``test``'s).
        with_speed: Measure images/s and FLOPs.
    """
    embed = embedder(model)
    out: dict[str, Any] = {"probes": probe_metrics(embed, train, test)}
    if teachers:
        mine = embed_pixels(embed, test.pixels())
        out["agreement"] = {n: agreement(mine, embed_pixels(embedder(t), test.pixels())) for n, t in teachers.items()}
    tiles = robustness_tiles if robustness_tiles is not None else test.pixels()
    out["stain"] = stain_robustness(embed, tiles)
    if with_speed:
        out["speed"] = speed(model, test.tiles.shape[-1])
    return out
