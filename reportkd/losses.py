"""Distillation losses as pure functions: ``loss(student, teacher, ..., *, temperature, reduction)``.

Every loss works on any leading shape (``(B, C)`` for classifiers, ``(B, L, V)`` for language models): the last
dimension holds the classes, ``labels`` (if given) has the leading shape and ``ignore_index`` marks items that do
not count. ``reduction`` is one of ``"none"`` (per item, ignored items are 0), ``"sum"`` or ``"mean"``; ``"mean"``
divides by ``num_items_in_batch`` when given (the number of counted items over the whole gradient-accumulation
step and all processes, which keeps accumulation exact) and by the number of counted items otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F

from .registry import Registry

Reduction = Literal["none", "sum", "mean"]
TeacherType = Literal["logits", "probs"]

LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("loss")
register_loss = LOSSES.register


def check_reduction(reduction: str) -> None:
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}.")


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")


def _item_mask(shape: torch.Size, labels: torch.Tensor | None, ignore_index: int, device) -> torch.Tensor:
    if labels is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if labels.shape != shape:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but the logits' leading shape is {tuple(shape)}.")
    return labels != ignore_index


def reduce_loss(
    per_item: torch.Tensor, mask: torch.Tensor, reduction: str, num_items_in_batch: torch.Tensor | int | None
) -> torch.Tensor:
    per_item = torch.where(mask, per_item, per_item.new_zeros(()))
    if reduction == "none":
        return per_item
    total = per_item.sum()
    if reduction == "sum":
        return total
    denom = num_items_in_batch if num_items_in_batch is not None else mask.sum()
    if torch.is_tensor(denom):
        denom = denom.to(total.device, total.dtype).clamp_min(1)
    else:
        denom = max(float(denom), 1.0)
    return total / denom


def teacher_log_probs(teacher: torch.Tensor, *, temperature: float = 1.0, teacher_type: TeacherType = "logits"):
    """Log-probabilities of the teacher at a temperature.

    Args:
        teacher: Teacher logits, or probabilities (e.g. an ensemble's mean softmax) when ``teacher_type="probs"``.
            Probabilities at temperature ``T`` are ``p**(1/T)`` renormalised, which equals ``softmax(logits / T)``
            when ``p = softmax(logits)``.
        temperature: Softening temperature (> 0).
        teacher_type: ``"logits"`` or ``"probs"``.
    """
    check_temperature(temperature)
    if teacher_type == "logits":
        return F.log_softmax(teacher.float() / temperature, dim=-1)
    if teacher_type == "probs":
        logp = torch.log(teacher.float().clamp_min(1e-12))
        return F.log_softmax(logp / temperature, dim=-1)
    raise ValueError(f"teacher_type must be 'logits' or 'probs', got {teacher_type!r}.")


@register_loss("soft_target_kd")
def soft_target_kd_loss(
    student_logits: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
    teacher_type: TeacherType = "logits",
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Hinton soft-target distillation mixed with hard-label cross-entropy.

    Per item: ``alpha * T**2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, label)``. The ``T**2``
    factor keeps gradient magnitudes comparable across temperatures. When ``labels`` are given, items whose label
    is ``ignore_index`` (a missing label) are left out of both terms.

    Args:
        student_logits: ``(..., C)`` student logits.
        teacher: ``(..., C)`` teacher logits or probabilities (see ``teacher_type``).
        labels: Optional ``(...)`` hard labels; required when ``alpha < 1``.
        temperature: Softening temperature applied to both teacher and student.
        alpha: Weight of the soft (teacher) term; ``1 - alpha`` weights the hard-label cross-entropy.
        teacher_type: ``"logits"`` or ``"probs"`` (e.g. an ensemble's mean softmax).
        ignore_index: Label value of missing labels.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        num_items_in_batch: Denominator for ``"mean"`` (counted items over the accumulation step).
    """
    check_reduction(reduction)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if student_logits.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher {tuple(teacher.shape)} differ in shape: "
            "teacher and student must share the label map (same classes in the same order)."
        )
    if alpha < 1.0 and labels is None:
        raise ValueError("alpha < 1 mixes in hard labels, so labels are required.")
    mask = _item_mask(student_logits.shape[:-1], labels, ignore_index, student_logits.device)
    per_item = student_logits.new_zeros(student_logits.shape[:-1], dtype=torch.float32)
    if alpha > 0:
        t_logp = teacher_log_probs(teacher, temperature=temperature, teacher_type=teacher_type)
        s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
        per_item = per_item + alpha * temperature**2 * kl
    if alpha < 1:
        safe = torch.where(mask, labels, labels.new_zeros(()))
        ce = F.cross_entropy(student_logits.float().flatten(0, -2), safe.flatten(), reduction="none")
        per_item = per_item + (1 - alpha) * ce.view(mask.shape)
    return reduce_loss(per_item, mask, reduction, num_items_in_batch)


@register_loss("generalized_jsd")
def generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence (GKD, Agarwal et al. 2024), summed over the class dimension.

    ``beta = 0`` is the forward KL ``KL(teacher || student)``, ``beta = 1`` the reverse KL
    ``KL(student || teacher)``; in between, ``beta * KL(teacher || M) + (1 - beta) * KL(student || M)`` with the
    mixture ``M = beta * teacher + (1 - beta) * student``.

    Args:
        student_logits: ``(..., V)`` student logits.
        teacher_logits: ``(..., V)`` teacher logits.
        labels: Optional ``(...)`` labels; items equal to ``ignore_index`` are left out (prompt or padding tokens).
        beta: Interpolation in ``[0, 1]``.
        temperature: Temperature applied to both distributions.
        ignore_index: Value of items that do not count.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        num_items_in_batch: Denominator for ``"mean"``.
    """
    check_reduction(reduction)
    check_temperature(temperature)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "teacher and student must share one vocabulary / label map."
        )
    mask = _item_mask(student_logits.shape[:-1], labels, ignore_index, student_logits.device)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta == 0:
        per_item = (t.exp() * (t - s)).sum(-1)
    elif beta == 1:
        per_item = (s.exp() * (s - t)).sum(-1)
    else:
        log_beta = torch.log(torch.tensor(beta, dtype=s.dtype, device=s.device))
        log_1m = torch.log(torch.tensor(1 - beta, dtype=s.dtype, device=s.device))
        m = torch.logsumexp(torch.stack([t + log_beta, s + log_1m]), dim=0)
        per_item = beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)
    return reduce_loss(per_item, mask, reduction, num_items_in_batch)


@register_loss("forward_kl")
def forward_kl_loss(student_logits, teacher_logits, labels=None, **kwargs) -> torch.Tensor:
    """``KL(teacher || student)``: :func:`generalized_jsd_loss` with ``beta=0`` (same keyword arguments)."""
    return generalized_jsd_loss(student_logits, teacher_logits, labels, **{**kwargs, "beta": 0.0})


@register_loss("reverse_kl")
def reverse_kl_loss(student_logits, teacher_logits, labels=None, **kwargs) -> torch.Tensor:
    """``KL(student || teacher)``: :func:`generalized_jsd_loss` with ``beta=1`` (same keyword arguments)."""
    return generalized_jsd_loss(student_logits, teacher_logits, labels, **{**kwargs, "beta": 1.0})


@register_loss("feature")
def feature_distillation_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    *,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    kind: Literal["mse", "cosine", "smooth_l1"] = "mse",
    normalize: bool = False,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Feature (hidden-state / embedding) distillation.

    Args:
        student_features: ``(..., D_s)`` student features.
        teacher_features: ``(..., D_t)`` teacher features.
        projection: Maps student features to the teacher's width (e.g. a learned ``nn.Linear(D_s, D_t)``);
            required when ``D_s != D_t``.
        kind: ``"mse"`` (mean over the feature dimension), ``"cosine"`` (``1 - cos``) or ``"smooth_l1"``.
        normalize: L2-normalise both sides first (CLIP-KD's FD on normalised embeddings).
        mask: Optional ``(...)`` boolean mask of items that count (e.g. non-padding tokens).
        temperature: Unused; accepted so every loss shares one call signature.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.
        num_items_in_batch: Denominator for ``"mean"``.
    """
    check_reduction(reduction)
    if projection is not None:
        student_features = projection(student_features)
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"student features {tuple(student_features.shape)} and teacher features "
            f"{tuple(teacher_features.shape)} differ: pass a projection (e.g. nn.Linear(student_dim, teacher_dim))."
        )
    s, t = student_features.float(), teacher_features.detach().float()
    if normalize:
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    if kind == "mse":
        per_item = (s - t).pow(2).mean(-1)
    elif kind == "cosine":
        per_item = 1 - F.cosine_similarity(s, t, dim=-1)
    elif kind == "smooth_l1":
        per_item = F.smooth_l1_loss(s, t, reduction="none").mean(-1)
    else:
        raise ValueError(f"kind must be 'mse', 'cosine' or 'smooth_l1', got {kind!r}.")
    if mask is None:
        mask = torch.ones(per_item.shape, dtype=torch.bool, device=per_item.device)
    return reduce_loss(per_item, mask.bool(), reduction, num_items_in_batch)


def task_weight_vector(
    tasks: list[str], task_weights: Mapping[str, float] | None, *, normalize: bool = True
) -> torch.Tensor:
    """``(T,)`` task weights in ``tasks`` order (all 1 when ``task_weights`` is None), normalised to sum to 1.

    Args:
        tasks: Task names in label-column order.
        task_weights: Optional task → weight (missing tasks weigh 0).
        normalize: Divide by the sum (False: the raw weights).
    """
    weights = torch.tensor([1.0 if task_weights is None else float(task_weights.get(t, 0.0)) for t in tasks])
    if weights.sum() <= 0:
        raise ValueError("task_weights must give at least one task a positive weight.")
    return weights / weights.sum() if normalize else weights


@register_loss("multitask_kd")
def multitask_kd_loss(
    student_logits: Mapping[str, torch.Tensor],
    teacher: Mapping[str, torch.Tensor] | None,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
    teacher_type: TeacherType = "probs",
    task_weights: Mapping[str, float] | None = None,
    member_mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Literal["sum", "mean"] = "mean",
    num_items_in_batch: torch.Tensor | None = None,
    sum_members: bool = True,
) -> torch.Tensor:
    """Multitask soft-target distillation: :func:`soft_target_kd_loss` per task, weighted mean over tasks.

    ``loss = sum_t w_t * (sum of task t's item losses) / N_t / sum_t w_t`` with ``w_t`` = ``task_weights``
    (uniform by default) and ``N_t`` the number of reports with a label for task ``t`` (all reports when
    ``labels`` is None), or ``num_items_in_batch[t]``. With ``alpha=0`` this is the weighted mean over tasks of
    each task's cross-entropy: the hard-label objective, so a baseline and a student differ only in ``alpha``.

    A teacher ensemble trains through the same function: logits with a leading member axis ``(N, B, C_t)`` give
    each member this loss (only on its rows of ``member_mask``, normalised by its own ``(N, T)`` counts), summed
    over members, so each member gets exactly the gradient it would get alone.

    Args:
        student_logits: Task name → ``(B, C_t)`` logits, or ``(N, B, C_t)`` for ``N`` ensemble members.
        teacher: Task name → ``(B, C_t)`` teacher logits/probabilities; None only when ``alpha == 0``.
        labels: ``(B, T)`` labels in the order of ``student_logits``; ``ignore_index`` marks a missing label.
        temperature: Softening temperature.
        alpha: Weight of the soft term (``1 - alpha`` weights the hard labels).
        teacher_type: ``"probs"`` (default: ensemble soft labels) or ``"logits"``.
        task_weights: Optional task name → weight (>= 0; missing tasks weigh 0).
        member_mask: Optional ``(N, B)`` bool: member ``m`` learns only from rows where it is True.
        ignore_index: Missing-label value.
        reduction: ``"mean"`` (normalised per task as above) or ``"sum"``.
        num_items_in_batch: Optional ``(T,)`` (or ``(N, T)`` per member) counts over the whole accumulation step
            (and processes).
        sum_members: With a member axis, return the sum over members (default) or the ``(N,)`` member losses.
    """
    tasks = list(student_logits)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
    if teacher is None and alpha > 0:
        raise ValueError("alpha > 0 needs teacher outputs (a teacher model or precomputed soft labels).")
    if teacher is not None and (missing := [t for t in tasks if t not in teacher]):
        raise ValueError(f"teacher outputs lack tasks {missing}; they have {sorted(teacher)}.")
    first = student_logits[tasks[0]]
    lead = first.shape[:-1]  # (B,) or (N, B)
    if labels is not None and (labels.dim() != 2 or labels.shape != (lead[-1], len(tasks))):
        raise ValueError(
            f"labels must be (batch, num_tasks) = ({lead[-1]}, {len(tasks)}) in task order {tasks}, got shape "
            f"{tuple(labels.shape)}; use {ignore_index} for a missing label."
        )
    rows = None  # (…, B) bool: rows each member learns from
    if member_mask is not None:
        if len(lead) != 2 or member_mask.shape != lead:
            raise ValueError(
                f"member_mask must be (num_members, batch) = {tuple(lead)}, got {tuple(member_mask.shape)}."
            )
        rows = member_mask.to(device=first.device, dtype=torch.bool)
    weights = task_weight_vector(tasks, task_weights, normalize=False).to(first.device)
    total = first.new_zeros(lead[:-1], dtype=torch.float32)
    for i, task in enumerate(tasks):
        s = student_logits[task]
        y = None
        if labels is not None:
            y = labels[:, i].to(s.device).expand(lead)
            if rows is not None:
                y = torch.where(rows, y, torch.full_like(y, ignore_index))
        t = teacher[task].expand_as(s) if teacher is not None else s.detach()
        per_item = soft_target_kd_loss(
            s, t, y, temperature=temperature, alpha=alpha, teacher_type=teacher_type, ignore_index=ignore_index,
            reduction="none",
        )  # fmt: skip
        counted = y != ignore_index if y is not None else rows
        if labels is None and rows is not None:
            per_item = per_item * rows
        task_loss = per_item.sum(-1)
        if reduction == "mean":
            if num_items_in_batch is not None:
                count = num_items_in_batch.to(task_loss.device)
                count = count[..., i] if count.dim() == len(lead) else count[i]
            elif counted is not None:
                count = counted.sum(-1)
            else:
                count = torch.tensor(lead[-1], device=task_loss.device)
            task_loss = task_loss / count.to(task_loss.dtype).clamp_min(1)
        total = total + weights[i] * task_loss
    total = total / weights.sum()
    return total.sum() if sum_members else total


def deep_abstaining_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float | torch.Tensor,
    ignore_index: int = -100,
    reduction: Literal["none", "sum", "mean"] = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Deep Abstaining Classifier loss (Thulasidasan et al., ICML 2019; FrESCO's DAC).

    The last of the ``C + 1`` logits is an "abstain" class. With ``p_a`` its probability and ``p_y`` the true class's,
    ``loss = (1 - p_a) * -log(p_y / (1 - p_a)) - alpha * log(1 - p_a)``: abstaining discounts the cross-entropy
    of the renormalised class distribution and costs ``alpha * -log(1 - p_a)``. Large ``alpha`` → plain
    cross-entropy; small ``alpha`` → the model abstains on hard (or mislabelled) reports. Computed from
    log-sum-exps, so it is stable for confident logits.

    Args:
        logits: ``(B, C + 1)`` logits, abstain class last.
        labels: ``(B,)`` class ids in ``[0, C)``; ``ignore_index`` marks a missing label.
        alpha: Abstention penalty (float or 0-d tensor, >= 0).
        ignore_index: Missing-label value.
        reduction: ``"mean"`` (over labelled rows, or ``num_items_in_batch``), ``"sum"`` or ``"none"``.
        num_items_in_batch: Optional denominator for ``"mean"`` (labelled rows over an accumulation step).
    """
    check_reduction(reduction)
    if logits.shape[-1] < 3:
        raise ValueError(f"DAC logits need at least 2 classes + the abstain class, got {logits.shape[-1]} columns.")
    if not torch.is_tensor(alpha) and alpha < 0:  # (a tensor is not read back: no device sync per step)
        raise ValueError(f"alpha must be >= 0, got {alpha}.")
    logits = logits.float()
    mask = labels != ignore_index
    safe = torch.where(mask, labels, labels.new_zeros(()))
    lse_all = torch.logsumexp(logits, dim=-1)
    lse_classes = torch.logsumexp(logits[..., :-1], dim=-1)
    log_keep = lse_classes - lse_all  # log(1 - p_a)
    ce_renorm = lse_classes - logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # -log(p_y / (1 - p_a))
    per_item = log_keep.exp() * ce_renorm - alpha * log_keep
    return reduce_loss(per_item, mask, reduction, num_items_in_batch)


def multitask_dac_loss(
    logits: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    alphas: Mapping[str, float] | torch.Tensor,
    task_weights: Mapping[str, float] | None = None,
    ignore_index: int = -100,
    num_items_in_batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`deep_abstaining_loss` per task (one ``alpha`` each), weighted mean over tasks.

    Normalised like :func:`multitask_kd_loss`: ``sum_t w_t * (task t's summed loss) / N_t``.

    Args:
        logits: Task → ``(B, C_t + 1)`` logits, abstain class last.
        labels: ``(B, T)`` labels in the order of ``logits``.
        alphas: Task → abstention penalty, or a ``(T,)`` tensor in task order.
        task_weights: Optional task → weight.
        ignore_index: Missing-label value.
        num_items_in_batch: Optional ``(T,)`` per-task labelled counts over the accumulation step.
    """
    tasks = list(logits)
    if labels.shape[-1] != len(tasks):
        raise ValueError(f"labels have {labels.shape[-1]} task columns but there are {len(tasks)} tasks.")
    weights = task_weight_vector(tasks, task_weights)
    total = next(iter(logits.values())).new_zeros((), dtype=torch.float32)
    for i, task in enumerate(tasks):
        alpha = alphas[i] if torch.is_tensor(alphas) else alphas[task]
        y = labels[:, i]
        count = num_items_in_batch[i] if num_items_in_batch is not None else (y != ignore_index).sum()
        task_loss = deep_abstaining_loss(
            logits[task], y, alpha=alpha, ignore_index=ignore_index, reduction="mean", num_items_in_batch=count
        )
        total = total + weights[i].to(total.device) * task_loss
    return total


@register_loss("similarity_kd")
def similarity_kd_loss(
    student_queries: torch.Tensor,
    teacher_queries: torch.Tensor,
    student_keys: torch.Tensor | None = None,
    teacher_keys: torch.Tensor | None = None,
    *,
    temperature: float = 0.1,
    exclude_self: bool | None = None,
    reduction: Reduction = "mean",
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Similarity (relation) distillation: each query's distribution over the keys, student against teacher.

    Per query ``i``: ``KL(p_t(i) || p_s(i))`` with ``p(i) = softmax_j(cos(q_i, k_j) / temperature)``, computed within
    each model (so teacher and student widths may differ). With no keys the queries are their own keys: in-batch
    slide-slide relations, self-similarity left out (``exclude_self``; needs at least 2 queries). With keys, e.g. the
    teacher's report embeddings, it is slide-report similarity distillation. No ``temperature**2`` factor: cosine
    logits are bounded, the temperature only sharpens them.

    Args:
        student_queries: ``(B, D_s)`` student embeddings.
        teacher_queries: ``(B, D_t)`` teacher embeddings.
        student_keys: ``(K, D_s)`` keys on the student side (default: ``student_queries``).
        teacher_keys: ``(K, D_t)`` keys on the teacher side (default: ``teacher_queries``).
        temperature: Softmax temperature on cosine similarities (> 0).
        exclude_self: Leave out key ``i`` for query ``i`` (default: True exactly when the keys are the queries).
        reduction: ``"none"`` (per query), ``"sum"`` or ``"mean"``.
        num_items_in_batch: Denominator for ``"mean"``.
    """
    check_reduction(reduction)
    check_temperature(temperature)
    if (student_keys is None) != (teacher_keys is None):
        raise ValueError("Give both student_keys and teacher_keys, or neither (in-batch query-query relations).")
    if exclude_self is None:
        exclude_self = student_keys is None
    s_keys = student_queries if student_keys is None else student_keys
    t_keys = teacher_queries if teacher_keys is None else teacher_keys
    if student_queries.shape[0] != teacher_queries.shape[0] or s_keys.shape[0] != t_keys.shape[0]:
        raise ValueError(
            f"Student and teacher must see the same items: {student_queries.shape[0]} vs {teacher_queries.shape[0]} "
            f"queries, {s_keys.shape[0]} vs {t_keys.shape[0]} keys."
        )
    if exclude_self and (s_keys.shape[0] != student_queries.shape[0] or s_keys.shape[0] < 2):
        raise ValueError("exclude_self needs keys that are the queries and a batch of at least 2 items.")
    s = F.normalize(student_queries.float(), dim=-1) @ F.normalize(s_keys.float(), dim=-1).T / temperature
    with torch.no_grad():
        t = F.normalize(teacher_queries.detach().float(), dim=-1) @ F.normalize(t_keys.detach().float(), dim=-1).T
        t = t / temperature
    if exclude_self:
        eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
        s, t = s.masked_fill(eye, float("-inf")), t.masked_fill(eye, float("-inf"))
    t_logp, s_logp = F.log_softmax(t, dim=-1), F.log_softmax(s, dim=-1)
    terms = t_logp.exp() * (t_logp - s_logp)
    per_item = torch.where(torch.isfinite(t), terms, terms.new_zeros(())).sum(-1)
    return reduce_loss(per_item, torch.ones_like(per_item, dtype=torch.bool), reduction, num_items_in_batch)
