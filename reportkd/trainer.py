"""The shared distillation trainer: a thin ``transformers.Trainer`` (``accelerate launch`` scales it) with a teacher.

:class:`DistillationTrainer` loads and freezes the teacher, counts the items of each gradient-accumulation step over
all processes, and owns the one ``compute_loss``: it calls the family's :meth:`~DistillationTrainer.compute_loss_terms`
hook (named loss terms, the total under ``"loss"``), scales for processes and accumulation once, and logs every term.
A family's trainer overrides that hook and nothing else of the loss path (see ``text/mtcnn/trainer.py``,
``text/skd``, ``vlm/clip``, ``vlm/slide``). :class:`LogitDistillationTrainer` is the single-head one: classifiers
and causal LMs distilled with a logit loss of :data:`LOGIT_LOSSES`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel, Trainer, TrainingArguments

from .hub.trainer import HubMixin
from .losses import generalized_jsd_loss, soft_target_kd_loss, teacher_log_probs

LossTerms = dict[str, torch.Tensor]


@dataclass
class DistillationConfig(TrainingArguments):
    """What every distillation trainer shares, on top of ``transformers.TrainingArguments``.

    Each family adds its own loss fields in its own config (``LogitDistillationConfig``,
    ``MtCNNDistillationConfig``, ``SKDConfig``, ``CLIPDistillationConfig``…).

    Args:
        teacher_model_name_or_path: Teacher checkpoint (local path or hub id) when no module is passed.
        trust_remote_code: Allow custom code when loading the teacher from a path or hub id (off by default).
        teacher_outputs_key: Input key holding precomputed teacher outputs (the teacher need not be in memory).
        remove_unused_columns: Kept False: collators need the teacher outputs and labels.
        hub_private_repo: Create hub repositories private (default True here; ``transformers`` defaults to public).
        hub_local_dir: A local hub directory: ``push_to_hub`` writes ``<hub_local_dir>/<org>/<name>/`` instead of
            uploading (air-gapped sites).
    """

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Teacher checkpoint (local path or hub id), when no teacher module is given."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code when loading the teacher. Off by default."}
    )
    teacher_outputs_key: str = field(
        default="teacher_probs", metadata={"help": "Input key of precomputed teacher outputs."}
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
        super().__post_init__()
        if not isinstance(self.teacher_outputs_key, str) or not self.teacher_outputs_key:
            raise ValueError(f"teacher_outputs_key must be a non-empty string, got {self.teacher_outputs_key!r}.")

    @classmethod
    def from_training_args(cls, args: TrainingArguments, **overrides: Any) -> DistillationConfig:
        """This config built from a user's ``TrainingArguments`` (or another config), plus ``overrides``.

        Every field both classes have is copied (bf16, gradient accumulation, max_steps, report_to, use_cpu…),
        except that a field left at the ``TrainingArguments`` default keeps this config's own default (e.g.
        ``remove_unused_columns=False``, ``hub_private_repo=True``). Fields only ``args`` has are dropped.

        Args:
            args: The user's training arguments.
            **overrides: Fields to set on top (``output_dir``, ``alpha``…).
        """
        base = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
        own = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
        values = {}
        for f in dataclasses.fields(args):
            if not f.init or f.name not in own or f.name in overrides:
                continue
            value = getattr(args, f.name)
            if f.name in base and own[f.name] != base[f.name] and value == base[f.name]:
                continue  # unchanged TrainingArguments default: this config's default wins
            values[f.name] = value
        return cls(**values, **overrides)


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
    """A ``Trainer`` with a frozen teacher and one loss hook (template method).

    Subclasses implement :meth:`compute_loss_terms`, normalising by ``num_items_in_batch`` (the items counted by
    :meth:`count_items` over the whole gradient-accumulation step and all processes), so accumulating ``k`` batches
    of ``b`` equals one batch of ``k * b``. :meth:`compute_loss` then multiplies by the number of processes (DDP
    averages gradients) and tells the ``Trainer`` the loss is already scaled for accumulation. Every named term
    is logged next to ``loss``, averaged over the logging window and the processes. ``push_to_hub`` /
    ``create_model_card`` come from :class:`reportkd.hub.HubMixin`.

    Args:
        model: The student.
        teacher_model: Teacher module or path / hub id; ``None`` uses ``args.teacher_model_name_or_path`` (may stay
            None: precomputed teacher outputs in the inputs, or no teacher at all).
        args: A :class:`DistillationConfig` (a family's subclass).
        **kwargs: Everything ``transformers.Trainer`` accepts.
    """

    teacher_auto_class = AutoModel
    args_class: type[DistillationConfig] = DistillationConfig

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        args: DistillationConfig | None = None,
        **kwargs: Any,
    ):
        name, config = type(self).__name__, self.args_class.__name__
        if args is None:
            raise ValueError(f"{name} needs args={config}(output_dir=...).")
        if not isinstance(args, self.args_class):
            raise TypeError(f"{name} needs args={config}(...), got {type(args).__name__}.")
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
        # loss terms and metrics of the current logging window, for training and evaluation
        self._term_logs: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    # -- item counting -----------------------------------------------------------------------------------------
    def count_items(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """Items of one micro-batch the loss is normalised by (default: labels other than -100; None: no count).

        Families override it when an item is something else (per task, per member, per image-text pair).
        """
        labels = batch.get("labels")
        return None if labels is None else labels.ne(-100).sum()

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        counts = [c for c in (self.count_items(b) for b in batch_samples) if c is not None]
        if not counts:
            return batch_samples, None
        num_items = torch.stack([torch.as_tensor(c) for c in counts]).sum(0).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            num_items = self.accelerator.reduce(num_items, reduction="sum")
        return batch_samples, num_items

    # -- loss ----------------------------------------------------------------------------------------------------
    def compute_loss_terms(
        self, model: nn.Module, inputs: Mapping[str, Any], num_items_in_batch: torch.Tensor | None
    ) -> tuple[LossTerms, Any]:
        """The family's loss: named terms (the differentiable total under ``"loss"``) and the model outputs.

        The total is this process's share of the step's loss: normalised by ``num_items_in_batch`` when given (else
        by this micro-batch's own items), not multiplied by the number of processes (done once by
        :meth:`compute_loss`). Other terms are logged only (pass them detached).

        Args:
            model: The (wrapped) student.
            inputs: The prepared micro-batch.
            num_items_in_batch: Output of :meth:`count_items` summed over the accumulation step and processes.
        """
        raise NotImplementedError(
            f"{type(self).__name__} defines no loss: use LogitDistillationTrainer (single-head logit KD), a family's "
            "trainer (MtCNNDistillationTrainer, SKDTrainer, CLIPDistillationTrainer…) or implement compute_loss_terms."
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms, outputs = self.compute_loss_terms(model, inputs, num_items_in_batch)
        if "loss" not in terms:
            raise KeyError(f"{type(self).__name__}.compute_loss_terms must return the total under 'loss'.")
        loss = terms["loss"]
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        store = self._term_logs["train" if model.training else "eval"]
        for name, value in terms.items():
            if name != "loss" and value is not None:
                store[name].append(torch.as_tensor(value).detach().float().mean())
        return (loss, outputs) if return_outputs else loss

    def log_metric(self, name: str, value: float | torch.Tensor) -> None:
        """Adds a value to the current logging window (averaged like the loss terms), e.g. a masking ratio."""
        self._term_logs["train" if self.model.training else "eval"][name].append(torch.as_tensor(value).float())

    def _window_means(self, store: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        names = sorted(store)
        means = torch.stack([torch.stack([v.to(self.args.device) for v in store[n]]).mean() for n in names])
        if self.accelerator.num_processes > 1:
            means = self.accelerator.reduce(means, reduction="mean")
        store.clear()
        return {n: round(float(m), 6) for n, m in zip(names, means.tolist())}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_logs["train"]:
            logs.update(self._window_means(self._term_logs["train"]))
        if any(k.startswith("eval_") for k in logs) and self._term_logs["eval"]:
            logs.update({f"eval_{k}": v for k, v in self._window_means(self._term_logs["eval"]).items()})
        super().log(logs, start_time)


# -- single-head logit distillation ---------------------------------------------------------------------------------
# Loss name -> (function, its extra keyword arguments from (config, teacher type)). Every function is called as
# ``fn(student_logits, teacher, labels, *, temperature, num_items_in_batch, **extra)``; a function without a
# ``teacher_type`` argument gets teacher logits (precomputed probabilities are passed as log-probabilities).
LOGIT_LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[Any, str], dict[str, Any]]]] = {
    "soft_target_kd": (
        soft_target_kd_loss,
        lambda args, teacher_type: {"alpha": args.alpha, "teacher_type": teacher_type},
    ),
    "generalized_jsd": (generalized_jsd_loss, lambda args, _: {"beta": args.beta}),
    "forward_kl": (generalized_jsd_loss, lambda args, _: {"beta": 0.0}),
    "reverse_kl": (generalized_jsd_loss, lambda args, _: {"beta": 1.0}),
}


@dataclass
class LogitDistillationConfig(DistillationConfig):
    """Arguments of :class:`LogitDistillationTrainer`: single-head logit distillation (classifiers, causal LMs).

    Args:
        loss: One of :data:`LOGIT_LOSSES`: ``soft_target_kd`` (Hinton, mixed with hard labels by ``alpha``),
            ``generalized_jsd`` (GKD, ``beta``), ``forward_kl``, ``reverse_kl``.
        alpha: ``soft_target_kd``: weight of the distillation term; ``1 - alpha`` weights the hard-label loss.
        temperature: Softening temperature of teacher and student distributions.
        beta: ``generalized_jsd``: interpolation between forward (0) and reverse (1) KL.
        teacher_outputs_type: Whether precomputed teacher outputs are ``"probs"`` or ``"logits"``.
    """

    loss: str = field(
        default="soft_target_kd", metadata={"help": "Logit distillation loss: " + ", ".join(LOGIT_LOSSES) + "."}
    )
    alpha: float = field(
        default=1.0, metadata={"help": "soft_target_kd: weight of the distillation term in [0, 1] (1 - alpha: CE)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Softening temperature (> 0)."})
    beta: float = field(default=0.5, metadata={"help": "generalized_jsd: interpolation in [0, 1]."})
    teacher_outputs_type: str = field(
        default="probs", metadata={"help": "'probs' or 'logits': what the precomputed teacher outputs hold."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOGIT_LOSSES:
            raise ValueError(
                f"loss {self.loss!r} cannot be called on single-head logits; use one of {', '.join(LOGIT_LOSSES)} "
                "(other losses belong to their family's trainer)."
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}.")
        if self.teacher_outputs_type not in ("probs", "logits"):
            raise ValueError(f"teacher_outputs_type must be 'probs' or 'logits', got {self.teacher_outputs_type!r}.")


class LogitDistillationTrainer(DistillationTrainer):
    """Distils a teacher's logits (or precomputed outputs) into a single-head student with a loss of
    :data:`LOGIT_LOSSES`. Causal LMs are scored at position ``t`` against token ``t + 1``. Without teacher and
    teacher outputs it trains on hard labels (``soft_target_kd`` with ``alpha=0``).

    Args:
        model: The student.
        teacher_model: Teacher module or path / hub id (see :class:`DistillationTrainer`).
        args: A :class:`LogitDistillationConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts.
    """

    args_class = LogitDistillationConfig

    def _is_causal_lm(self) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()

    def count_items(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        labels = batch.get("labels")
        if labels is None:
            return None
        if self._is_causal_lm():
            labels = labels[..., 1:]  # position t predicts token t + 1
        return labels.ne(-100).sum()

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        args = self.args
        inputs = dict(inputs)
        teacher = inputs.pop(args.teacher_outputs_key, None)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        student = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        teacher_type = args.teacher_outputs_type
        hard_only = teacher is None and self.teacher is None
        if teacher is None and not hard_only and (args.loss != "soft_target_kd" or args.alpha > 0):
            with torch.no_grad():
                t_out = self.teacher(**inputs)
            teacher, teacher_type = (t_out["logits"] if isinstance(t_out, Mapping) else t_out[0]), "logits"
        if labels is not None and self._is_causal_lm():
            student, labels = student[:, :-1], labels[:, 1:]
            teacher = teacher[:, :-1] if teacher is not None else None
        if hard_only or teacher is None:  # hard labels only (no teacher, or soft_target_kd with alpha 0)
            if labels is None:
                raise ValueError(
                    "Without a teacher or teacher outputs the student trains on hard labels: pass labels."
                )
            loss = soft_target_kd_loss(
                student, student.detach(), labels, alpha=0.0, num_items_in_batch=num_items_in_batch
            )
            return {"loss": loss}, outputs
        loss_fn, extra = LOGIT_LOSSES[args.loss]
        kwargs = extra(args, teacher_type)
        if teacher_type == "probs" and "teacher_type" not in kwargs:
            teacher = teacher_log_probs(teacher, teacher_type="probs")  # log-probabilities are valid logits
        loss = loss_fn(
            student, teacher, labels, temperature=args.temperature, num_items_in_batch=num_items_in_batch, **kwargs
        )
        return {"loss": loss}, outputs


__all__ = [
    "LOGIT_LOSSES",
    "DistillationConfig",
    "DistillationTrainer",
    "LogitDistillationConfig",
    "LogitDistillationTrainer",
    "LossTerms",
    "check_label_maps",
    "load_teacher",
]
