"""SKDTrainer on tiny random causal LMs: modes, exact gradient accumulation, logit reuse, vocabulary check, LoRA."""

import copy

import pytest
import torch
from datasets import Dataset

from reportkd.synthetic import generate_reports
from reportkd.text.skd import MODES, PromptCompletionCollator, SKDConfig, SKDTrainer
from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer


@pytest.fixture(scope="module")
def corpus():
    records = generate_reports(24, seed=0)
    # Completions of 1-3 synoptic fields: short, and of different lengths (ragged batches).
    rows = [
        {
            "prompt": r["text"][-160:] + "\nsynoptic:",
            "completion": " " + " | ".join(r["synoptic"].split(" | ")[: 1 + i % 3]),
        }
        for i, r in enumerate(records)
    ]
    tokenizer = train_bpe_tokenizer([r["prompt"] + r["completion"] for r in rows], vocab_size=300)
    return Dataset.from_list(rows), tokenizer


def lm(tokenizer, seed, hidden=32, layers=1, **extra):
    config = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden,
              "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, **extra}  # fmt: skip
    return causal_lm_from_config(config, tokenizer, seed=seed)


def make_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), report_to="none", per_device_train_batch_size=8, max_steps=1,
        learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, save_strategy="no",
        logging_steps=1, seed=3, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        max_prompt_length=32, max_completion_length=12, top_k=8,
    )  # fmt: skip
    base.update(kw)
    return SKDConfig(**base)


def train(tmp_path, corpus, student, teacher, **kw):
    data, tokenizer = corpus
    trainer = SKDTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, **kw),
                         train_dataset=data.select(range(8)), processing_class=tokenizer)  # fmt: skip
    trainer.train()
    return trainer


def assert_same_params(a, b, rtol=1e-5, atol=1e-6):
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_and_logs(tmp_path, corpus, mode):
    tok = corpus[1]
    student, teacher = lm(tok, 1), lm(tok, 0, hidden=48, layers=2)
    trainer = train(tmp_path, corpus, copy.deepcopy(student), None if mode == "sft" else teacher, mode=mode,
                    lmbda=1.0, learning_rate=1e-2)  # fmt: skip
    logs = trainer.state.log_history[0]
    assert logs["loss"] > 0 and logs["completion_tokens_per_second"] > 0
    if mode in ("skd", "mixed"):
        assert 0.0 <= logs["acceptance_rate"] <= 1.0 and "teacher_token_fraction" in logs
    if mode in ("on_policy", "seq_kd", "skd", "mixed"):
        assert logs["generation_tokens_per_second"] > 0
        assert (tmp_path / "out" / "completions.jsonl").exists()
    moved = any(not torch.equal(a, b) for a, b in zip(trainer.model.parameters(), student.parameters()))
    assert moved


@pytest.mark.parametrize("mode", ["sft", "supervised_kd", "skd"])
def test_gradient_accumulation_equals_large_batch(tmp_path, corpus, mode):
    tok = corpus[1]
    student, teacher = lm(tok, 1).double(), lm(tok, 0, hidden=48, layers=2).double()
    teacher.lm_head.weight.data[tok.eos_token_id] *= 3  # sampled rows end at different lengths
    teacher = None if mode == "sft" else teacher
    kw = dict(mode=mode, max_completion_length=40)
    big = train(tmp_path, corpus, copy.deepcopy(student), teacher, per_device_train_batch_size=8, **kw)
    small = train(tmp_path, corpus, copy.deepcopy(student), teacher, per_device_train_batch_size=2,
                  gradient_accumulation_steps=4, **kw)  # fmt: skip
    assert_same_params(big.model, small.model, rtol=1e-9, atol=1e-10)
    a, b = big.state.log_history[0], small.state.log_history[0]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)  # the Trainer logs in float32
    assert 1 < a["mean_completion_length"] < 40  # ragged lengths: a per-micro-batch mean would differ
    if mode == "skd":  # per-row seeds: the same samples whatever the split
        assert (
            a["acceptance_rate"] == b["acceptance_rate"] and a["mean_completion_length"] == b["mean_completion_length"]
        )


def test_reused_verification_logits_equal_a_second_teacher_pass(tmp_path, corpus):
    tok = corpus[1]
    student, teacher = lm(tok, 1).double(), lm(tok, 0, hidden=48, layers=2).double()
    reuse = train(tmp_path, corpus, copy.deepcopy(student), teacher, mode="skd", reuse_teacher_logits=True)
    again = train(tmp_path, corpus, copy.deepcopy(student), teacher, mode="skd", reuse_teacher_logits=False)
    assert_same_params(reuse.model, again.model, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("loss,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("generalized_jsd", 0.3)])
def test_identical_teacher_and_student_give_zero_loss(tmp_path, corpus, loss, beta):
    student = lm(corpus[1], 1)
    trainer = train(tmp_path, corpus, student, copy.deepcopy(student), mode="skd", loss=loss, beta=beta)
    assert trainer.state.log_history[0]["loss"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("beta,direction", [(0.0, "forward_kl"), (1.0, "reverse_kl")])
def test_generalized_jsd_ends_are_the_two_kl_directions(tmp_path, corpus, beta, direction):
    tok = corpus[1]
    student, teacher = lm(tok, 1).double(), lm(tok, 0, hidden=48, layers=2).double()
    jsd = train(tmp_path, corpus, copy.deepcopy(student), teacher, mode="supervised_kd", loss="generalized_jsd",
                beta=beta)  # fmt: skip
    kl = train(tmp_path, corpus, copy.deepcopy(student), teacher, mode="supervised_kd", loss=direction)
    assert jsd.state.log_history[0]["loss"] == pytest.approx(kl.state.log_history[0]["loss"], rel=1e-9)


def test_vocabulary_mismatch_is_refused_with_a_fix(tmp_path, corpus):
    data, tok = corpus
    teacher = lm(tok, 0, vocab_size=len(tok) + 64)
    with pytest.raises(ValueError, match="vocabularies differ.*same tokenizer"):
        SKDTrainer(model=lm(tok, 1, vocab_size=len(tok) + 8), teacher_model=teacher, args=make_args(tmp_path))
    # Only embedding padding differs and the shared tokenizer is given: logits are cut to len(tokenizer).
    trainer = SKDTrainer(model=lm(tok, 1), teacher_model=teacher, args=make_args(tmp_path), processing_class=tok,
                         train_dataset=data.select(range(8)))  # fmt: skip
    assert trainer.vocab_size == len(tok)
    trainer.train()


def test_teacher_is_required_outside_sft_and_loaded_from_a_path(tmp_path, corpus):
    data, tok = corpus
    with pytest.raises(ValueError, match="needs a teacher"):
        SKDTrainer(model=lm(tok, 1), args=make_args(tmp_path, mode="skd"), processing_class=tok)
    teacher = lm(tok, 0)
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = train(tmp_path, corpus, lm(tok, 1), str(tmp_path / "teacher"), mode="skd")
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())


def test_lora_student(tmp_path, corpus):
    from peft import LoraConfig

    data, tok = corpus
    student, teacher = lm(tok, 1), lm(tok, 0, hidden=48, layers=2)
    base = {k: v.clone() for k, v in student.state_dict().items()}
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = SKDTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, mode="skd"),
        processing_class=tok,
        train_dataset=data.select(range(8)),
        peft_config=peft_config,
    )
    trainer.train()
    trained = dict(trainer.model.named_parameters())
    assert all(("lora_" in n) == p.requires_grad for n, p in trained.items())
    merged = trainer.model.get_base_model().state_dict()
    assert all(torch.equal(merged[k], v) for k, v in base.items() if k in merged)
    assert "acceptance_rate" in trainer.state.log_history[0]


def test_collator_layout(corpus):
    _, tok = corpus
    batch = PromptCompletionCollator(tok, max_prompt_length=6, max_completion_length=20)(
        [
            {"prompt": "organ kidney", "completion": " grade G2"},
            {"prompt": "a much longer prompt here", "completion": " x"},
        ]
    )
    p = batch["prompt_input_ids"].shape[1]
    assert p <= 6 and torch.equal(batch["input_ids"][:, :p], batch["prompt_input_ids"])
    assert batch["prompt_attention_mask"][0, 0] == 0 or batch["prompt_attention_mask"].all()  # left padding
    labels = batch["labels"]
    assert (labels[:, :p] == -100).all()
    ends = [(row != -100).nonzero().max().item() for row in labels]
    assert all(labels[i, e] == tok.eos_token_id for i, e in enumerate(ends))


def test_config_validation(tmp_path):
    for bad in ({"mode": "nope"}, {"loss": "soft_target_kd"}, {"lmbda": 2.0}, {"top_k": 0}, {"student_top_p": 0.0},
                {"teacher_temperature": -1.0}, {"num_draft_tokens": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            make_args(tmp_path, **bad)


def test_loss_covers_every_completion_token_including_the_first(tmp_path, corpus):
    data, tok = corpus
    student = lm(tok, 1)
    trainer = SKDTrainer(model=student, args=make_args(tmp_path, mode="sft"), processing_class=tok)
    batch = trainer.data_collator([data[i] for i in range(4)])
    loss = trainer.compute_loss(student, batch)
    mask = batch["attention_mask"]
    logits = student(
        input_ids=batch["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
    ).logits
    labels = batch["labels"][:, 1:]  # the standard causal shift over the whole sequence
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, expected)
    first = batch["prompt_input_ids"].shape[1]
    assert (batch["labels"][:, first] != -100).all()  # the first response token is a label


def test_evaluate_reports_the_distillation_loss_on_dataset_completions(tmp_path, corpus):
    data, tok = corpus
    student, teacher = lm(tok, 1), lm(tok, 0, hidden=48, layers=2)
    trainer = SKDTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, mode="skd"),
                         processing_class=tok, eval_dataset=data.select(range(8)))  # fmt: skip
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0
