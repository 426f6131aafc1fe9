"""Configuration of :class:`~reportkd.text.skd.SKDTrainer`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from reportkd.trainer import DistillationConfig

MODES = ("sft", "supervised_kd", "on_policy", "seq_kd", "skd", "mixed")
SEQUENCE_LOSSES = ("forward_kl", "reverse_kl", "generalized_jsd")
ACCEPTANCE_RULES = ("filtered_top_k", "raw_top_k")
LOSS_POSITIONS = ("completion", "official")
AVERAGING = ("token", "sequence")
SEQ_KD_LOSSES = ("distillation", "cross_entropy")
# Student sampling when student_temperature / student_top_p are None: GKD's T 1 / top-p 1 for on-policy KD, the
# official SKD recipe's T 0.5 / top-p 0.5 for the interleaved modes.
STUDENT_SAMPLING = {"on_policy": (1.0, 1.0), "skd": (0.5, 0.5), "mixed": (0.5, 0.5)}


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

    Defaults follow the official SKD recipe (Xu et al., ICLR 2025; google-research ``speculative_kd``) where it is
    measured or unambiguous: top-K 25 over the teacher's *filtered* distribution, student T 0.5 / top-p 0.5 (SKD),
    teacher T 0.2 / top-p 0.5, forward KL, learning rate 1e-5; ``on_policy`` samples at GKD's T 1 / top-p 1. The
    official loss slice and averaging are options (``loss_positions``, ``averaging``); ``text/skd/README.md`` lists
    every point where official code, paper and this project differ.

    The loss is summed over completion tokens and divided by the number of completion tokens of the whole
    gradient-accumulation step over all processes. The completions of all micro-batches of a step are sampled when
    the step starts (the weights do not change before its optimizer update), so this count is known before the
    first backward pass and accumulating ``k`` micro-batches equals one batch ``k`` times larger.

    Args:
        mode: One of ``sft``, ``supervised_kd``, ``on_policy``, ``seq_kd``, ``skd``, ``mixed``.
        lmbda: Probability that a micro-batch uses sampled completions in ``on_policy`` and ``mixed`` modes.
        top_k: SKD keeps a student token when it is among the teacher's ``top_k`` tokens.
        acceptance: How the teacher's top-K is taken: ``filtered_top_k`` (official code: over its sampling
            distribution after temperature / top-p filtering, so a token outside the teacher's nucleus is always
            replaced) or ``raw_top_k`` (over its raw logits).
        num_draft_tokens: Largest γ, the student tokens drafted per teacher verification; each round picks γ from the
            acceptance rate so far. Only speed depends on it, never the samples.
        student_temperature: Student sampling temperature (0: greedy; None: 1.0 for ``on_policy`` as GKD, 0.5 for
            ``skd`` / ``mixed`` as the official SKD recipe).
        student_top_p: Student nucleus mass (None: 1.0 for ``on_policy``, 0.5 for ``skd`` / ``mixed``).
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
        loss_positions: Completion positions of the distillation loss: ``completion`` (every completion token,
            the first included) or ``official`` (the official code's slice: drops the first completion token and
            adds the position after the last one; needs a teacher forward for the loss).
        averaging: ``token`` (sum over the step's completion tokens / their number) or ``sequence`` (official
            code: mean over each sequence's positions, then over the step's sequences, one per prompt).
        seq_kd_loss: ``seq_kd`` loss on the teacher's samples: ``cross_entropy`` (official code, Kim & Rush: SFT on
            the teacher's samples) or ``distillation`` (``loss`` against the teacher's logits at those positions).
        shard_teacher: With several processes, shard the frozen teacher's weights across them (FSDP2, one unit per
            decoder layer): each process holds ``1/N`` of the teacher, and sampling keeps the processes in step
            (every process runs the same rounds; finished ones on padding). The student stays data-parallel. The
            teacher module passed in is sharded in place. Ignored with one process (nothing to shard).
    """

    mode: str = field(default="skd", metadata={"help": "Data the student learns from: " + ", ".join(MODES) + "."})
    lmbda: float = field(
        default=1.0, metadata={"help": "Probability of sampled completions per micro-batch (on_policy, mixed)."}
    )
    top_k: int = field(default=25, metadata={"help": "SKD keeps student tokens within the teacher's top-K."})
    acceptance: str = field(
        default="filtered_top_k",
        metadata={"help": "Top-K over the teacher's filtered distribution (filtered_top_k, official) or raw logits."},
    )
    num_draft_tokens: int = field(
        default=16, metadata={"help": "Most student tokens drafted per teacher verification (adapted per round)."}
    )
    student_temperature: float | None = field(
        default=None, metadata={"help": "Student sampling temperature (0: greedy; None: on_policy 1.0, skd 0.5)."}
    )
    student_top_p: float | None = field(
        default=None, metadata={"help": "Student nucleus (top-p) mass (None: on_policy 1.0, skd 0.5)."}
    )
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
    loss_positions: str = field(
        default="completion",
        metadata={"help": "Loss positions: completion (all tokens) or official (drop first, add one past the end)."},
    )
    averaging: str = field(
        default="token", metadata={"help": "Loss average: token (over the step's tokens) or sequence (official)."}
    )
    seq_kd_loss: str = field(
        default="cross_entropy", metadata={"help": "seq_kd loss: cross_entropy (official) or distillation."}
    )
    shard_teacher: bool = field(
        default=False,
        metadata={"help": "Shard the teacher across processes (FSDP2): each holds 1/N of it; sampling stays in step."},
    )

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
        for name, allowed in (
            ("acceptance", ACCEPTANCE_RULES), ("loss_positions", LOSS_POSITIONS), ("averaging", AVERAGING),
            ("seq_kd_loss", SEQ_KD_LOSSES),
        ):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}.")
        if self.top_k < 1:
            raise ValueError(
                f"top_k must be >= 1 (use a value >= the vocabulary size to keep every token), got {self.top_k}."
            )
        if self.num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {self.num_draft_tokens}.")
        for name in ("student_temperature", "teacher_temperature"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 is greedy), got {getattr(self, name)}.")
        for name in ("student_top_p", "teacher_top_p"):
            if getattr(self, name) is not None and not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}.")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {self.max_completion_length}.")
        if self.shard_teacher and "device_map" in (self.teacher_model_init_kwargs or {}):
            raise ValueError(
                "shard_teacher places the teacher's shards itself: drop device_map from teacher_model_init_kwargs "
                "(or set shard_teacher=False to keep device_map)."
            )
        if self.max_prompt_length is not None and self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be >= 1 or None, got {self.max_prompt_length}.")

    def student_sampling(self) -> tuple[float, float]:
        """The student's sampling ``(temperature, top_p)``: the fields, or the mode's default where they are None."""
        temperature, top_p = STUDENT_SAMPLING.get(self.mode, (0.5, 0.5))
        return (
            temperature if self.student_temperature is None else self.student_temperature,
            top_p if self.student_top_p is None else self.student_top_p,
        )
