"""Configuration of :class:`~reportkd.text.skd.SKDTrainer`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from reportkd.trainer import DistillationConfig

MODES = ("sft", "supervised_kd", "on_policy", "seq_kd", "skd", "mixed")
SEQUENCE_LOSSES = ("forward_kl", "reverse_kl", "generalized_jsd")


@dataclass
class SKDConfig(DistillationConfig):
    """Arguments of :class:`~reportkd.text.skd.SKDTrainer` (on top of :class:`~reportkd.trainer.DistillationConfig`).

    One trainer, one switch (``mode``) for the data the student learns from; everything else (loss, normalisation,
    logging) is the same code path, so baselines differ only in ``mode``:

    - ``sft``: cross-entropy on the dataset completions (no teacher needed);
    - ``supervised_kd``: distillation loss on the dataset completions;
    - ``on_policy``: on-policy KD / GKD: with probability ``lmbda`` the student samples the completions,
      otherwise the dataset completions are used;
    - ``seq_kd``: the teacher samples the completions (sequence-level KD);
    - ``skd``: speculative KD: the student samples, the teacher replaces tokens outside its top-K;
    - ``mixed``: SKD completions with probability ``lmbda``, dataset completions otherwise.

    Defaults follow the official SKD recipe (Xu et al., ICLR 2025): top-K 25, student T 0.5 / top-p 0.5, teacher
    T 0.2 / top-p 0.5, token-level forward KL on every completion position, learning rate 1e-5.

    The loss is summed over completion tokens and divided by the number of completion tokens of the whole
    gradient-accumulation step over all processes. The completions of all micro-batches of a step are sampled when
    the step starts (the weights do not change before its optimizer update), so this count is known before the
    first backward pass and accumulating ``k`` micro-batches equals one batch ``k`` times larger.

    Args:
        mode: One of ``sft``, ``supervised_kd``, ``on_policy``, ``seq_kd``, ``skd``, ``mixed``.
        lmbda: Probability that a micro-batch uses sampled completions in ``on_policy`` and ``mixed`` modes.
        top_k: SKD keeps a student token when it is among the teacher's ``top_k`` tokens.
        num_draft_tokens: Largest γ, the student tokens drafted per teacher verification; each round picks γ from the
            acceptance rate so far. Only speed depends on it, never the samples.
        student_temperature: Student sampling temperature (0: greedy).
        student_top_p: Student nucleus mass.
        teacher_temperature: Teacher sampling temperature (replacements, ``seq_kd``).
        teacher_top_p: Teacher nucleus mass.
        max_prompt_length: Prompts longer than this keep their last tokens (``None``: no limit).
        max_completion_length: Tokens sampled per completion; dataset completions are cut to it.
        reuse_teacher_logits: In ``skd``/``seq_kd``/``mixed``, take the loss's teacher logits from sampling (exact:
            every completion position was scored by the teacher with its final prefix) instead of a second teacher
            pass. Costs ``B x C x V`` stored logits per micro-batch of the accumulation step.
        model_init_kwargs: ``from_pretrained`` arguments of the student when it is given as a path / hub id.
        teacher_model_init_kwargs: ``from_pretrained`` arguments of the teacher (e.g. ``{"dtype": "bfloat16"}`` to
            halve its memory).
        disable_dropout: Turn off dropout in student and teacher (sampled and scored with the same network).
        num_completions_to_log: Sampled completions written to ``<output_dir>/completions.jsonl`` at each log.
        loss: Token-level loss: ``forward_kl`` (default), ``reverse_kl`` or ``generalized_jsd``.
        temperature: Temperature of teacher and student distributions in the loss (not the sampling temperatures).
        beta: ``generalized_jsd``: interpolation between forward (0) and reverse (1) KL.
    """

    mode: str = field(default="skd", metadata={"help": "Data the student learns from: " + ", ".join(MODES) + "."})
    lmbda: float = field(
        default=1.0, metadata={"help": "Probability of sampled completions per micro-batch (on_policy, mixed)."}
    )
    top_k: int = field(default=25, metadata={"help": "SKD keeps student tokens within the teacher's top-K."})
    num_draft_tokens: int = field(
        default=16, metadata={"help": "Most student tokens drafted per teacher verification (adapted per round)."}
    )
    student_temperature: float = field(default=0.5, metadata={"help": "Student sampling temperature (0: greedy)."})
    student_top_p: float = field(default=0.5, metadata={"help": "Student nucleus (top-p) mass."})
    teacher_temperature: float = field(default=0.2, metadata={"help": "Teacher sampling temperature (0: greedy)."})
    teacher_top_p: float = field(default=0.5, metadata={"help": "Teacher nucleus (top-p) mass."})
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Longer prompts keep their last tokens; None: no limit."}
    )
    max_completion_length: int = field(
        default=128, metadata={"help": "Sampled tokens per completion; dataset completions are cut to it."}
    )
    reuse_teacher_logits: bool = field(
        default=True, metadata={"help": "Reuse the teacher's sampling logits for the loss (no second teacher pass)."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "from_pretrained kwargs of the student when given as a path / hub id."}
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "from_pretrained kwargs of the teacher, e.g. {'dtype': 'bfloat16'}."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Turn off dropout in student and teacher."})
    num_completions_to_log: int = field(
        default=2, metadata={"help": "Sampled completions written to completions.jsonl at each log."}
    )
    loss: str = field(default="forward_kl", metadata={"help": "Token-level loss: " + ", ".join(SEQUENCE_LOSSES) + "."})
    temperature: float = field(default=1.0, metadata={"help": "Loss temperature of both distributions (> 0)."})
    beta: float = field(default=0.5, metadata={"help": "generalized_jsd: interpolation in [0, 1]."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate (SKD paper: 1e-5)."})

    def __post_init__(self):
        for name in ("model_init_kwargs", "teacher_model_init_kwargs"):
            value = getattr(self, name)
            if isinstance(value, str):  # from the command line
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f'{name} must be a JSON object such as \'{{"dtype": "bfloat16"}}\': {e}'
                    ) from None
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}.")
        if self.loss not in SEQUENCE_LOSSES:
            raise ValueError(
                f"loss must be one of {', '.join(SEQUENCE_LOSSES)} for language models; got {self.loss!r}."
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}.")
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"lmbda must be in [0, 1], got {self.lmbda}.")
        if self.top_k < 1:
            raise ValueError(
                f"top_k must be >= 1 (use a value >= the vocabulary size to keep every token), got {self.top_k}."
            )
        if self.num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {self.num_draft_tokens}.")
        for name in ("student_temperature", "teacher_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 is greedy), got {getattr(self, name)}.")
        for name in ("student_top_p", "teacher_top_p"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}.")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {self.max_completion_length}.")
        if self.max_prompt_length is not None and self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be >= 1 or None, got {self.max_prompt_length}.")
