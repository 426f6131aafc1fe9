"""Deep Abstaining Classifier (DAC) training for MtCNN (FrESCO; Thulasidasan et al., ICML 2019).

Every task head gets an extra "abstain" output (``MtCNNConfig(abstain_class=True)``) trained with
:func:`reportkd.losses.deep_abstaining_loss`. The per-task abstention penalty ``alpha`` is tuned during training
toward a target accuracy on a validation split, as FrESCO does: after each epoch (or every ``dac_tune_steps``), for
each task, ``alpha *= clip(1 + gain * (accuracy on non-abstained - target), 1 / scale, scale)`` — too many errors
lower the penalty (abstain more), spare accuracy raises it (abstain less). The penalties live in the model's
``dac_alpha`` buffer, so they are saved with the weights and restored when a killed run resumes.

At prediction, a DAC model abstains on a task when the abstain output is its most probable class
(:func:`dac_decisions`); its renormalised class probabilities can also be thresholded like any other model's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import TrainerCallback

from reportkd.losses import multitask_dac_loss

from .trainer import MultitaskTrainer, MultitaskTrainingConfig

logger = logging.getLogger(__name__)


@dataclass
class DACConfig(MultitaskTrainingConfig):
    """Training arguments of :class:`DACTrainer` (``task_weights`` from :class:`MultitaskTrainingConfig`).

    Args:
        dac_target_accuracy: Accuracy on non-abstained validation reports that the penalties are tuned toward;
            ``None`` keeps them fixed at the model's ``dac_alpha``.
        dac_task_targets: Optional per-task targets (dict or JSON string) overriding ``dac_target_accuracy``.
        dac_acc_gain: Gain of the multiplicative update ``1 + gain * (accuracy - target)``.
        dac_alpha_scale: Largest factor (and smallest ``1 / factor``) one update may apply.
        dac_tune_steps: Tune every this many optimizer steps; ``0`` tunes at the end of each epoch.
    """

    dac_target_accuracy: float | None = field(
        default=0.97, metadata={"help": "Target accuracy on non-abstained validation reports; None = fixed alpha."}
    )
    dac_task_targets: Any = field(
        default=None, metadata={"help": "Per-task targets as JSON, e.g. '{\"histology\": 0.9}'."}
    )
    dac_acc_gain: float = field(default=10.0, metadata={"help": "Gain of the alpha update."})
    dac_alpha_scale: float = field(default=2.0, metadata={"help": "Max factor of one alpha update (> 1)."})
    dac_tune_steps: int = field(default=0, metadata={"help": "Tune alpha every N steps (0 = every epoch)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.dac_task_targets, str):
            try:
                self.dac_task_targets = json.loads(self.dac_task_targets)
            except json.JSONDecodeError as e:
                raise ValueError(f"dac_task_targets must be a JSON object, got {self.dac_task_targets!r}: {e}") from e
        targets = {"dac_target_accuracy": self.dac_target_accuracy, **(self.dac_task_targets or {})}
        for name, value in targets.items():
            if value is not None and not 0.0 < float(value) < 1.0:
                raise ValueError(f"DAC target accuracy {name!r} must be in (0, 1), got {value!r}.")
        if not self.dac_alpha_scale > 1.0:
            raise ValueError(f"dac_alpha_scale must be > 1, got {self.dac_alpha_scale}.")
        if self.dac_acc_gain <= 0:
            raise ValueError(f"dac_acc_gain must be > 0, got {self.dac_acc_gain}.")
        if self.dac_tune_steps < 0:
            raise ValueError(f"dac_tune_steps must be >= 0, got {self.dac_tune_steps}.")

    def target_for(self, task: str) -> float | None:
        """The target accuracy of ``task`` (None: its penalty is not tuned)."""
        target = (self.dac_task_targets or {}).get(task, self.dac_target_accuracy)
        return None if target is None else float(target)


def dac_decisions(probs_with_abstain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and abstention flag from ``(N, C + 1)`` DAC probabilities (abstain last).

    Returns:
        ``(pred, abstained)``: the most probable real class, and whether the abstain output is the argmax.
    """
    p = np.asarray(probs_with_abstain)
    return p[:, :-1].argmax(1), p.argmax(1) == p.shape[1] - 1


def update_alpha(alpha: float, accuracy: float | None, target: float, *, gain: float, scale: float) -> float:
    """FrESCO's accuracy-mode update. ``accuracy`` None (everything abstained) counts as perfect accuracy."""
    error = 1.0 - target if accuracy is None else accuracy - target
    return alpha * float(np.clip(1.0 + gain * error, 1.0 / scale, scale))


class DACTrainer(MultitaskTrainer):
    """Trains a DAC MtCNN (``abstain_class=True``) and tunes its abstention penalties on ``eval_dataset``.

    Args:
        model: An ``MtCNNForReportClassification`` with ``config.abstain_class``.
        args: A :class:`DACConfig`.
        **kwargs: Everything :class:`~reportkd.trainer.DistillationTrainer` accepts; ``eval_dataset`` (a validation
            split, not the calibration split) is required when a target accuracy is set.
    """

    args_class = DACConfig
    card_method = "deep_abstaining_classifier"  # reportkd.hub method key of distillation.json / the model card

    def __init__(self, model=None, args: DACConfig | None = None, **kwargs: Any) -> None:
        if not isinstance(args, DACConfig):
            raise TypeError(f"DACTrainer needs args=DACConfig(...), got {type(args).__name__}.")
        config = getattr(model, "config", None)
        if not getattr(config, "abstain_class", False):
            raise ValueError("DACTrainer needs a model built with MtCNNConfig(abstain_class=True).")
        unknown = sorted(set(args.dac_task_targets or {}) - set(config.task_names))
        if unknown:
            raise ValueError(f"dac_task_targets names unknown task(s) {unknown}; tasks: {config.task_names}.")
        tuned = [t for t in config.task_names if args.target_for(t) is not None]
        if tuned and kwargs.get("eval_dataset") is None:
            raise ValueError(
                "DAC alpha tuning needs eval_dataset= (a validation split held out from training, not the "
                "calibration split), or set dac_target_accuracy=None to keep alpha fixed."
            )
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(_DACTuneCallback(self))

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        inputs = dict(inputs)
        inputs.pop(self.args.teacher_outputs_key, None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        alphas = self.accelerator.unwrap_model(model).dac_alpha
        loss = multitask_dac_loss(
            outputs.logits,
            labels,
            alphas=alphas,
            task_weights=self.args.task_weights,
            num_items_in_batch=num_items_in_batch,
        )
        return {"loss": loss}, outputs

    def validation_abstention(self) -> dict[str, dict[str, float | None]]:
        """Per task on ``eval_dataset``: accuracy on non-abstained reports and coverage (non-abstained fraction)."""
        from .predict import labels_by_task, predict_member_probs

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        probs = predict_member_probs(
            model,
            self.eval_dataset,
            pad_token_id=model.config.pad_token_id,
            batch_size=self.args.per_device_eval_batch_size * 4,
            with_abstain=True,
        )
        model.train(was_training)
        labels = labels_by_task(self.eval_dataset, model.config.task_labels)
        stats = {}
        for task, p in probs.items():
            has = labels[task] != -100
            pred, abstained = dac_decisions(p[has])
            kept = ~abstained
            stats[task] = {
                "accuracy": float((pred[kept] == labels[task][has][kept]).mean()) if kept.any() else None,
                "coverage": float(kept.mean()) if has.any() else None,
            }
        return stats

    def tune_alphas(self) -> dict[str, float]:
        """One tuning step of every task's penalty; logs them with the validation accuracy and coverage."""
        model = self.accelerator.unwrap_model(self.model)
        stats = self.validation_abstention()
        logs: dict[str, float] = {}
        for i, task in enumerate(model.config.task_names):
            target = self.args.target_for(task)
            if target is None or stats[task]["coverage"] is None:
                continue
            new = update_alpha(
                float(model.dac_alpha[i]),
                stats[task]["accuracy"],
                target,
                gain=self.args.dac_acc_gain,
                scale=self.args.dac_alpha_scale,
            )
            model.dac_alpha[i] = new
            logs[f"dac_alpha/{task}"] = new
            logs[f"dac_val_coverage/{task}"] = float(stats[task]["coverage"])
            if stats[task]["accuracy"] is not None:
                logs[f"dac_val_accuracy/{task}"] = float(stats[task]["accuracy"])
        if logs:
            self.log(logs)
        return {t: float(a) for t, a in zip(model.config.task_names, model.dac_alpha.tolist())}


class _DACTuneCallback(TrainerCallback):
    """Calls :meth:`DACTrainer.tune_alphas` at each epoch end (or every ``dac_tune_steps`` steps)."""

    def __init__(self, trainer: DACTrainer) -> None:
        self.trainer = trainer

    def _any_tuned(self) -> bool:
        config = self.trainer.accelerator.unwrap_model(self.trainer.model).config
        return any(self.trainer.args.target_for(t) is not None for t in config.task_names)

    def on_step_end(self, args, state, control, **kwargs):
        every = self.trainer.args.dac_tune_steps
        if every and state.global_step % every == 0 and self._any_tuned():
            self.trainer.tune_alphas()

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.trainer.args.dac_tune_steps and self._any_tuned():
            self.trainer.tune_alphas()


def dac_alphas(model) -> Mapping[str, float]:
    """Task → the abstention penalty stored in a DAC model."""
    return dict(zip(model.config.task_names, model.dac_alpha.tolist()))


__all__ = ["DACConfig", "DACTrainer", "dac_alphas", "dac_decisions", "update_alpha"]
