"""MtCNN training on the shared :class:`~reportkd.trainer.DistillationTrainer`: student, baseline and ensemble.

One loss, :func:`reportkd.losses.multitask_kd_loss`, trains all three:

- the distilled student: soft labels of the teacher ensemble (precomputed under ``teacher_outputs_key``, or a
  teacher model) mixed with hard labels by ``alpha``;
- the hard-label baseline: no teacher and no teacher outputs, so ``alpha`` is 0 whatever the config says;
- the vectorized teacher ensemble (:class:`~reportkd.text.mtcnn.MtCNNEnsembleForReportClassification`): logits with
  a member axis, each member learning from its rows of ``member_mask`` (out-of-fold / bagging).

Task weights apply to all of them, and every loss is normalised by the labelled reports of the whole
gradient-accumulation step and all processes (per task, and per member for ensembles), so accumulating ``k``
batches of ``b`` equals one batch of ``k * b``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from reportkd.losses import multitask_kd_loss
from reportkd.trainer import DistillationConfig, DistillationTrainer


def parse_task_weights(value: Mapping[str, float] | str | None) -> dict[str, float] | None:
    """Task weights from a dict or a JSON object string; checks they are numbers >= 0 with one above 0.

    Args:
        value: ``{"organ": 2, "grade": 1}``, its JSON text, or None (uniform weights).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            example = '{"organ": 2, "grade": 1}'
            raise ValueError(f"task_weights must be a JSON object such as '{example}': {e}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"task_weights must map task names to weights, got {type(value).__name__}: {value!r}.")
    weights = {}
    for task, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"task_weights[{task!r}] must be a number >= 0, got {weight!r}.")
        weights[str(task)] = float(weight)
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"task_weights must give at least one task a weight above 0, got {weights}.")
    return weights


@dataclass
class MultitaskTrainingConfig(DistillationConfig):
    """What every MtCNN trainer shares (:class:`MtCNNDistillationTrainer`, ``DACTrainer``).

    Args:
        task_weights: Optional task → loss weight: a dict, or a JSON object string on the command line
            (``--task_weights '{"organ": 2, "grade": 1}'``); uniform by default, missing tasks weigh 0.
    """

    task_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={"help": "Task name -> loss weight, a JSON object on the command line (uniform by default)."},
    )

    def __post_init__(self):
        self.task_weights = parse_task_weights(self.task_weights)
        super().__post_init__()


@dataclass
class MtCNNDistillationConfig(MultitaskTrainingConfig):
    """Arguments of :class:`MtCNNDistillationTrainer`.

    Args:
        alpha: Weight of the soft labels; ``1 - alpha`` weights the hard labels. Ignored (0) without a teacher and
            teacher outputs: the hard-label baseline and the teacher ensemble.
        temperature: Softening temperature of teacher and student distributions.
        teacher_outputs_type: Whether precomputed teacher outputs are ``"probs"`` (ensemble soft labels) or
            ``"logits"``.
    """

    alpha: float = field(
        default=1.0, metadata={"help": "Weight of the soft labels in [0, 1]; 1 - alpha weights hard labels."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Softening temperature (> 0)."})
    teacher_outputs_type: str = field(
        default="probs", metadata={"help": "'probs' or 'logits': what the precomputed teacher outputs hold."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.teacher_outputs_type not in ("probs", "logits"):
            raise ValueError(f"teacher_outputs_type must be 'probs' or 'logits', got {self.teacher_outputs_type!r}.")


def split_member_mask(inputs: dict[str, Any]) -> torch.Tensor | None:
    """Pops ``member_mask`` (N, B) or ``member_mask_by_row`` (B, N) from ``inputs``; returns the (N, B) mask."""
    mask, by_row = inputs.pop("member_mask", None), inputs.pop("member_mask_by_row", None)
    if by_row is not None:
        if mask is not None:
            raise ValueError("Give member_mask (N, B) or member_mask_by_row (B, N), not both.")
        mask = by_row.transpose(0, 1)
    return mask


class MultitaskTrainer(DistillationTrainer):
    """Counts labelled reports per task (per member and task with a member mask) for the MtCNN losses.

    Subclasses implement :meth:`compute_loss_terms`; ``num_items_in_batch`` is then ``(T,)`` (or ``(N, T)``).
    """

    args_class = MultitaskTrainingConfig

    def count_items(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        labels = batch.get("labels")
        if labels is None:
            return None
        present = labels.ne(-100)
        mask = split_member_mask(dict(batch))
        if mask is not None:  # ensembles: (N, T) labelled reports per member and task
            return (mask.to(present.device, torch.bool)[:, :, None] & present[None]).sum(1)
        return present.sum(0)  # (T,): labelled reports per task


class MtCNNDistillationTrainer(MultitaskTrainer):
    """Trains an MtCNN (or its vectorized ensemble) with :func:`~reportkd.losses.multitask_kd_loss`.

    With a teacher (``teacher_model`` / ``teacher_model_name_or_path``) or precomputed teacher outputs
    (``inputs[args.teacher_outputs_key]``, task → (B, C_t)) it distils; with neither it trains on hard labels.

    Args:
        model: ``MtCNNForReportClassification``, ``MtCNNEnsembleForReportClassification`` or any model whose
            output ``logits`` map task names to logits and whose config has ``task_labels``.
        teacher_model: Optional teacher module or path / hub id.
        args: An :class:`MtCNNDistillationConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts.
    """

    args_class = MtCNNDistillationConfig
    card_method = "soft_target_kd"

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        args = self.args
        inputs = dict(inputs)
        teacher = inputs.pop(args.teacher_outputs_key, None)
        labels = inputs.pop("labels", None)
        member_mask = split_member_mask(inputs)
        outputs = model(**inputs)
        teacher_type, alpha = args.teacher_outputs_type, args.alpha
        if teacher is None and self.teacher is not None and alpha > 0:  # on the fly, on the batch the student sees
            with torch.no_grad():
                if hasattr(self.teacher, "soft_labels"):  # MtCNN / ensemble: mean softmax over members
                    teacher = self.teacher.soft_labels(inputs["input_ids"], inputs.get("attention_mask"))
                    teacher_type = "probs"
                else:
                    teacher, teacher_type = self.teacher(**inputs)["logits"], "logits"
        if teacher is None:
            alpha = 0.0  # hard-label baseline / teacher ensemble
        loss = multitask_kd_loss(
            outputs["logits"], teacher, labels, temperature=args.temperature, alpha=alpha, teacher_type=teacher_type,
            task_weights=args.task_weights, member_mask=member_mask, num_items_in_batch=num_items_in_batch,
        )  # fmt: skip
        return {"loss": loss}, outputs


__all__ = [
    "MtCNNDistillationConfig",
    "MtCNNDistillationTrainer",
    "MultitaskTrainer",
    "MultitaskTrainingConfig",
    "parse_task_weights",
    "split_member_mask",
]
