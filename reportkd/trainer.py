"""The shared distillation trainer: a ``transformers.Trainer`` (so ``accelerate launch`` scales it) with a teacher.

The teacher is a module, a local path / hub id, or absent: then precomputed teacher outputs travel with the
data (``inputs[args.teacher_outputs_key]``), so the student never needs the teacher in memory. With neither,
the trainer trains the model on its own supervised loss (teacher ensembles, hard-label baselines).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel, Trainer, TrainingArguments

from .hub.trainer import HubMixin
from .losses import LOSSES, multitask_kd_loss


@dataclass
class DistillationConfig(TrainingArguments):
    """Arguments of :class:`DistillationTrainer` on top of ``transformers.TrainingArguments``.

    Args:
        teacher_model_name_or_path: Teacher checkpoint (local path or hub id) when no module is passed.
        alpha: Weight of the distillation term; ``1 - alpha`` weights the hard-label loss.
        temperature: Softening temperature of teacher and student distributions.
        loss: Name of a registered distillation loss for single-head students (see ``reportkd.losses.LOSSES``).
            Multitask students (logits given per task) use ``multitask_kd``.
        beta: Interpolation of the generalized JSD (``loss="generalized_jsd"``).
        teacher_outputs_key: Input key holding precomputed teacher outputs.
        teacher_outputs_type: Whether precomputed teacher outputs are ``"probs"`` or ``"logits"``.
        task_weights: Optional task → weight for multitask students: a dict, or a JSON object string on the command
            line (``--task_weights '{"organ": 2, "grade": 1}'``).
        trust_remote_code: Allow custom code when loading the teacher from a path or hub id (off by default).
        hub_private_repo: Create hub repositories private (default True here; ``transformers`` defaults to public).
        hub_local_dir: A local hub directory: ``push_to_hub`` writes ``<hub_local_dir>/<org>/<name>/`` instead of
            uploading (air-gapped sites).
    """

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Teacher checkpoint (local path or hub id), when no teacher module is given."}
    )
    alpha: float = field(
        default=1.0, metadata={"help": "Weight of the distillation term in [0, 1]; 1 - alpha weights hard labels."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Softening temperature (> 0)."})
    loss: str = field(
        default="soft_target_kd",
        metadata={"help": "Registered distillation loss for single-head students: " + ", ".join(LOSSES.names())},
    )
    beta: float = field(default=0.5, metadata={"help": "Generalized JSD interpolation in [0, 1]."})
    teacher_outputs_key: str = field(
        default="teacher_probs", metadata={"help": "Input key of precomputed teacher outputs."}
    )
    teacher_outputs_type: str = field(
        default="probs", metadata={"help": "'probs' or 'logits': what the precomputed teacher outputs hold."}
    )
    task_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Task name -> loss weight for multitask students, a JSON object on the command line "
            "(uniform by default)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code when loading the teacher. Off by default."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep dataset columns: the collator needs teacher outputs and labels."}
    )
    hub_private_repo: bool | None = field(
        default=True, metadata={"help": "Create hub repositories private (set False for public ones)."}
    )
    hub_local_dir: str | None = field(
        default=None, metadata={"help": "Local hub directory: push_to_hub writes <dir>/<org>/<name>/ instead."}
    )

    def __post_init__(self):
        self.task_weights = parse_task_weights(self.task_weights)
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}.")
        if self.teacher_outputs_type not in ("probs", "logits"):
            raise ValueError(f"teacher_outputs_type must be 'probs' or 'logits', got {self.teacher_outputs_type!r}.")
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}. Registered: {', '.join(LOSSES.names())}.")


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


def load_teacher(
    teacher: nn.Module | str, *, auto_class: Any = AutoModel, trust_remote_code: bool = False, **kwargs: Any
) -> nn.Module:
    """Returns a frozen teacher in evaluation mode.

    Args:
        teacher: A module, or a local path / hub id loaded with ``auto_class.from_pretrained`` (safetensors only).
        auto_class: The ``transformers`` auto class to load with (``AutoModel``, ``AutoModelForCausalLM``…).
        trust_remote_code: Passed to ``from_pretrained``; off unless the user asks.
        **kwargs: Further ``from_pretrained`` arguments (``torch_dtype``…).
    """
    if isinstance(teacher, str):
        teacher = auto_class.from_pretrained(
            teacher, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
        )
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module or a path / hub id, got {type(teacher).__name__}.")
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def check_label_maps(student: nn.Module, teacher: nn.Module) -> None:
    """Raises if a multitask teacher and student disagree on tasks or label maps."""
    s = getattr(getattr(student, "config", None), "task_labels", None)
    t = getattr(getattr(teacher, "config", None), "task_labels", None)
    if s is None or t is None:
        return
    for task, labels in s.items():
        if task not in t:
            raise ValueError(f"The teacher has no task {task!r} (its tasks: {list(t)}). Use one label map for both.")
        if list(t[task]) != list(labels):
            raise ValueError(
                f"Teacher and student label maps differ for task {task!r}: teacher {t[task][:8]}…, student "
                f"{labels[:8]}…. Build the student's config from the teacher's task_labels."
            )


class DistillationTrainer(HubMixin, Trainer):
    """A ``Trainer`` that distils a teacher into the student.

    The loss is normalised by the number of counted items over the whole gradient-accumulation step and all
    processes (per task for multitask students), so accumulating ``k`` batches of ``b`` equals one batch of
    ``k * b``. ``push_to_hub`` / ``create_model_card`` come from :class:`reportkd.hub.HubMixin` (reportkd's card
    templates, safetensors only, private repositories, local hub directories).

    Args:
        model: The student.
        teacher_model: Teacher module or path / hub id; ``None`` uses ``args.teacher_model_name_or_path``, then
            precomputed teacher outputs in the inputs, then the model's own supervised loss.
        args: A :class:`DistillationConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts.
    """

    teacher_auto_class = AutoModel
    # causal-LM students: score logits at position t against label t + 1 (subclasses that align labels set False)
    shift_causal_labels = True

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        args: DistillationConfig | None = None,
        **kwargs: Any,
    ):
        if args is None:
            raise ValueError("DistillationTrainer needs args=DistillationConfig(output_dir=...).")
        if not isinstance(args, DistillationConfig):
            raise TypeError(f"args must be a DistillationConfig, got {type(args).__name__}.")
        super().__init__(model=model, args=args, **kwargs)
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        self.teacher = None
        if teacher_model is not None:
            self.teacher = load_teacher(
                teacher_model, auto_class=self.teacher_auto_class, trust_remote_code=args.trust_remote_code
            )
            check_label_maps(self.model, self.teacher)
            self.teacher = self.accelerator.prepare_model(self.teacher, evaluation_mode=True)
        self.model_accepts_loss_kwargs = True

    # -- item counting -----------------------------------------------------------------------------------------
    def _count_items(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        labels = batch.get("labels")
        if labels is None:
            return None
        if self._is_multitask():
            present = labels.ne(-100)
            mask = batch.get("member_mask")
            if mask is None and batch.get("member_mask_by_row") is not None:
                mask = batch["member_mask_by_row"].transpose(0, 1)
            if mask is not None:  # ensembles with member masks: (N, T) labelled reports per member and task
                return (mask.to(present.device, torch.bool)[:, :, None] & present[None]).sum(1)
            return present.sum(0)  # (T,): labelled reports per task
        if self.shift_causal_labels and self._is_causal_lm():
            labels = labels[..., 1:]  # position t predicts token t + 1
        return labels.ne(-100).sum()

    def _is_causal_lm(self) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()

    def _is_multitask(self) -> bool:
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        return getattr(config, "task_labels", None) is not None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        counts = [c for c in (self._count_items(b) for b in batch_samples) if c is not None]
        if not counts:
            return batch_samples, None
        num_items = torch.stack(counts).sum(0).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            num_items = self.accelerator.reduce(num_items, reduction="sum")
        return batch_samples, num_items

    # -- loss ----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        key = self.args.teacher_outputs_key
        teacher_outputs = inputs.pop(key, None)
        if self.teacher is None and teacher_outputs is None:
            if getattr(self.accelerator.unwrap_model(model), "loss_takes_item_counts", False) and torch.is_tensor(
                num_items_in_batch
            ):
                # The model normalises by the counts of the whole accumulation step (e.g. MtCNN ensembles).
                self.loss_is_scaled_for_ga = True
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch=num_items_in_batch)
            # Supervised: the model's own loss, a per-batch mean that the Trainer scales for accumulation.
            self.loss_is_scaled_for_ga = False
            return super().compute_loss(model, inputs, return_outputs=return_outputs)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        student = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        teacher_type = self.args.teacher_outputs_type
        if teacher_outputs is None and self.args.alpha > 0:
            with torch.no_grad():
                t_out = self.teacher(**inputs)
            teacher_outputs = t_out["logits"] if isinstance(t_out, Mapping) else t_out[0]
            teacher_type = "logits"
        if (
            self.shift_causal_labels
            and not isinstance(student, Mapping)
            and labels is not None
            and self._is_causal_lm()
        ):
            # causal LMs: logits at position t are scored against token t + 1 (teacher outputs likewise)
            student, labels = student[:, :-1], labels[:, 1:]
            teacher_outputs = teacher_outputs[:, :-1] if teacher_outputs is not None else None
        loss = self._distillation_loss(student, teacher_outputs, labels, teacher_type, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        return (loss, outputs) if return_outputs else loss

    def _distillation_loss(self, student, teacher, labels, teacher_type, num_items_in_batch) -> torch.Tensor:
        args = self.args
        if isinstance(student, Mapping):
            return multitask_kd_loss(
                student,
                teacher,
                labels,
                temperature=args.temperature,
                alpha=args.alpha,
                teacher_type=teacher_type,
                task_weights=args.task_weights,
                num_items_in_batch=num_items_in_batch,
            )
        loss_fn = LOSSES.get(args.loss)
        kwargs: dict[str, Any] = {"temperature": args.temperature, "num_items_in_batch": num_items_in_batch}
        if args.loss == "soft_target_kd":
            kwargs.update(alpha=args.alpha, teacher_type=teacher_type)
        elif args.loss == "generalized_jsd":
            kwargs["beta"] = args.beta
        return loss_fn(student, teacher, labels, **kwargs)
