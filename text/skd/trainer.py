"""Speculative knowledge distillation (and its baselines) for causal language models on the shared trainer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from reportkd.trainer import LOGIT_LOSSES, DistillationTrainer, load_teacher

from .config import SKDConfig
from .data import IGNORE_INDEX, PromptCompletionCollator, position_ids
from .sampling import SampleOutput, draw_noise, interleaved_sample
from .sharding import is_sharded, shard_frozen_model

logger = logging.getLogger(__name__)

# mode -> source of the completions of one micro-batch ("dataset", "student", "teacher", "interleaved")
_SAMPLED_SOURCE = {"on_policy": "student", "seq_kd": "teacher", "skd": "interleaved", "mixed": "interleaved"}
_BATCH_KEYS = ("prompt_input_ids", "prompt_attention_mask", "input_ids", "attention_mask", "labels")
_METRIC_KEYS = ("proposed", "accepted", "completion_tokens", "teacher_tokens", "generated_tokens", "sequences")


def vocabulary_rows(model: nn.Module) -> int:
    """Rows of a causal LM's output layer (its logits' last dimension)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.vocab_size)


def shared_vocabulary_size(student: nn.Module, teacher: nn.Module, tokenizer: Any = None) -> int:
    """The vocabulary teacher and student share, or a ``ValueError`` that says what to do.

    Models of one family may pad their embedding matrices to different sizes (e.g. 151936 vs 152064 rows): with the
    shared ``tokenizer`` given, logits are cut to ``len(tokenizer)`` rows.

    Args:
        student: The student causal LM.
        teacher: The teacher causal LM.
        tokenizer: The tokenizer both use (optional).
    """
    n_s, n_t = vocabulary_rows(student), vocabulary_rows(teacher)
    if n_s == n_t:
        return n_s
    n_tok = len(tokenizer) if tokenizer is not None else None
    if n_tok is not None and n_tok <= min(n_s, n_t):
        return n_tok
    raise ValueError(
        f"Teacher and student vocabularies differ: the teacher predicts {n_t} tokens, the student {n_s}"
        + (f", the tokenizer has {n_tok}" if n_tok is not None else "")
        + ". Token-level distillation compares distributions over one vocabulary, so both models must use the same "
        "tokenizer: pick a student from the teacher's model family, or train the student with the teacher's "
        "tokenizer. If they already share a tokenizer and only the embedding padding differs, pass "
        "processing_class=<that tokenizer> (logits are then cut to len(tokenizer)) or call "
        f"student.resize_token_embeddings({n_t})."
    )


def disable_dropout(model: nn.Module) -> None:
    """Sets every dropout probability of ``model`` to 0."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def row_seeds(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, salt: tuple[int, ...]) -> list[int]:
    """One sampling seed per row from its prompt tokens and ``salt`` (seed, step).

    A row's sample then depends on its prompt and the step only, not on the batch it lands in: the same for any
    batch size, gradient-accumulation split or number of processes. Identical prompts in one step share a sample.
    """
    seeds = []
    for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist()):
        key = tuple(i for i, m in zip(ids, mask) if m)
        digest = hashlib.blake2b(repr((salt, key)).encode(), digest_size=8).digest()
        seeds.append(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return seeds


def _check_batch(batch: Mapping[str, Any]) -> None:
    missing = [k for k in _BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"SKDTrainer batches lack {missing}. They need {list(_BATCH_KEYS)} in the [prompt | completion] layout "
            "(left-padded prompts, right-padded completions): use reportkd.text.skd.PromptCompletionCollator or "
            "collate_prompt_completion."
        )


def official_loss_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Loss mask of the official SKD code's slice, as labels over ``width + 1`` positions.

    ``labels`` ``(B, W)`` holds each right-padded completion (``ignore_index`` after its ``n`` tokens); position
    ``p`` of the result is the prediction of completion token ``p`` (``p = W``: the one after the last column).
    Positions ``1..n`` are kept: the first completion token is dropped and the position after the last one added.
    The values are 0 (only the mask matters to the distillation losses).

    Args:
        labels: ``(B, W)`` completion labels.
        ignore_index: Label of positions outside the loss.
    """
    n = (labels != ignore_index).sum(-1, keepdim=True)
    pos = torch.arange(labels.shape[1] + 1, device=labels.device)
    keep = (pos >= 1) & (pos <= n)
    return torch.where(keep, 0, ignore_index)


def average_loss(
    per_token: torch.Tensor, mask: torch.Tensor, averaging: str, num_items_in_batch: torch.Tensor | int | None
) -> torch.Tensor:
    """The loss of a micro-batch as its share of the step's average.

    Args:
        per_token: ``(B, W)`` loss per position (any value where ``mask`` is False).
        mask: ``(B, W)`` positions in the loss.
        averaging: ``token``: sum over positions / positions of the step; ``sequence``: each row's mean over its
            positions, summed over rows / rows of the step (rows without a position count for nothing).
        num_items_in_batch: Positions (``token``) or rows (``sequence``) of the whole step; None: this batch's own.
    """
    per_token = torch.where(mask, per_token.float(), per_token.new_zeros((), dtype=torch.float32))
    if averaging == "sequence":
        counts = mask.sum(-1)
        total = (per_token.sum(-1) / counts.clamp_min(1)).sum()
        own = (counts > 0).sum()
    else:
        total, own = per_token.sum(), mask.sum()
    denom = num_items_in_batch if num_items_in_batch is not None else own
    return total / torch.as_tensor(denom, device=total.device, dtype=total.dtype).clamp_min(1)


class SKDTrainer(DistillationTrainer):
    """Speculative KD (Xu et al., ICLR 2025) with ``sft``, ``supervised_kd``, ``on_policy`` (GKD), ``seq_kd`` and
    ``mixed`` baselines in one code path (:class:`SKDConfig.mode`).

    Sampled completions come from :func:`~reportkd.text.skd.sampling.interleaved_sample` (batched, KV-cached,
    block-verified); the loss (forward KL by default) covers every completion token, the first one included, and
    is normalised by the completion tokens of the whole accumulation step (see :class:`SKDConfig`).

    Args:
        model: Student causal LM (module, or path / hub id loaded with ``args.model_init_kwargs``).
        teacher_model: Teacher causal LM (module, or path / hub id); ``None`` uses
            ``args.teacher_model_name_or_path``. Not needed in ``sft`` mode.
        args: An :class:`SKDConfig`.
        processing_class: The shared tokenizer (loaded from the student's path when omitted and possible).
        data_collator: Defaults to :class:`PromptCompletionCollator` over ``prompt`` / ``completion`` rows; a custom
            one must return the same keys in the same ``[prompt | completion]`` layout.
        peft_config: A ``peft`` config (e.g. ``LoraConfig``): the student is wrapped with ``get_peft_model``.
        **kwargs: Further ``transformers.Trainer`` arguments (``train_dataset``, ``eval_dataset``, callbacks…).
    """

    args_class = SKDConfig
    teacher_auto_class = AutoModelForCausalLM

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        args: SKDConfig | None = None,
        processing_class: Any = None,
        data_collator: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ):
        if not isinstance(args, SKDConfig):
            raise TypeError(f"SKDTrainer needs args=SKDConfig(...), got {type(args).__name__}.")
        if isinstance(model, str):
            if processing_class is None:
                processing_class = AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, **(args.model_init_kwargs or {}))
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        teacher = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if args.mode == "sft":
            teacher = None  # never loaded: SFT needs no teacher
        if teacher is None and args.mode != "sft":
            raise ValueError(
                f"mode={args.mode!r} needs a teacher: pass teacher_model= (module or path) or set "
                "teacher_model_name_or_path, or use mode='sft'."
            )
        if teacher is not None:
            teacher = load_teacher(
                teacher, auto_class=self.teacher_auto_class, trust_remote_code=args.trust_remote_code,
                **(args.teacher_model_init_kwargs or {}),
            )  # fmt: skip
            self.vocab_size = shared_vocabulary_size(model, teacher, processing_class)
            if args.shard_teacher and args.world_size > 1:  # before any device move: only 1/N reaches the device
                teacher = shard_frozen_model(teacher, args.device)
        else:
            self.vocab_size = vocabulary_rows(model)
        if args.disable_dropout:
            disable_dropout(model)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass processing_class=<tokenizer> (or a data_collator) to build the batches.")
            data_collator = PromptCompletionCollator(
                processing_class, args.max_prompt_length, args.max_completion_length
            )
        super().__init__(
            model=model, teacher_model=teacher, args=args, data_collator=data_collator,
            processing_class=processing_class, **kwargs,
        )  # fmt: skip
        self.pad_token_id, self.eos_token_id = self._special_ids(processing_class, model)
        # One draw per micro-batch, the same on every process: all sample (or none) together, which keeps sharded
        # models in step and makes N processes equal one process with an N times larger batch.
        self._source_rng = random.Random(args.seed * 1_000_003)
        self._metrics: dict[str, float] = dict.fromkeys(_METRIC_KEYS, 0.0)
        self._generation_seconds = 0.0
        self._window_start: float | None = None
        self._last_sample: SampleOutput | None = None
        self._acceptance = 0.8  # running acceptance rate: sets the first draft length of each sampling call

    @staticmethod
    def _special_ids(tokenizer: Any, model: nn.Module) -> tuple[int, list[int] | None]:
        """Padding id and end ids: the tokenizer's EOS plus the model's generation-config EOS ids (chat models end
        turns with their own tokens, e.g. ``<|eot_id|>``)."""
        ends: list[int] = []
        for source in (tokenizer, getattr(model, "generation_config", None), getattr(model, "config", None)):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            for token in value if isinstance(value, (list, tuple)) else [value]:
                if token is not None and int(token) not in ends:
                    ends.append(int(token))
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        if pad is None:
            pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        if pad is None:
            pad = ends[0] if ends else 0
        return int(pad), ends or None

    # -- sampling ------------------------------------------------------------------------------------------------
    @staticmethod
    def generate_on_policy_outputs(
        student: nn.Module | None,
        teacher: nn.Module | None,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        args: SKDConfig,
        *,
        pad_token_id: int,
        eos_token_id: int | list[int] | None,
        vocab_size: int | None = None,
        seeds: list[int] | None = None,
        generator: torch.Generator | None = None,
        return_teacher_logits: bool = True,
        acceptance_prior: float = 0.8,
        synced: bool = False,
    ) -> SampleOutput:
        """Samples completions with the knobs of ``args``: SKD with both models, on-policy with ``teacher=None``,
        sequence-level KD with ``student=None``.

        Args:
            student: Student causal LM (unwrapped, in evaluation mode) or ``None``.
            teacher: Teacher causal LM or ``None``.
            prompt_ids: ``(B, P)`` left-padded prompts.
            prompt_mask: ``(B, P)`` their attention mask.
            args: The :class:`SKDConfig` (top-K, γ, temperatures, top-p, completion length).
            pad_token_id: Padding id.
            eos_token_id: End-of-sequence id(s).
            vocab_size: Shared vocabulary size (logits are cut to it).
            seeds: One seed per row (samples independent of batching); else ``generator`` is used.
            generator: Random generator when ``seeds`` is not given.
            return_teacher_logits: Keep the teacher's logits at every completion position.
            acceptance_prior: Expected acceptance rate (sets the first block length; speed only).
            synced: Keep all processes in step (a model sharded across them; see :func:`interleaved_sample`).
        """
        noise = draw_noise(prompt_ids.shape[0], args.max_completion_length, generator, seeds)
        student_temperature, student_top_p = args.student_sampling()
        return interleaved_sample(
            student, teacher, prompt_ids, prompt_mask, max_new_tokens=args.max_completion_length, top_k=args.top_k,
            acceptance=args.acceptance, num_draft_tokens=args.num_draft_tokens,
            student_temperature=student_temperature, student_top_p=student_top_p,
            teacher_temperature=args.teacher_temperature,
            teacher_top_p=args.teacher_top_p, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            vocab_size=vocab_size, noise=noise, return_teacher_logits=return_teacher_logits,
            acceptance_prior=acceptance_prior, synced=synced,
        )  # fmt: skip

    def _synced(self) -> bool:
        """Whether sampling must keep the processes in step: several processes and a sharded teacher or student."""
        if self.accelerator.num_processes == 1:
            return False
        return is_sharded(self.teacher) or is_sharded(self.model) or self.is_fsdp_enabled or self.is_deepspeed_enabled

    def _source(self) -> str:
        mode = self.args.mode
        if mode not in _SAMPLED_SOURCE:
            return "dataset"
        if mode in ("on_policy", "mixed") and self._source_rng.random() >= self.args.lmbda:
            return "dataset"
        return _SAMPLED_SOURCE[mode]

    def _sample_micro_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Replaces a micro-batch's completions by sampled ones, as its mode and ``lmbda`` say."""
        _check_batch(batch)
        source = self._source()
        batch = dict(batch)
        if self._window_start is None:
            self._window_start = time.perf_counter()
        if source == "dataset":
            self._count_batch(batch, None)
            return batch
        batch = self._prepare_inputs(batch)
        student = self.accelerator.unwrap_model(self.model) if source != "teacher" else None
        teacher = self.teacher if source != "student" else None
        was_training = student.training if student is not None else False
        if student is not None:
            student.eval()
        salt = (self.args.seed, self.state.global_step)
        seeds = row_seeds(batch["prompt_input_ids"], batch["prompt_attention_mask"], salt)
        reuse = self.args.reuse_teacher_logits and teacher is not None and self._uses_sampled_teacher_logits()
        start = time.perf_counter()
        out = self.generate_on_policy_outputs(
            student, teacher, batch["prompt_input_ids"], batch["prompt_attention_mask"], self.args,
            pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_id, vocab_size=self.vocab_size,
            seeds=seeds, return_teacher_logits=reuse, acceptance_prior=self._acceptance, synced=self._synced(),
        )  # fmt: skip
        if out.num_proposed:
            self._acceptance = 0.5 * self._acceptance + 0.5 * out.acceptance_rate
        self._generation_seconds += time.perf_counter() - start
        if student is not None:
            student.train(was_training)
        batch.update(out.to_batch())
        if reuse:
            batch["teacher_logits"] = out.teacher_logits
        self._metrics["proposed"] += out.num_proposed
        self._metrics["accepted"] += out.num_accepted
        self._metrics["generated_tokens"] += int(out.completion_mask.sum())
        self._count_batch(batch, out)
        self._last_sample = out
        return batch

    def _count_batch(self, batch: Mapping[str, Any], out: SampleOutput | None) -> None:
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        self._metrics["completion_tokens"] += n
        self._metrics["sequences"] += batch["labels"].shape[0]
        if out is not None:
            self._metrics["teacher_tokens"] += int(out.from_teacher.sum())

    def _cross_entropy(self) -> bool:
        return self.args.mode == "sft" or (self.args.mode == "seq_kd" and self.args.seq_kd_loss == "cross_entropy")

    def _uses_sampled_teacher_logits(self) -> bool:
        """Whether the loss can take the sampler's teacher logits (same positions, teacher logits needed)."""
        return not self._cross_entropy() and self.args.loss_positions == "completion"

    def count_items(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Completion tokens (``averaging="token"``) or sequences with a completion (``"sequence"``)."""
        real = batch["labels"] != IGNORE_INDEX
        return real.any(-1).sum() if self.args.averaging == "sequence" else real.sum()

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Samples the completions of every micro-batch of the step first, so the item count is exact."""
        return super().get_batch_samples(map(self._sample_micro_batch, epoch_iterator), num_batches, device)

    # -- loss ------------------------------------------------------------------------------------------------------
    def _completion_logits(
        self, model: nn.Module, inputs: Mapping[str, torch.Tensor], width: int, past_end: bool = False
    ) -> torch.Tensor:
        """Logits predicting the ``width`` completion positions (from the last prompt token on), plus the position
        after the last completion column with ``past_end``."""
        out = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            position_ids=position_ids(inputs["attention_mask"]), logits_to_keep=width + 1, use_cache=False,
        )  # fmt: skip
        logits = out["logits"] if isinstance(out, Mapping) else out[0]
        logits = logits[:, -(width + 1) :, : self.vocab_size]
        return logits if past_end else logits[:, :-1]

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        _check_batch(inputs)
        inputs = dict(inputs)
        width = inputs["input_ids"].shape[1] - inputs["prompt_input_ids"].shape[1]
        labels = inputs["labels"][:, -width:]
        official = self.args.loss_positions == "official" and not self._cross_entropy()
        student = self._completion_logits(model, inputs, width, past_end=official)
        if official:  # positions 1..n of a completion of n tokens (the last one predicts past its end)
            loss_labels = official_loss_labels(labels)
        else:
            loss_labels = labels
        if self._cross_entropy():
            per_token = F.cross_entropy(
                student.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
            ).view_as(labels)
        else:
            teacher = inputs.get("teacher_logits") if not official else None
            if teacher is None:
                with torch.no_grad():
                    teacher = self._completion_logits(self.teacher, inputs, width, past_end=official)
            loss_fn, extra = LOGIT_LOSSES[self.args.loss]
            per_token = loss_fn(
                student, teacher.to(student.dtype), loss_labels, temperature=self.args.temperature,
                reduction="none", **extra(self.args, "logits"),
            )  # fmt: skip
        loss = average_loss(per_token, loss_labels != IGNORE_INDEX, self.args.averaging, num_items_in_batch)
        return {"loss": loss}, {"logits": student}

    # -- logging ---------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._window_start is not None:
            totals = torch.tensor([self._metrics[k] for k in _METRIC_KEYS] + [self._generation_seconds])
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum").cpu()
            m = dict(zip(_METRIC_KEYS + ("generation_seconds",), totals.tolist()))
            seconds = max(time.perf_counter() - self._window_start, 1e-9)
            logs["completion_tokens_per_second"] = round(m["completion_tokens"] / seconds, 2)
            logs["mean_completion_length"] = round(m["completion_tokens"] / max(m["sequences"], 1), 2)
            if m["generated_tokens"]:
                gen_seconds = m["generation_seconds"] / self.accelerator.num_processes
                logs["generation_tokens_per_second"] = round(m["generated_tokens"] / max(gen_seconds, 1e-9), 2)
                logs["teacher_token_fraction"] = round(m["teacher_tokens"] / m["generated_tokens"], 4)
            if m["proposed"]:
                logs["acceptance_rate"] = round(m["accepted"] / m["proposed"], 4)
            self._log_completions()
            self._metrics = dict.fromkeys(_METRIC_KEYS, 0.0)
            self._generation_seconds = 0.0
            self._window_start = time.perf_counter()
        super().log(logs, start_time)

    def _log_completions(self) -> None:
        out, tok = self._last_sample, self.processing_class
        n = self.args.num_completions_to_log
        if out is None or tok is None or n <= 0 or not self.is_world_process_zero():
            return
        rows = []
        for i in range(min(n, out.prompt_ids.shape[0])):
            completion = out.completion_ids[i][out.completion_mask[i]]
            prompt = out.prompt_ids[i][out.prompt_mask[i].bool()]
            rows.append({
                "step": self.state.global_step,
                "prompt_tail": tok.decode(prompt[-32:], skip_special_tokens=True),
                "completion": tok.decode(completion, skip_special_tokens=True),
                "teacher_tokens": int(out.from_teacher[i].sum()),
            })  # fmt: skip
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, "completions.jsonl"), "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        logger.info("step %d sample completion: %s", self.state.global_step, rows[0]["completion"] if rows else "")
        self._last_sample = None
