"""Pure loss functions of patch-encoder distillation: feature / multi-expert KD (GPFM), DINO and iBOT distillation
with centring and sharpening (H0-mini), sample- and region-level relation KD (HVisKD), and their update rules.

Every loss takes student tensors first, then teacher tensors (detached inside), keyword-only knobs, and a
``reduction`` over images: ``"none"`` (one value per image), ``"sum"`` (the trainer divides by the images of the
whole accumulation step, so accumulation is exact) or ``"mean"``. :func:`sample_relation_loss` and
:func:`sinkhorn_knopp` couple the images of a batch (they are defined on the batch) and return batch-level values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from reportkd.losses import feature_distillation_loss

REDUCTIONS = ("none", "sum", "mean")


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    return per_image if reduction == "none" else per_image.sum() if reduction == "sum" else per_image.mean()


def feature_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    kind: str = "cosine",
    reduction: str = "sum",
) -> torch.Tensor:
    """Feature KD of embeddings ``(B, D)`` or patch tokens ``(B, N, D)`` (tokens: mean over an image's tokens).

    Args:
        student: Student embeddings or tokens.
        teacher: Teacher embeddings or tokens (same leading shape; width may differ with a projection).
        projection: Maps the student width to the teacher's.
        kind: ``"cosine"`` (1 - cos) or ``"mse"`` (mean over the feature dimension).
        reduction: Over images.
    """
    per = feature_distillation_loss(student, teacher, projection=projection, kind=kind, reduction="none")
    if per.ndim == 2:
        per = per.mean(1)
    return _reduce(per, reduction)


def multi_expert_kd_loss(
    student: torch.Tensor,
    teachers: Mapping[str, torch.Tensor],
    *,
    projections: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    weights: Mapping[str, float] | None = None,
    kind: str = "cosine",
    reduction: str = "sum",
) -> torch.Tensor:
    """GPFM's expert KD: one projection head per expert, ``sum_e w_e * feature_kd(head_e(student), teacher_e)``.

    Args:
        student: ``(B, D_s)`` student embeddings (or ``(B, N, D_s)`` tokens).
        teachers: Expert name → its ``(B, D_e)`` embeddings (widths may differ between experts).
        projections: Expert name → the student's head for that expert.
        weights: Expert name → weight (default 1 each).
        kind: ``"cosine"`` or ``"mse"``.
        reduction: Over images.
    """
    if not teachers:
        raise ValueError("multi_expert_kd_loss needs at least one expert's features.")
    total = 0.0
    for name, target in teachers.items():
        if name not in projections:
            raise KeyError(f"No projection head for expert {name!r}; heads exist for {sorted(projections)}.")
        w = 1.0 if weights is None else float(weights.get(name, 1.0))
        total = total + w * feature_kd_loss(student, target, projection=projections[name], kind=kind,
                                            reduction="none")  # fmt: skip
    return _reduce(total, reduction)


def relation_matrix(x: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity matrix over the second-to-last axis: ``(..., N, D) -> (..., N, N)``."""
    x = F.normalize(x.float(), dim=-1)
    return x @ x.transpose(-1, -2)


def sample_relation_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, kind: str = "mse", temperature: float = 0.1
) -> torch.Tensor:
    """HVisKD's sample-level relation KD: match how the images of a batch relate (batch-coupled, one scalar).

    Invariant to the order of the batch (both matrices are permuted alike). ``"mse"``: mean squared difference of
    the cosine matrices; ``"kl"``: KL between row-wise softmax distributions over the other images.

    Args:
        student: ``(B, D_s)`` student embeddings.
        teacher: ``(B, D_t)`` teacher embeddings (widths may differ: relations are ``B x B``).
        kind: ``"mse"`` or ``"kl"``.
        temperature: Softmax temperature of ``"kl"``.
    """
    s, t = relation_matrix(student), relation_matrix(teacher.detach())
    if kind == "mse":
        return (s - t).pow(2).mean()
    if kind != "kl":
        raise ValueError(f"kind must be 'mse' or 'kl', got {kind!r}.")
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    s, t = s.masked_fill(eye, -1e4) / temperature, t.masked_fill(eye, -1e4) / temperature
    return F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")


def pool_tokens(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Average-pools a square token grid ``(B, N, D)`` onto ``num_tokens`` (also square) tokens."""
    b, n, d = tokens.shape
    if n == num_tokens:
        return tokens
    side, out = math.isqrt(n), math.isqrt(num_tokens)
    if side * side != n or out * out != num_tokens:
        raise ValueError(f"Token grids must be square to pool them: got {n} and {num_tokens} tokens.")
    grid = tokens.transpose(1, 2).reshape(b, d, side, side)
    return F.adaptive_avg_pool2d(grid.float(), out).flatten(2).transpose(1, 2).to(tokens.dtype)


def region_relation_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, *, reduction: str = "sum"):
    """HVisKD's region-level relation KD: match the token-token cosine matrix inside each image.

    Teacher tokens on a finer (or coarser) square grid are average-pooled onto the student's grid first.

    Args:
        student_tokens: ``(B, N, D_s)`` student patch tokens.
        teacher_tokens: ``(B, N_t, D_t)`` teacher patch tokens.
        reduction: Over images (each image: mean squared difference of its ``N x N`` matrices).
    """
    t = pool_tokens(teacher_tokens.detach(), student_tokens.shape[1])
    per = (relation_matrix(student_tokens) - relation_matrix(t)).pow(2).mean((-1, -2))
    return _reduce(per, reduction)


# -- per-expert feature normalisation (GPFM-style) ----------------------------------------------------------------
def standardize_features(features: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, *, eps: float = 1e-6):
    """``(features - mean) / sqrt(var + eps)`` per dimension: an expert's embedding with its common offset removed.

    Pathology encoders' embeddings share a large mean direction (cosines between tiles near 1); cosine KD against the
    raw embedding spends its signal on that direction. Standardising with the expert's running moments keeps what
    tells tiles apart and puts experts of different widths and scales on one footing.

    Args:
        features: ``(..., D)`` expert embeddings.
        mean: ``(D,)`` running mean (see :func:`update_moments`).
        var: ``(D,)`` running variance.
        eps: Added to the variance.
    """
    return (features.float() - mean) / (var + eps).sqrt()


@torch.no_grad()
def update_moments(
    mean: torch.Tensor, var: torch.Tensor, features: torch.Tensor, *, momentum: float, first: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """New running ``(mean, var)``: ``momentum * old + (1 - momentum) * batch`` (the batch's own moments if ``first``).

    Args:
        mean: ``(D,)`` running mean.
        var: ``(D,)`` running variance.
        features: ``(..., D)`` this batch's expert embeddings.
        momentum: EMA momentum in [0, 1].
        first: No moments yet: take the batch's.
    """
    flat = features.detach().float().reshape(-1, features.shape[-1])
    b_mean, b_var = flat.mean(0), flat.var(0, unbiased=False)
    if first:
        return b_mean, b_var
    return mean * momentum + b_mean * (1 - momentum), var * momentum + b_var * (1 - momentum)


# -- DINO / iBOT ------------------------------------------------------------------------------------------------------
def centered_teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """DINO's teacher targets: ``softmax((logits - center) / temperature)`` (centring, then sharpening).

    Args:
        teacher_logits: ``(..., K)`` teacher head outputs.
        center: ``(K,)`` running centre (see :func:`update_center`).
        temperature: Teacher temperature (small: sharp targets).
    """
    return ((teacher_logits.detach().float() - center) / temperature).softmax(-1)


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, *, momentum: float) -> torch.Tensor:
    """The new centre: ``momentum * center + (1 - momentum) * mean(teacher_logits)`` over all but the last axis.

    Args:
        center: ``(K,)`` current centre.
        teacher_logits: ``(..., K)`` teacher head outputs of this batch.
        momentum: EMA momentum in [0, 1).
    """
    batch_mean = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1]).mean(0)
    return center * momentum + batch_mean * (1 - momentum)


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, *, temperature: float, iterations: int = 3) -> torch.Tensor:
    """DINOv2's Sinkhorn-Knopp centring: targets with equal mass per prototype over the batch (batch-coupled).

    Args:
        teacher_logits: ``(B, K)`` teacher head outputs.
        temperature: Teacher temperature.
        iterations: Normalisation rounds.
    """
    logits = teacher_logits.float() / temperature
    q = (logits - logits.max()).exp().T  # (K, B); the shift cancels in the normalisation
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


def dino_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    *,
    student_temperature: float = 0.1,
    skip_same_view: bool = True,
    reduction: str = "sum",
) -> torch.Tensor:
    """DINO cross-entropy between teacher targets and student predictions over all pairs of views.

    Args:
        student_logits: ``(V_s, B, K)`` student head outputs (global views first, then local crops).
        teacher_probs: ``(V_t, B, K)`` teacher targets of the global views.
        student_temperature: Student softmax temperature.
        skip_same_view: Skip pairs where student and teacher saw the same global view (self-distillation).
        reduction: Over images (each image: the mean over its view pairs).
    """
    log_p = (student_logits.float() / student_temperature).log_softmax(-1)
    total, pairs = 0.0, 0
    for ti in range(teacher_probs.shape[0]):
        for si in range(log_p.shape[0]):
            if skip_same_view and si == ti:
                continue
            total = total - (teacher_probs[ti] * log_p[si]).sum(-1)
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss has no view pair: give local crops or a second global view.")
    return _reduce(total / pairs, reduction)


def ibot_patch_loss(
    student_patch_logits: torch.Tensor,
    teacher_patch_probs: torch.Tensor,
    mask: torch.Tensor,
    *,
    student_temperature: float = 0.1,
    reduction: str = "sum",
) -> torch.Tensor:
    """iBOT masked-token loss: student predictions at masked patches vs the teacher's targets for those patches.

    Args:
        student_patch_logits: ``(B, N, K)`` student head outputs on the masked view's patch tokens.
        teacher_patch_probs: ``(B, N, K)`` teacher targets on the unmasked view's patch tokens.
        mask: ``(B, N)`` boolean, True where the student's patch was masked.
        student_temperature: Student softmax temperature.
        reduction: Over images (each image: the mean over its masked patches; images without any count 0).
    """
    log_p = (student_patch_logits.float() / student_temperature).log_softmax(-1)
    ce = -(teacher_patch_probs * log_p).sum(-1)
    m = mask.float()
    per = (ce * m).sum(1) / m.sum(1).clamp_min(1)
    return _reduce(per, reduction)


@torch.no_grad()
def ema_update_(teacher_params: Iterable[torch.Tensor], student_params: Iterable[torch.Tensor], *, momentum: float):
    """In place: ``teacher = momentum * teacher + (1 - momentum) * student`` (the EMA self-distillation teacher).

    Args:
        teacher_params: Parameters of the EMA copy (updated in place).
        student_params: The student's parameters, in the same order.
        momentum: EMA momentum in [0, 1].
    """
    for t, s in zip(teacher_params, student_params, strict=True):
        t.mul_(momentum).add_(s.detach().to(t.dtype), alpha=1 - momentum)


__all__ = [
    "centered_teacher_probs",
    "dino_loss",
    "ema_update_",
    "standardize_features",
    "update_moments",
    "feature_kd_loss",
    "ibot_patch_loss",
    "multi_expert_kd_loss",
    "pool_tokens",
    "region_relation_loss",
    "relation_matrix",
    "sample_relation_loss",
    "sinkhorn_knopp",
    "update_center",
]
