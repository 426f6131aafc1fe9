"""Image-text alignment and distillation losses as pure functions (student first, then teacher).

Registered in ``reportkd.losses.LOSSES`` under ``clip_*`` names:

- ``clip_contrastive``: symmetric InfoNCE of CLIP (open_clip ``ClipLoss``).
- ``clip_logit_kd``: soft targets on the image-text logit matrices (open_clip ``DistillClipLoss`` with
  ``kind="soft_ce"``; TinyCLIP's affinity mimicking is the same loss on its affinity matrices; ``kind="kl"``
  subtracts the teacher's entropy so identical models give 0).
- ``clip_fd``: CLIP-KD feature distillation, MSE between normalised (projected) student and teacher embeddings.
- ``clip_icl``: CLIP-KD interactive contrastive learning, student image vs teacher text logits and the reverse.
- ``clip_relation_kd``: intra-modal similarity-matrix (relation) distillation, image-image and text-text.
- ``clip_attention_kd``: attention-map distillation (M3AE-Distill / MiniLM style KL per query row).

Batch-level losses (contrastive, logit KD, ICL, relation KD) gather embeddings from all processes: local rows
against global columns, with gradients flowing back to each process's shard through
``torch.distributed.nn.functional.all_gather`` (open_clip's ``gather_with_grad=True, local_loss=True``). Each
process returns the mean over its rows; data-parallel gradient averaging then yields the global-batch loss.
Per-item losses (``clip_fd``, ``clip_attention_kd``, hidden states) take ``num_items_in_batch`` like the other
``reportkd`` losses, which keeps gradient accumulation exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from reportkd.losses import (
    Reduction,
    check_reduction,
    check_temperature,
    feature_distillation_loss,
    reduce_loss,
    register_loss,
)

LogitKDKind = Literal["kl", "soft_ce"]


# ---------------------------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------------------------
def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(features: torch.Tensor, *, gather: bool = True) -> tuple[torch.Tensor, int]:
    """All processes' rows of ``features`` (gradient flows back to the local shard) and the local row offset.

    Args:
        features: ``(B, D)`` local rows (every process must pass the same ``B``).
        gather: When False (or single process) returns ``features`` and offset 0.
    """
    rank, world = world_info()
    if not gather or world == 1:
        return features, 0
    if features.requires_grad:
        from torch.distributed.nn.functional import all_gather

        gathered = torch.cat(all_gather(features), dim=0)
    else:
        parts = [torch.empty_like(features) for _ in range(world)]
        dist.all_gather(parts, features.contiguous())
        gathered = torch.cat(parts, dim=0)
    return gathered, rank * features.shape[0]


def clip_logits(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local-row, global-column image→text and text→image logits and the matching column indices.

    Args:
        image_features: ``(B, D)`` L2-normalised image embeddings of this process.
        text_features: ``(B, D)`` L2-normalised text embeddings.
        logit_scale: The (already exponentiated) logit scale.
        gather: Gather columns from all processes.

    Returns:
        ``(logits_per_image (B, N), logits_per_text (B, N), targets (B,))`` with ``N`` the global batch size.
    """
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image features {tuple(image_features.shape)} and text features {tuple(text_features.shape)} differ: "
            "a CLIP batch holds one caption per image, embedded to the same width."
        )
    all_image, offset = gather_features(image_features, gather=gather)
    all_text, _ = gather_features(text_features, gather=gather)
    logits_per_image = logit_scale * image_features @ all_text.T
    logits_per_text = logit_scale * text_features @ all_image.T
    targets = torch.arange(image_features.shape[0], device=image_features.device) + offset
    return logits_per_image, logits_per_text, targets


def _mean_rows(per_row: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    check_reduction(reduction)
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


# ---------------------------------------------------------------------------------------------------------------
# Batch-level losses
# ---------------------------------------------------------------------------------------------------------------
@register_loss("clip_contrastive")
def clip_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gather: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: ``(CE(image→text) + CE(text→image)) / 2`` per local pair.

    A SigLIP-style ``logit_bias`` adds a constant to every logit, which softmax ignores, so it is not an argument.

    Args:
        image_features: ``(B, D)`` normalised image embeddings.
        text_features: ``(B, D)`` normalised text embeddings; row ``i`` is image ``i``'s caption.
        logit_scale: Exponentiated logit scale (``model.logit_scale.exp()``).
        gather: Use every process's pairs as negatives.
        reduction: ``"mean"`` over local pairs, ``"sum"`` or ``"none"`` (per pair).
    """
    lpi, lpt, targets = clip_logits(image_features, text_features, logit_scale, gather=gather)
    per_row = (F.cross_entropy(lpi.float(), targets, reduction="none") + F.cross_entropy(lpt.float(), targets,
               reduction="none")) / 2  # fmt: skip
    return _mean_rows(per_row, reduction)


def _soft_targets(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, kind: LogitKDKind
) -> torch.Tensor:
    t_logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if kind == "kl":
        per_row = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    elif kind == "soft_ce":
        per_row = -(t_logp.exp() * s_logp).sum(-1)
    else:
        raise ValueError(f"kind must be 'kl' or 'soft_ce', got {kind!r}.")
    return per_row * temperature**2


@register_loss("clip_logit_kd")
def clip_logit_kd_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    student_logit_scale: torch.Tensor | float,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    teacher_logit_scale: torch.Tensor | float,
    *,
    temperature: float = 1.0,
    kind: LogitKDKind = "kl",
    gather: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Logit distillation on the image-text similarity matrices (affinity mimicking), both directions.

    Each model's logits use its own logit scale; both are divided by ``temperature`` and the result is scaled by
    ``temperature**2``. Per local row: ``(D(t_i2t || s_i2t) + D(t_t2i || s_t2i)) / 2`` with ``D`` the KL divergence
    (``kind="kl"``, 0 for identical models) or the soft cross-entropy of open_clip's ``DistillClipLoss``
    (``kind="soft_ce"``, whose floor is the teacher's entropy). Teacher and student embedding widths may differ.

    Args:
        student_image: ``(B, D_s)`` normalised student image embeddings.
        student_text: ``(B, D_s)`` normalised student text embeddings.
        student_logit_scale: Student's exponentiated logit scale.
        teacher_image: ``(B, D_t)`` normalised teacher image embeddings.
        teacher_text: ``(B, D_t)`` normalised teacher text embeddings.
        teacher_logit_scale: Teacher's exponentiated logit scale.
        temperature: Softening temperature (> 0).
        kind: ``"kl"`` or ``"soft_ce"``.
        gather: Use every process's pairs as columns.
        reduction: ``"mean"`` over local rows, ``"sum"`` or ``"none"``.
    """
    check_temperature(temperature)
    s_i2t, s_t2i, _ = clip_logits(student_image, student_text, student_logit_scale, gather=gather)
    with torch.no_grad():
        t_i2t, t_t2i, _ = clip_logits(
            teacher_image.detach(), teacher_text.detach(), teacher_logit_scale, gather=gather
        )
    per_row = (_soft_targets(s_i2t, t_i2t, temperature, kind) + _soft_targets(s_t2i, t_t2i, temperature, kind)) / 2
    return _mean_rows(per_row, reduction)


@register_loss("clip_icl")
def clip_icl_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gather: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CLIP-KD interactive contrastive learning: the student's image embedding must find its caption among the
    teacher's text embeddings, and the student's text embedding its image among the teacher's image embeddings.

    Args:
        student_image: ``(B, D)`` normalised student image embeddings, projected to the teacher's width.
        student_text: ``(B, D)`` normalised, projected student text embeddings.
        teacher_image: ``(B, D)`` normalised teacher image embeddings.
        teacher_text: ``(B, D)`` normalised teacher text embeddings.
        logit_scale: Exponentiated logit scale (the student's, as in CLIP-KD).
        gather: Use every process's teacher embeddings as negatives.
        reduction: ``"mean"`` over local rows, ``"sum"`` or ``"none"``.
    """
    if student_image.shape[-1] != teacher_image.shape[-1]:
        raise ValueError(
            f"ICL compares student ({student_image.shape[-1]}) and teacher ({teacher_image.shape[-1]}) embeddings "
            "directly: project the student to the teacher's width first (CLIPDistillationStudent does)."
        )
    all_t_text, offset = gather_features(teacher_text.detach(), gather=gather)
    all_t_image, _ = gather_features(teacher_image.detach(), gather=gather)
    targets = torch.arange(student_image.shape[0], device=student_image.device) + offset
    i2t = F.cross_entropy((logit_scale * student_image @ all_t_text.T).float(), targets, reduction="none")
    t2i = F.cross_entropy((logit_scale * student_text @ all_t_image.T).float(), targets, reduction="none")
    return _mean_rows((i2t + t2i) / 2, reduction)


def _relation_logits(features: torch.Tensor, scale: torch.Tensor | float, gather: bool) -> torch.Tensor:
    everyone, offset = gather_features(features, gather=gather)
    logits = scale * features @ everyone.T
    rows = torch.arange(features.shape[0], device=features.device)
    return logits.index_put((rows, rows + offset), torch.tensor(float("-inf"), device=logits.device))


@register_loss("clip_relation_kd")
def clip_relation_kd_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    student_logit_scale: torch.Tensor | float,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    teacher_logit_scale: torch.Tensor | float,
    *,
    temperature: float = 1.0,
    gather: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Relation (similarity-matrix) distillation within each modality.

    For each image, the distribution over the other images of the batch given by scaled cosine similarity
    (self-similarity excluded); the same for texts. Per local row: ``(KL_image + KL_text) / 2`` at
    ``temperature`` (times ``temperature**2``). Needs a global batch of at least 2.

    Args:
        student_image: ``(B, D_s)`` normalised student image embeddings.
        student_text: ``(B, D_s)`` normalised student text embeddings.
        student_logit_scale: Student's exponentiated logit scale.
        teacher_image: ``(B, D_t)`` normalised teacher image embeddings.
        teacher_text: ``(B, D_t)`` normalised teacher text embeddings.
        teacher_logit_scale: Teacher's exponentiated logit scale.
        temperature: Softening temperature (> 0).
        gather: Use every process's items as the relation set.
        reduction: ``"mean"`` over local rows, ``"sum"`` or ``"none"``.
    """
    check_temperature(temperature)
    if student_image.shape[0] * world_info()[1] < 2:
        raise ValueError("Relation KD compares each item with the others: use a (global) batch of at least 2.")
    per_row = student_image.new_zeros(student_image.shape[0], dtype=torch.float32)
    for s, t in ((student_image, teacher_image), (student_text, teacher_text)):
        s_logits = _relation_logits(s, student_logit_scale, gather)
        with torch.no_grad():
            t_logits = _relation_logits(t.detach(), teacher_logit_scale, gather)
        t_logp = F.log_softmax(t_logits.float() / temperature, dim=-1)
        s_logp = F.log_softmax(s_logits.float() / temperature, dim=-1)
        off_diagonal = torch.isfinite(t_logits)
        kl = torch.where(off_diagonal, t_logp.exp() * (t_logp - s_logp), torch.zeros((), device=s.device))
        per_row = per_row + kl.sum(-1) * temperature**2 / 2
    return _mean_rows(per_row, reduction)


# ---------------------------------------------------------------------------------------------------------------
# Per-item losses
# ---------------------------------------------------------------------------------------------------------------
@register_loss("clip_fd")
def clip_feature_distillation_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    *,
    image_projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    text_projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reduction: Reduction = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """CLIP-KD feature distillation: ``(MSE_image + MSE_text) / 2`` of L2-normalised embeddings per pair.

    The MSE averages over the embedding width, so on unit vectors it equals ``(2 - 2 cos) / D``: CLIP-KD weights
    it by about 2000 at ``D = 512``.

    Args:
        student_image: ``(B, D_s)`` student image embeddings (projected already, or see ``image_projection``).
        student_text: ``(B, D_s)`` student text embeddings.
        teacher_image: ``(B, D_t)`` teacher image embeddings.
        teacher_text: ``(B, D_t)`` teacher text embeddings.
        image_projection: Optional map to the teacher's width (needed when ``D_s != D_t``).
        text_projection: Optional map for the text side.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        num_items_in_batch: Denominator for ``"mean"`` (pairs over the accumulation step and processes).
    """
    check_reduction(reduction)
    image = feature_distillation_loss(
        student_image, teacher_image, projection=image_projection, normalize=True, reduction="none"
    )
    text = feature_distillation_loss(student_text, teacher_text, projection=text_projection, normalize=True,
                                     reduction="none")  # fmt: skip
    per_item = (image + text) / 2
    return reduce_loss(per_item, torch.ones_like(per_item, dtype=torch.bool), reduction, num_items_in_batch)


@register_loss("clip_attention_kd")
def clip_attention_kd_loss(
    student_attention: torch.Tensor,
    teacher_attention: torch.Tensor,
    *,
    reduction: Reduction = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Attention-map distillation: ``KL(teacher || student)`` per query row, averaged over rows and heads.

    Maps are probabilities over keys (the last dimension): ``(B, H, L_q, L_k)``, ``(B, L_q, L_k)`` or ``(B, L_k)``
    (e.g. CLS-to-patch maps). When head counts differ, both sides are averaged over heads first. Masked keys
    (probability 0 for the teacher) do not count.

    Args:
        student_attention: Student attention probabilities.
        teacher_attention: Teacher attention probabilities of the same token layout.
        reduction: ``"none"`` (per item), ``"sum"`` or ``"mean"``.
        num_items_in_batch: Denominator for ``"mean"``.
    """
    check_reduction(reduction)
    s, t = student_attention.float(), teacher_attention.detach().float()
    if s.dim() == 4 and s.shape[1] != t.shape[1]:
        s, t = s.mean(1), t.mean(1)
    if s.shape != t.shape:
        raise ValueError(
            f"student attention {tuple(s.shape)} and teacher attention {tuple(t.shape)} differ: match layers with "
            "the same token count, or use tokens='cls' to compare CLS-to-patch maps on the student's patch grid."
        )
    kl = torch.where(
        t > 0, t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log()), torch.zeros((), device=s.device)
    )
    per_item = kl.sum(-1).flatten(1).mean(-1) if kl.dim() > 2 else kl.sum(-1)
    return reduce_loss(per_item, torch.ones_like(per_item, dtype=torch.bool), reduction, num_items_in_batch)
