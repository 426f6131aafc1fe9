"""Batched sampling for on-policy distillation: student alone, teacher alone, or speculative interleaving (SKD).

Speculative KD (Xu et al., ICLR 2025) samples every completion token from the student and keeps it when it is
among the teacher's top-K tokens at that position; otherwise the teacher replaces it with a token sampled from
its own distribution. :func:`interleaved_sample` does this for a whole batch, a block of ``num_draft_tokens``
(γ) student tokens at a time:

1. the student drafts γ tokens with its KV cache;
2. the teacher scores the whole block in one forward with its KV cache;
3. each row keeps its drafts up to the first one outside the teacher's top-K, replaces that one with a teacher
   sample and drops the rest of its block.

Rows move at different speeds, yet all rows share one physical buffer and both caches grow in lockstep: a dropped
draft stays in the caches but becomes a *hole* (attention mask 0) and the teacher's replacement goes into a fresh
slot appended after the block. Position ids count real tokens only, so every kept token sees exactly the context
it would see in a compact sequence.

**Equivalence with token-by-token interleaving.** Each row draws two uniform numbers per completion position
``p`` up front: ``u_student[p]`` and ``u_teacher[p]``; every sample at position ``p`` is the inverse CDF of the
(temperature / top-p) distribution at ``u[p]``. A draft at ``p`` that is dropped because an earlier position was
replaced is re-drafted in a later round with the same ``u_student[p]`` and the corrected prefix, so the block
procedure returns *the same sequences* as interleaving one token at a time (``num_draft_tokens=1``) and as a
naive loop without caches, given the same noise; hence the same distribution.

**Teacher logits for free.** Every kept draft and every replacement was scored by the teacher with exactly its
final prefix, so the verification logits are the teacher's logits of the final sequence at each completion
position. They are returned (``teacher_logits``) and the loss needs no second teacher pass.

**Processes in step** (``synced=True``). A model sharded across processes (FSDP, ZeRO-3) gathers its weights in
every forward, a collective, so every process must run the same number of forwards. Each round starts with one
all-reduce of (rows still running, tokens judged, tokens kept); a process whose rows are all done keeps running
rounds on them as padding (nothing is recorded) until every process is done, as ``transformers``' ``synced_gpus``
does, and the block length γ comes from the acceptance over all processes, so sharded students also stay in step.
The samples are the same as unsynced: they never depend on γ or on the number of rounds.

Limitation: models with sliding-window attention count holes as positions of their window.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from transformers import DynamicCache, LlamaForCausalLM

_NUCLEUS_CANDIDATES = 64  # top-p sampling sorts these first, the whole vocabulary only when their mass is short
# transformers 5 renamed `past_key_values` to `cache`.
CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


@dataclass
class SampleOutput:
    """Prompts and sampled completions of one batch.

    Args:
        prompt_ids: ``(B, P)`` left-padded prompts (as given).
        prompt_mask: ``(B, P)`` attention mask of the prompts.
        completion_ids: ``(B, C)`` completions, right-padded with the pad token.
        completion_mask: ``(B, C)`` True on real completion tokens (EOS included).
        from_teacher: ``(B, C)`` True where the teacher sampled the token (all tokens when the teacher decodes
            alone, the replacements in SKD, none for the student alone).
        teacher_logits: ``(B, C, V)`` teacher logits at each completion position given the final prefix
            (``None`` when not requested or without a teacher).
        num_proposed: Student tokens judged by the teacher (the denominator of the acceptance rate).
        num_accepted: Student tokens the teacher kept.
        student_forwards: Forward calls of the student.
        teacher_forwards: Forward calls of the teacher.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    from_teacher: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    num_proposed: int = 0
    num_accepted: int = 0
    student_forwards: int = 0
    teacher_forwards: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Fraction of judged student tokens that were kept (1.0 when nothing was judged)."""
        return self.num_accepted / self.num_proposed if self.num_proposed else 1.0

    def to_batch(self, ignore_index: int = -100) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` / ``labels`` in the trainer's layout ``[prompt | completion]``."""
        mask = self.completion_mask
        labels = torch.full_like(self.prompt_ids, ignore_index)
        return {
            "input_ids": torch.cat([self.prompt_ids, self.completion_ids], 1),
            "attention_mask": torch.cat([self.prompt_mask.long(), mask.long()], 1),
            "labels": torch.cat([labels, self.completion_ids.masked_fill(~mask, ignore_index)], 1),
        }


def sample_tokens(logits: torch.Tensor, u: torch.Tensor, *, temperature: float, top_p: float) -> torch.Tensor:
    """Samples one token per row by inverse CDF of the temperature / top-p (nucleus) distribution.

    Args:
        logits: ``(N, V)`` logits.
        u: ``(N,)`` uniform numbers in ``[0, 1)``; the same ``u`` and logits always give the same token.
        temperature: Sampling temperature; ``0`` is greedy (argmax).
        top_p: Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (``1.0``: all).
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    u = u.to(probs.device, probs.dtype).unsqueeze(-1)
    if top_p >= 1.0:  # the whole distribution: inverse CDF in vocabulary order, no sort needed
        cdf = probs.cumsum(-1)
        choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
        return choice.clamp(max=probs.shape[-1] - 1).squeeze(-1)
    # The nucleus lies within the top-k tokens whenever their mass reaches top_p: sort those only.
    k = min(probs.shape[-1], _NUCLEUS_CANDIDATES)
    sorted_p, order = probs.topk(k, dim=-1)
    if k < probs.shape[-1] and bool((sorted_p.sum(-1) < top_p).any()):
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
    sorted_p = sorted_p * (before < top_p)  # the most likely token is always kept
    cdf = sorted_p.cumsum(-1)
    kept = (sorted_p > 0).sum(-1, keepdim=True)
    choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp(max=kept - 1)
    return order.gather(-1, choice).squeeze(-1)


def in_top_k(logits: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    """True where ``tokens`` is among the ``k`` largest logits (ties count in the token's favour).

    Args:
        logits: ``(..., V)`` logits.
        tokens: ``(...)`` token ids.
        k: Top-K; ``k >= V`` accepts every token.
    """
    if k >= logits.shape[-1]:
        return torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
    own = logits.gather(-1, tokens.unsqueeze(-1))
    return (logits > own).sum(-1) < k


ACCEPTANCE_RULES = ("filtered_top_k", "raw_top_k")


def in_filtered_top_k(
    logits: torch.Tensor, tokens: torch.Tensor, k: int, *, temperature: float, top_p: float
) -> torch.Tensor:
    """True where ``tokens`` is among the ``k`` most likely tokens of the *filtered* distribution: the teacher's
    sampling distribution after temperature and top-p (nucleus) filtering, as the official SKD code ranks it.

    With the official T 0.2 / top-p 0.5 the nucleus is often one or two tokens, so this accepts far fewer student
    tokens than :func:`in_top_k` on raw logits. Tokens outside the nucleus have probability 0 and are never accepted
    (the official ``topk`` over probabilities may return some of them when the nucleus holds fewer than ``k``
    tokens, in an order PyTorch leaves unspecified).

    Args:
        logits: ``(..., V)`` teacher logits.
        tokens: ``(...)`` token ids.
        k: Top-K over the filtered distribution.
        temperature: Teacher sampling temperature (0: only the argmax is kept).
        top_p: Teacher nucleus mass (a token is in the nucleus when the mass of more likely tokens is < ``top_p``,
            as in :func:`sample_tokens`).
    """
    if temperature == 0:
        return in_top_k(logits, tokens, 1)
    ranked = in_top_k(logits, tokens, k)
    if top_p >= 1.0:
        return ranked
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    own = probs.gather(-1, tokens.unsqueeze(-1))
    before = (probs * (probs > own)).sum(-1)
    return ranked & (before < top_p)


def best_draft_length(acceptance: float, max_draft: int, teacher_cost: float = 1.0) -> int:
    """Block length γ that minimises forward passes per kept token at a per-token acceptance rate.

    A block of γ drafts costs γ student forwards and one teacher forward (``teacher_cost`` student forwards) and
    yields ``1 + a + ... + a**(γ-1)`` tokens on average (the kept run plus the teacher's replacement).

    Args:
        acceptance: Per-token acceptance rate in ``[0, 1]``.
        max_draft: Largest block length.
        teacher_cost: Cost of a teacher verification in student forwards (1: both are latency-bound).
    """
    best, best_cost = 1, float("inf")
    for gamma in range(1, max_draft + 1):
        tokens = sum(acceptance**i for i in range(gamma))
        cost = (gamma + teacher_cost) / tokens
        if cost < best_cost - 1e-9:
            best, best_cost = gamma, cost
    return best


def world_size() -> int:
    """Processes of the default ``torch.distributed`` group (1 when it is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sums(values: Sequence[float], device: torch.device, synced: bool) -> list[float]:
    """``values`` summed over the processes (one all-reduce) when ``synced``, else as given."""
    if not synced or world_size() == 1:
        return [float(v) for v in values]
    total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def draw_noise(
    batch_size: int, max_new_tokens: int, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise ``(u_student, u_teacher)``, each ``(B, max_new_tokens)``.

    Args:
        batch_size: Rows.
        max_new_tokens: Completion positions.
        generator: One generator for the whole batch (ignored when ``seeds`` is given).
        seeds: One seed per row: a row's samples then do not depend on the rest of its batch (same result for any
            batch size, gradient-accumulation split or number of processes).
    """
    if seeds is None:
        noise = torch.rand(2, batch_size, max_new_tokens, generator=generator)
    else:
        rows = []
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            rows.append(torch.rand(2, max_new_tokens, generator=g))
        noise = torch.stack(rows, 1)
    return noise[0], noise[1]


class _Stream:
    """One model, its KV cache and how many physical positions it has seen."""

    def __init__(self, model: nn.Module, vocab_size: int | None) -> None:
        self.model = model
        self.vocab_size = vocab_size
        config = getattr(model, "config", None)
        self.cache = DynamicCache(config=config) if config is not None else DynamicCache()
        self.fed = 0
        self.calls = 0
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters

    def feed(self, ids: torch.Tensor, keep: torch.Tensor, end: int, last: int | None = None) -> torch.Tensor:
        """Runs positions ``[fed, end)`` through the model; returns the logits of all of them, or of the ``last``
        ones only (the output layer then skips the rest, e.g. a long prompt)."""
        start, self.fed = self.fed, end
        positions = (keep.long().cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": last} if last is not None and self.keeps_logits else {}
        out = self.model(
            input_ids=ids[:, start:end],
            attention_mask=keep[:, :end].long(),
            position_ids=positions[:, start:end],
            use_cache=True,
            **{CACHE_KWARG: self.cache},
            **extra,
        )
        self.calls += 1
        logits = out["logits"] if isinstance(out, dict) else out.logits
        if last is not None:
            logits = logits[:, -last:]
        return logits[..., : self.vocab_size] if self.vocab_size is not None else logits


def _last_real(keep: torch.Tensor) -> torch.Tensor:
    """Index of the last True per row (0 for rows without one)."""
    ramp = torch.arange(1, keep.shape[1] + 1, device=keep.device)
    return (keep.long() * ramp).argmax(-1)


def _eos_mask(tokens: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    if eos is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, eos)


@torch.no_grad()
def interleaved_sample(
    student: nn.Module | None,
    teacher: nn.Module | None,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    top_k: int = 25,
    acceptance: str = "filtered_top_k",
    num_draft_tokens: int = 16,
    student_temperature: float = 0.5,
    student_top_p: float = 0.5,
    teacher_temperature: float = 0.2,
    teacher_top_p: float = 0.5,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int = 0,
    vocab_size: int | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    return_teacher_logits: bool = True,
    adaptive_draft: bool = True,
    acceptance_prior: float = 0.8,
    synced: bool = False,
) -> SampleOutput:
    """Samples completions: SKD interleaving (student and teacher), on-policy (student only) or teacher only.

    Args:
        student: The student causal LM, or ``None`` to let the teacher decode alone (sequence-level KD).
        teacher: The teacher causal LM, or ``None`` to let the student decode alone (on-policy KD).
        input_ids: ``(B, P)`` left-padded prompts (every row's last column is real).
        attention_mask: ``(B, P)`` prompt mask (all ones when omitted).
        max_new_tokens: Completion budget per row.
        top_k: A student token is kept when it is among the teacher's ``top_k`` tokens.
        acceptance: ``"filtered_top_k"`` (official code): top-K of the teacher's distribution after its
            temperature / top-p filtering (:func:`in_filtered_top_k`); ``"raw_top_k"``: top-K of its raw logits
            (:func:`in_top_k`; ``top_k >= V`` keeps every token).
        num_draft_tokens: γ, student tokens drafted per teacher verification.
        student_temperature: Student sampling temperature (0: greedy).
        student_top_p: Student nucleus mass.
        teacher_temperature: Teacher sampling temperature for replacements (0: greedy).
        teacher_top_p: Teacher nucleus mass.
        eos_token_id: Token id(s) that end a row.
        pad_token_id: Fills completions after their end.
        vocab_size: Shared vocabulary; logits beyond it (padding rows of an embedding matrix) are dropped.
        noise: ``(u_student, u_teacher)``, each ``(B, >= max_new_tokens)`` uniforms (see :func:`draw_noise`).
        generator: Draws the noise when ``noise`` is not given.
        return_teacher_logits: Keep the teacher's logits at every completion position.
        adaptive_draft: Pick each round's block length in ``[1, num_draft_tokens]`` from the acceptance rate seen
            so far (:func:`best_draft_length`). The samples do not depend on the block length, only the speed.
        acceptance_prior: Acceptance rate assumed before any token is judged (weight of two tokens).
        synced: Keep every process of the default process group in step (needed when student or teacher is sharded
            across processes, e.g. FSDP): all run the same rounds with the same γ, finished ones on padding. Every
            process must call this function the same number of times.
    """
    if student is None and teacher is None:
        raise ValueError("interleaved_sample needs a student, a teacher or both.")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if num_draft_tokens < 1:
        raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if acceptance not in ACCEPTANCE_RULES:
        raise ValueError(f"acceptance must be one of {', '.join(ACCEPTANCE_RULES)}; got {acceptance!r}.")
    device = input_ids.device
    batch = input_ids.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not bool(attention_mask[:, -1].all()):
        raise ValueError(
            "Prompts must be left-padded (every row's last column a real token): pad on the left, e.g. "
            "tokenizer.padding_side = 'left', or use PromptCompletionCollator."
        )
    if noise is None:
        noise = draw_noise(batch, max_new_tokens, generator)
    u_student, u_teacher = (n.to(device) for n in noise)
    if u_student.shape[1] < max_new_tokens or u_teacher.shape[1] < max_new_tokens:
        raise ValueError(f"noise covers {u_student.shape[1]} positions but max_new_tokens is {max_new_tokens}.")
    eos = None
    if eos_token_id is not None:
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device)
    state = _State(input_ids, attention_mask.bool(), max_new_tokens, pad_token_id, eos)
    if student is None or teacher is None:
        model = student if student is not None else teacher
        params = (
            (student_temperature, student_top_p, u_student) if teacher is None
            else (teacher_temperature, teacher_top_p, u_teacher)
        )  # fmt: skip
        stream = _Stream(model, vocab_size)
        keep = return_teacher_logits and teacher is not None
        _decode_alone(stream, state, *params, keep_logits=keep, synced=synced)
        out = state.output(from_teacher=teacher is not None)
        if student is None:
            out.teacher_forwards = stream.calls
        else:
            out.student_forwards = stream.calls
        return out
    s_stream, t_stream = _Stream(student, vocab_size), _Stream(teacher, vocab_size)
    prior, n_proc = acceptance_prior, world_size() if synced else 1
    while True:  # one all-reduce per round when synced: rows running, judged and kept tokens, the prior
        values = [int((~state.done).sum()), state.proposed, state.accepted, acceptance_prior]
        running, proposed, accepted, prior_sum = _sums(values, device, synced)
        if running == 0:
            break
        gamma = num_draft_tokens
        if adaptive_draft:
            prior = prior_sum / n_proc  # the same on every process (each passes its own running rate)
            gamma = best_draft_length((accepted + 2 * prior) / (proposed + 2), num_draft_tokens)
        _skd_round(
            s_stream, t_stream, state, gamma, top_k, acceptance,
            (student_temperature, student_top_p, u_student), (teacher_temperature, teacher_top_p, u_teacher),
            return_teacher_logits,
        )  # fmt: skip
    out = state.output(from_teacher=None)
    out.student_forwards, out.teacher_forwards = s_stream.calls, t_stream.calls
    return out


class _State:
    """The physical buffer (prompt, drafts, holes) and the compact completions being built."""

    def __init__(self, input_ids, prompt_keep, max_new_tokens, pad_token_id, eos) -> None:
        self.prompt_ids, self.prompt_keep = input_ids, prompt_keep
        self.ids, self.keep = input_ids, prompt_keep
        self.max_new, self.pad, self.eos = max_new_tokens, pad_token_id, eos
        batch, device = input_ids.shape[0], input_ids.device
        self.rows = torch.arange(batch, device=device)
        self.n_gen = torch.zeros(batch, dtype=torch.long, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.completion = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        self.teacher_made = torch.zeros(batch, max_new_tokens, dtype=torch.bool, device=device)
        self.logits: torch.Tensor | None = None
        self.proposed = 0
        self.accepted = 0

    def append(self, tokens: torch.Tensor, keep: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids, tokens.unsqueeze(1)], 1)
        self.keep = torch.cat([self.keep, keep.unsqueeze(1)], 1)

    def noise_at(self, u: torch.Tensor, offset: int | torch.Tensor) -> torch.Tensor:
        return u[self.rows, (self.n_gen + offset).clamp(max=self.max_new - 1)]

    def record(self, rows: torch.Tensor, pos: torch.Tensor, tokens, logits, teacher_made: bool) -> None:
        if rows.numel() == 0:
            return
        self.completion[rows, pos] = tokens
        self.teacher_made[rows, pos] = teacher_made
        if logits is not None:
            if self.logits is None:
                shape = (self.completion.shape[0], self.max_new, logits.shape[-1])
                self.logits = logits.new_zeros(shape)
            self.logits[rows, pos] = logits

    def finish(self, last_tokens: torch.Tensor, added: torch.Tensor) -> None:
        """Advances ``n_gen`` by ``added`` and ends rows that emitted EOS or spent their budget."""
        self.n_gen = self.n_gen + added
        ended = (added > 0) & _eos_mask(last_tokens, self.eos)
        self.done = self.done | ended | (self.n_gen >= self.max_new)

    def output(self, from_teacher: bool | None) -> SampleOutput:
        width = max(int(self.n_gen.max()), 1)
        mask = torch.arange(width, device=self.n_gen.device) < self.n_gen.unsqueeze(1)
        made = self.teacher_made[:, :width] if from_teacher is None else mask & from_teacher
        logits = self.logits[:, :width] if self.logits is not None else None
        return SampleOutput(
            self.prompt_ids, self.prompt_keep.long(), self.completion[:, :width], mask, made & mask, logits,
            num_proposed=self.proposed, num_accepted=self.accepted,
        )  # fmt: skip


def _decode_alone(
    stream: _Stream, state: _State, temperature: float, top_p: float, u, keep_logits: bool, synced: bool
) -> None:
    next_logits = stream.feed(state.ids, state.keep, state.ids.shape[1], last=1)[:, -1]  # prompts are left-padded
    while True:
        token = sample_tokens(next_logits, state.noise_at(u, 0), temperature=temperature, top_p=top_p)
        alive = ~state.done
        token = torch.where(alive, token, torch.full_like(token, state.pad))
        rows = state.rows[alive]
        state.record(rows, state.n_gen[alive], token[alive], next_logits[alive] if keep_logits else None, True)
        state.finish(token, alive.long())
        if _sums([int((~state.done).sum())], state.rows.device, synced)[0] == 0:
            return
        state.append(token, ~state.done)
        next_logits = stream.feed(state.ids, state.keep, state.ids.shape[1])[:, -1]


def _skd_round(
    s_stream, t_stream, state: _State, gamma: int, top_k: int, acceptance: str, s_params, t_params, keep_logits
) -> None:
    """One draft-verify-correct round; both caches end at the physical position before the last draft."""
    start, length = s_stream.fed, state.ids.shape[1]
    alive = ~state.done
    # 1. The student drafts γ tokens (positions after a row's budget or end are drafted but never kept).
    # The last real token before the block is among the last two positions: the prompt's last column (left
    # padding) in the first round, then one of [last draft slot, correction slot].
    old = min(length - start, 2)
    logits = s_stream.feed(state.ids, state.keep, length, last=old)
    first = _last_real(state.keep[:, length - old : length])
    next_logits = logits[state.rows, first]
    drafts = []
    for i in range(gamma):
        if i > 0:
            next_logits = s_stream.feed(state.ids, state.keep, length + i)[:, -1]
        token = sample_tokens(next_logits, state.noise_at(s_params[2], i), temperature=s_params[0], top_p=s_params[1])
        drafts.append(token)
        state.append(token, alive)
    drafts = torch.stack(drafts, 1)  # (B, γ)
    # 2. The teacher scores the block: logits before draft 0 (last real old token), then after drafts 0..γ-2.
    t_logits = t_stream.feed(state.ids, state.keep, length + gamma - 1, last=old + gamma - 1)
    t_logits = torch.cat([t_logits[state.rows, first].unsqueeze(1), t_logits[:, old:]], 1)
    s_stream.fed = t_stream.fed
    # 3. Keep the accepted prefix; replace the first rejected draft with a teacher sample.
    steps = torch.arange(gamma, device=drafts.device)
    valid = alive.unsqueeze(1) & (state.n_gen.unsqueeze(1) + steps < state.max_new)
    is_eos = _eos_mask(drafts, state.eos)
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    judged = valid & ~after_eos
    if acceptance == "raw_top_k":
        ok = in_top_k(t_logits, drafts, top_k)
    else:
        ok = in_filtered_top_k(t_logits, drafts, top_k, temperature=t_params[0], top_p=t_params[1])
    n_acc = (judged & ok).long().cumprod(1).sum(1)
    j = n_acc.clamp(max=gamma - 1)
    rejected = (n_acc < gamma) & judged[state.rows, j] & ~ok[state.rows, j]
    state.proposed += int((n_acc + rejected.long()).sum())
    state.accepted += int(n_acc.sum())
    replacement = sample_tokens(
        t_logits[state.rows, j], state.noise_at(t_params[2], j), temperature=t_params[0], top_p=t_params[1]
    )
    for i in range(gamma):
        rows = state.rows[i < n_acc]
        state.record(rows, state.n_gen[rows] + i, drafts[rows, i], t_logits[rows, i] if keep_logits else None, False)
        state.keep[:, length + i] = alive & (i < n_acc)
    rows = state.rows[rejected]
    state.record(
        rows, state.n_gen[rows] + j[rows], replacement[rows], t_logits[rows, j[rows]] if keep_logits else None, True
    )
    last = torch.where(rejected, replacement, drafts[state.rows, (n_acc - 1).clamp(min=0)])
    state.append(torch.where(rejected, replacement, torch.full_like(replacement, state.pad)), rejected)
    state.finish(last, n_acc + rejected.long())
