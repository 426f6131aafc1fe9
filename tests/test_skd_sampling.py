"""Batched interleaved (speculative) sampling on tiny random causal LMs."""

import pytest
import torch

from reportkd.text.skd import draw_noise, in_filtered_top_k, in_top_k, interleaved_sample, sample_tokens
from reportkd.text.skd.models import causal_lm_from_config
from reportkd.text.skd.sampling import best_draft_length

V, EOS, PAD = 40, 3, 0


def tiny_lm(family: str, seed: int, hidden: int = 32, layers: int = 2):
    if family == "llama":
        config = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden,
                  "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    else:
        config = {"model_type": "gpt2", "n_embd": hidden, "n_layer": layers, "n_head": 4, "n_positions": 256}
    config.update(vocab_size=V, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=1)
    return causal_lm_from_config(config, seed=seed).eval().double()


def prompts(batch=5, width=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (batch, width), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([3, 0, 1, 0, 5][:batch]):
        mask[row, :pad] = 0
    return ids.masked_fill(mask == 0, PAD), mask


KW = dict(eos_token_id=EOS, pad_token_id=PAD, student_temperature=1.0, student_top_p=0.95, teacher_temperature=0.8,
          teacher_top_p=0.9)  # fmt: skip


def accepted(t_logits, token, top_k, acceptance):
    if acceptance == "raw_top_k":
        return in_top_k(t_logits, token, top_k)
    return in_filtered_top_k(t_logits, token, top_k, temperature=KW["teacher_temperature"], top_p=KW["teacher_top_p"])


def naive_interleaving(student, teacher, ids, mask, noise, *, top_k, max_new, acceptance="raw_top_k"):
    """Token-by-token SKD without caches, one row at a time: the definition."""
    rows = []
    for b in range(ids.shape[0]):
        prefix, out = ids[b][mask[b].bool()].tolist(), []
        for p in range(max_new):
            x = torch.tensor([prefix + out])
            s_logits, t_logits = student(input_ids=x).logits[:, -1], teacher(input_ids=x).logits[:, -1]
            u_s, u_t = noise[0][b, p : p + 1], noise[1][b, p : p + 1]
            token = sample_tokens(s_logits, u_s, temperature=KW["student_temperature"], top_p=KW["student_top_p"])
            if not accepted(t_logits, token, top_k, acceptance):
                token = sample_tokens(t_logits, u_t, temperature=KW["teacher_temperature"], top_p=KW["teacher_top_p"])
            out.append(int(token))
            if out[-1] == EOS:
                break
        rows.append(out)
    return rows


def completions(out):
    return [out.completion_ids[b][out.completion_mask[b]].tolist() for b in range(out.completion_ids.shape[0])]


@pytest.mark.parametrize("acceptance", ["raw_top_k", "filtered_top_k"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_block_verification_equals_token_by_token_and_naive_loop(family, acceptance):
    student, teacher = tiny_lm(family, 0), tiny_lm(family, 1, hidden=48, layers=3)
    ids, mask = prompts()
    noise = draw_noise(ids.shape[0], 14, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = naive_interleaving(student, teacher, ids, mask, noise, top_k=12, max_new=14, acceptance=acceptance)
    runs = {}
    for gamma, adaptive in [(1, False), (3, False), (8, False), (8, True)]:
        out = interleaved_sample(student, teacher, ids, mask, max_new_tokens=14, top_k=12, num_draft_tokens=gamma,
                                 adaptive_draft=adaptive, noise=noise, acceptance=acceptance, **KW)  # fmt: skip
        assert completions(out) == reference, (gamma, adaptive)
        runs[gamma, adaptive] = out
    out = runs[8, False]
    assert 0 < out.num_accepted < out.num_proposed  # both kept and replaced tokens occurred
    assert out.from_teacher.sum() == out.num_proposed - out.num_accepted
    assert runs[8, False].student_forwards > runs[1, False].student_forwards  # wasted drafts at low acceptance


def test_teacher_logits_from_verification_are_the_teachers_logits_of_the_final_sequence():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1, hidden=48)
    ids, mask = prompts()
    out = interleaved_sample(student, teacher, ids, mask, max_new_tokens=12, top_k=12, num_draft_tokens=4,
                             generator=torch.Generator().manual_seed(1), **KW)  # fmt: skip
    batch = out.to_batch()
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=positions).logits  # fmt: skip
    fresh = logits[:, ids.shape[1] - 1 : -1]
    torch.testing.assert_close(out.teacher_logits[out.completion_mask], fresh[out.completion_mask])


def test_top_k_equal_to_vocabulary_keeps_every_student_token():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1)
    ids, mask = prompts()
    noise = draw_noise(ids.shape[0], 10, torch.Generator().manual_seed(2))
    skd = interleaved_sample(student, teacher, ids, mask, max_new_tokens=10, top_k=V, noise=noise,
                             acceptance="raw_top_k", **KW)  # fmt: skip
    alone = interleaved_sample(student, None, ids, mask, max_new_tokens=10, noise=noise, **KW)
    assert skd.acceptance_rate == 1.0 and skd.num_proposed == int(skd.completion_mask.sum())
    assert not skd.from_teacher.any()
    assert torch.equal(skd.completion_ids, alone.completion_ids)


def test_top_k_one_leaves_only_teacher_argmax_or_teacher_samples():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1)
    ids, mask = prompts()
    out = interleaved_sample(student, teacher, ids, mask, max_new_tokens=12, top_k=1,
                             generator=torch.Generator().manual_seed(3), **KW)  # fmt: skip
    t = out.teacher_logits  # exact teacher logits (previous test)
    tokens = out.completion_ids
    own = t.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    is_argmax = (t > own.unsqueeze(-1)).sum(-1) == 0
    probs = torch.softmax(t / KW["teacher_temperature"], -1)
    sorted_p, _ = probs.sort(-1, descending=True)
    mass_before = (probs * (probs > probs.gather(-1, tokens.unsqueeze(-1)))).sum(-1)
    in_nucleus = mass_before < KW["teacher_top_p"]
    real = out.completion_mask
    assert (is_argmax | out.from_teacher)[real].all()
    assert in_nucleus[real & out.from_teacher].all()
    assert (is_argmax[real & ~out.from_teacher]).all()
    assert out.from_teacher.any()


OFFICIAL = {**KW, "teacher_temperature": 0.2, "teacher_top_p": 0.5}  # the official teacher filtering


def filtered_top_k_set(t_logits, k):
    """The official rule's accepted set, by brute force: top-K of the teacher's filtered sampling distribution."""
    probs = torch.softmax(t_logits / OFFICIAL["teacher_temperature"], -1)
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    allowed = torch.zeros_like(probs, dtype=torch.bool)
    allowed.scatter_(-1, order, (before < OFFICIAL["teacher_top_p"]) & (torch.arange(probs.shape[-1]) < k))
    return allowed


def test_filtered_rule_accepts_only_tokens_inside_the_teachers_filtered_top_k():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1)
    with torch.no_grad():
        teacher.model.norm.weight.mul_(10.0)  # a confident teacher: random tiny LMs have near-uniform logits
    ids, mask = prompts()
    noise = draw_noise(ids.shape[0], 16, torch.Generator().manual_seed(4))
    outs = {
        rule: interleaved_sample(
            student, teacher, ids, mask, max_new_tokens=16, top_k=12, noise=noise, acceptance=rule, **OFFICIAL
        )  # fmt: skip
        for rule in ("filtered_top_k", "raw_top_k")
    }
    out = outs["filtered_top_k"]
    allowed = filtered_top_k_set(out.teacher_logits, 12)
    token_allowed = allowed.gather(-1, out.completion_ids.unsqueeze(-1)).squeeze(-1)
    kept = out.completion_mask & ~out.from_teacher
    assert kept.any() and token_allowed[kept].all()  # every kept student token lies in the filtered top-K
    assert float(allowed.sum(-1)[out.completion_mask].float().mean()) < 6  # the nucleus is narrower than K
    # the raw rule keeps student tokens outside the teacher's nucleus, so it accepts strictly more
    raw = outs["raw_top_k"]
    assert raw.acceptance_rate > out.acceptance_rate
    raw_allowed = filtered_top_k_set(raw.teacher_logits, 12).gather(-1, raw.completion_ids.unsqueeze(-1)).squeeze(-1)
    assert not raw_allowed[raw.completion_mask & ~raw.from_teacher].all()


def test_filtered_rule_equals_the_raw_rule_without_filtering():
    logits = torch.randn(64, V, generator=torch.Generator().manual_seed(5))
    tokens = torch.randint(0, V, (64,), generator=torch.Generator().manual_seed(6))
    for k in (1, 5, 20):
        full = in_filtered_top_k(logits, tokens, k, temperature=0.7, top_p=1.0)
        assert torch.equal(full, in_top_k(logits, tokens, k))
        greedy = in_filtered_top_k(logits, tokens, k, temperature=0.0, top_p=0.5)
        assert torch.equal(greedy, tokens == logits.argmax(-1))


def test_rows_end_at_eos_or_budget_and_are_padded():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1)
    ids, mask = prompts()
    # Three end tokens make early ends likely.
    out = interleaved_sample(
        student,
        teacher,
        ids,
        mask,
        max_new_tokens=9,
        top_k=V // 2,
        generator=torch.Generator().manual_seed(4),
        **{**KW, "eos_token_id": [EOS, 7, 9]},
    )
    lengths = out.completion_mask.sum(1)
    assert (lengths <= 9).all() and (lengths < 9).any() and out.completion_ids.shape[1] == int(lengths.max())
    for row, n in enumerate(lengths.tolist()):
        tokens = out.completion_ids[row, :n].tolist()
        ends = [i for i, tok in enumerate(tokens) if tok in (EOS, 7, 9)]
        assert ends in ([], [n - 1]) and (n == 9 or ends == [n - 1])
        assert (out.completion_ids[row, n:] == PAD).all()
    assert torch.equal(out.prompt_ids, ids)


def test_row_seeds_make_a_rows_sample_independent_of_its_batch():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1)
    ids, mask = prompts()
    seeds = [11, 12, 13, 14, 15]
    full = interleaved_sample(student, teacher, ids, mask, max_new_tokens=8, top_k=10,
                              noise=draw_noise(5, 8, seeds=seeds), **KW)  # fmt: skip
    part = interleaved_sample(student, teacher, ids[2:4], mask[2:4], max_new_tokens=8, top_k=10,
                              noise=draw_noise(2, 8, seeds=seeds[2:4]), **KW)  # fmt: skip
    assert completions(full)[2:4] == completions(part)


def test_teacher_alone_records_logits_and_marks_all_tokens():
    teacher = tiny_lm("llama", 1)
    ids, mask = prompts()
    out = interleaved_sample(
        None, teacher, ids, mask, max_new_tokens=6, generator=torch.Generator().manual_seed(0), **KW
    )
    assert out.from_teacher[out.completion_mask].all() and out.num_proposed == 0
    assert out.teacher_logits.shape == (*out.completion_ids.shape, V)


def test_sample_tokens_inverse_cdf_matches_the_nucleus_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]]).double()
    n = 20000
    u = (torch.arange(n).double() + 0.5) / n
    tokens = sample_tokens(logits.expand(n, -1), u, temperature=0.7, top_p=0.9)
    probs = torch.softmax(logits[0] / 0.7, -1)
    order = probs.argsort(descending=True)
    keep = (probs[order].cumsum(0) - probs[order]) < 0.9
    expected = torch.zeros_like(probs)
    expected[order[keep]] = probs[order[keep]] / probs[order[keep]].sum()
    freq = torch.bincount(tokens, minlength=5).double() / n
    torch.testing.assert_close(freq, expected, atol=1e-3, rtol=0)
    assert torch.equal(sample_tokens(logits, torch.tensor([0.99]), temperature=0.0, top_p=1.0), torch.tensor([0]))


@pytest.mark.parametrize("top_p", [1.0, 0.9, 0.3])
def test_sample_tokens_on_a_wide_vocabulary(top_p):
    """top_p = 1 skips sorting; a nucleus wider than the top-64 candidates falls back to the full sort."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(1, 300, generator=g) * 0.3).double()
    n = 20000  # a deterministic grid of u: each token's frequency is off by at most 1 / n
    u = (torch.arange(n).double() + 0.5) / n
    freq = torch.bincount(sample_tokens(logits.expand(n, -1), u, temperature=1.0, top_p=top_p), minlength=300) / n
    probs = torch.softmax(logits[0], -1)
    order = probs.argsort(descending=True)
    keep = (probs[order].cumsum(0) - probs[order]) < top_p
    expected = torch.zeros_like(probs)
    expected[order[keep]] = probs[order[keep]] / probs[order[keep]].sum()
    torch.testing.assert_close(freq.double(), expected, atol=2e-4, rtol=0)


def test_best_draft_length_grows_with_acceptance():
    lengths = [best_draft_length(a, 8) for a in (0.0, 0.5, 0.8, 0.9, 0.99)]
    assert lengths[0] == 1 and lengths == sorted(lengths) and lengths[-1] == 8


def test_bad_arguments_are_refused():
    student = tiny_lm("llama", 0)
    ids, mask = prompts()
    with pytest.raises(ValueError, match="needs a student, a teacher or both"):
        interleaved_sample(None, None, ids, mask, max_new_tokens=4)
    with pytest.raises(ValueError, match="top_k"):
        interleaved_sample(student, student, ids, mask, max_new_tokens=4, top_k=0)
    with pytest.raises(ValueError, match="left-padded"):
        interleaved_sample(student, None, ids, mask.flip(1), max_new_tokens=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampling_on_gpu_matches_cpu():
    student, teacher = tiny_lm("llama", 0), tiny_lm("llama", 1, hidden=48)
    ids, mask = prompts()
    noise = draw_noise(ids.shape[0], 10, torch.Generator().manual_seed(0))
    kw = dict(max_new_tokens=10, top_k=12, noise=noise, **KW)
    cpu = interleaved_sample(student, teacher, ids, mask, **kw)
    gpu = interleaved_sample(student.cuda(), teacher.cuda(), ids.cuda(), mask.cuda(), **kw)
    assert completions(cpu) == [row for row in completions(gpu)]
    torch.testing.assert_close(gpu.teacher_logits.cpu()[cpu.completion_mask], cpu.teacher_logits[cpu.completion_mask])
