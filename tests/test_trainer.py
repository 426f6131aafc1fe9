import pytest
import torch
from tiny_models import TinyMultitaskConfig, TinyMultitaskModel, tiny_dataset
from transformers import AutoModel

from reportkd.data import ReportCollator
from reportkd.trainer import DistillationConfig, DistillationTrainer


def make_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        per_device_train_batch_size=8,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        save_strategy="no",
        logging_steps=1,
        seed=3,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return DistillationConfig(**base)


def models(seed=0):
    torch.manual_seed(seed)
    teacher = TinyMultitaskModel(TinyMultitaskConfig())
    torch.manual_seed(seed + 1)
    student = TinyMultitaskModel(TinyMultitaskConfig())
    return teacher, student


def train(tmp_path, student, teacher=None, dataset=None, **kw):
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, **kw),
        train_dataset=dataset,
        data_collator=ReportCollator(),
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_gradient_accumulation_equals_large_batch(tmp_path, alpha):
    teacher, student = models()
    data = tiny_dataset(16, teacher=teacher)
    big = train(
        tmp_path,
        _clone(student),
        None,
        data,
        alpha=alpha,
        temperature=2.0,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
    )
    small = train(
        tmp_path,
        _clone(student),
        None,
        data,
        alpha=alpha,
        temperature=2.0,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
    )
    for (n, a), (_, b) in zip(big.model.named_parameters(), small.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
    moved = any(not torch.equal(a, b) for a, b in zip(big.model.parameters(), student.parameters()))
    assert moved


def _clone(model):
    clone = TinyMultitaskModel(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def test_teacher_module_equals_stored_teacher_outputs(tmp_path):
    teacher, student = models()
    stored = tiny_dataset(16, teacher=teacher)
    live = tiny_dataset(16)
    a = train(tmp_path, _clone(student), None, stored, alpha=0.7, temperature=1.5)
    b = train(tmp_path, _clone(student), teacher, live, alpha=0.7, temperature=1.5, teacher_outputs_type="logits")
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert not b.teacher.training
    assert all(not p.requires_grad for p in b.teacher.parameters())
    assert all(torch.equal(p, q) for p, q in zip(b.teacher.parameters(), teacher.parameters()))


def test_teacher_from_path(tmp_path):
    teacher, student = models()
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = train(tmp_path, student, str(tmp_path / "teacher"), tiny_dataset(8), teacher_outputs_type="logits")
    assert isinstance(trainer.teacher, TinyMultitaskModel)
    assert AutoModel.from_pretrained(tmp_path / "teacher").config.task_labels == teacher.config.task_labels


def test_supervised_mode_uses_model_loss(tmp_path):
    _, student = models()
    trainer = train(tmp_path, student, None, tiny_dataset(16), max_steps=3)
    assert trainer.teacher is None
    assert trainer.state.log_history[-1]["train_loss"] > 0


def test_label_map_mismatch_is_refused(tmp_path):
    teacher = TinyMultitaskModel(TinyMultitaskConfig(task_labels={"organ": ["b", "a", "other"], "grade": ["g1"]}))
    _, student = models()
    with pytest.raises(ValueError, match="label maps differ"):
        DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path))


def test_config_validation(tmp_path):
    for bad in ({"alpha": 1.5}, {"temperature": 0.0}, {"loss": "nope"}, {"teacher_outputs_type": "x"}):
        with pytest.raises(ValueError):
            make_args(tmp_path, **bad)


def test_causal_lm_student_scores_next_token(tmp_path):
    """A causal-LM student's loss compares logits at t with label t + 1 (a silent wrong answer otherwise)."""
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=30,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
        eos_token_id=0,
        bos_token_id=0,
    )
    student, teacher = GPT2LMHeadModel(cfg), GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 30, (4, 8))
    labels = ids.clone()
    labels[:, :3] = -100  # prompt
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})

    def collate(rows):
        return {k: torch.tensor([r[k] for r in rows]) for k in ("input_ids", "labels")}

    args = make_args(
        tmp_path, alpha=0.3, temperature=1.0, teacher_outputs_type="logits", per_device_train_batch_size=4
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, data_collator=collate)
    batch = collate([data[i] for i in range(4)])
    n = trainer._count_items(batch)
    assert int(n) == int(labels[:, 1:].ne(-100).sum())
    loss = trainer.compute_loss(student, batch, num_items_in_batch=n)
    with torch.no_grad():
        s, t = student(input_ids=ids).logits, teacher(input_ids=ids).logits
    from reportkd.losses import soft_target_kd_loss

    expected = soft_target_kd_loss(s[:, :-1], t[:, :-1], labels[:, 1:], alpha=0.3)
    torch.testing.assert_close(loss, expected)
