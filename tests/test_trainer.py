"""The shared trainer: one loss hook per family, exact accumulation, config-time loss validation, term logging."""

import importlib

import pytest
import torch
from tiny_models import TinyMultitaskConfig, TinyMultitaskModel, tiny_dataset
from transformers import AutoModel

from reportkd.data import ReportCollator
from reportkd.losses import multitask_kd_loss, soft_target_kd_loss
from reportkd.text.mtcnn import MtCNNDistillationConfig, MtCNNDistillationTrainer
from reportkd.trainer import (
    LOGIT_LOSSES,
    DistillationConfig,
    DistillationTrainer,
    LogitDistillationConfig,
    LogitDistillationTrainer,
)

COMMON = dict(
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


def make_args(tmp_path, config_class=MtCNNDistillationConfig, **kw):
    return config_class(output_dir=str(tmp_path / "out"), **{**COMMON, **kw})


def models(seed=0):
    torch.manual_seed(seed)
    teacher = TinyMultitaskModel(TinyMultitaskConfig())
    torch.manual_seed(seed + 1)
    student = TinyMultitaskModel(TinyMultitaskConfig())
    return teacher, student


def train(tmp_path, student, teacher=None, dataset=None, **kw):
    trainer = MtCNNDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, **kw),
        train_dataset=dataset,
        data_collator=ReportCollator(),
    )
    trainer.train()
    return trainer


def _clone(model):
    clone = TinyMultitaskModel(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def _assert_same_weights(a, b):
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize(
    ("alpha", "stored", "task_weights"),
    [(1.0, True, None), (0.5, True, None), (0.5, True, {"organ": 3, "grade": 1}), (0.5, False, {"grade": 1})],
    ids=["soft", "mixed", "weighted", "baseline"],
)
def test_gradient_accumulation_equals_large_batch(tmp_path, alpha, stored, task_weights):
    """k micro-batches of b == one batch of k*b for the student and the hard-label baseline (no teacher outputs)."""
    teacher, student = models()
    data = tiny_dataset(16, teacher=teacher if stored else None)
    kw = dict(alpha=alpha, temperature=2.0, task_weights=task_weights)
    big = train(
        tmp_path, _clone(student), None, data, per_device_train_batch_size=8, gradient_accumulation_steps=1, **kw
    )
    small = train(
        tmp_path, _clone(student), None, data, per_device_train_batch_size=4, gradient_accumulation_steps=2, **kw
    )
    _assert_same_weights(big.model, small.model)
    assert any(not torch.equal(a, b) for a, b in zip(big.model.parameters(), student.parameters()))


def test_teacher_module_equals_stored_teacher_outputs(tmp_path):
    teacher, student = models()
    stored = tiny_dataset(16, teacher=teacher)
    live = tiny_dataset(16)
    a = train(tmp_path, _clone(student), None, stored, alpha=0.7, temperature=1.5)
    b = train(tmp_path, _clone(student), teacher, live, alpha=0.7, temperature=1.5, teacher_outputs_type="logits")
    _assert_same_weights(a.model, b.model)
    assert not b.teacher.training
    assert all(not p.requires_grad for p in b.teacher.parameters())
    assert all(torch.equal(p, q) for p, q in zip(b.teacher.parameters(), teacher.parameters()))


def test_teacher_from_path(tmp_path):
    teacher, student = models()
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = train(tmp_path, student, str(tmp_path / "teacher"), tiny_dataset(8), teacher_outputs_type="logits")
    assert isinstance(trainer.teacher, TinyMultitaskModel)
    assert AutoModel.from_pretrained(tmp_path / "teacher").config.task_labels == teacher.config.task_labels


def _baseline_step(tmp_path, task_weights):
    """Loss and head gradients of one hard-label baseline batch (no teacher, no teacher outputs, alpha ignored)."""
    _, student = models()
    trainer = MtCNNDistillationTrainer(
        model=student, args=make_args(tmp_path, alpha=0.7, task_weights=task_weights), data_collator=ReportCollator()
    )
    data = tiny_dataset(8)
    batch = ReportCollator()([data[i] for i in range(8)])
    student.zero_grad()
    loss = trainer.compute_loss(student, batch, num_items_in_batch=trainer.count_items(batch))
    loss.backward()
    grads = {t: student.heads[t].weight.grad.clone() for t in student.heads}
    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"]).logits
    return loss.detach(), grads, logits, batch["labels"]


def test_task_weights_change_the_baseline_loss(tmp_path):
    """The baseline goes through the weighted multitask loss: weight 0 removes a task (its loss and gradient)."""
    uniform, _, logits, labels = _baseline_step(tmp_path, None)
    organ_ce = soft_target_kd_loss(logits["organ"], logits["organ"], labels[:, 0], alpha=0.0)
    grade_ce = soft_target_kd_loss(logits["grade"], logits["grade"], labels[:, 1], alpha=0.0)
    torch.testing.assert_close(uniform, (organ_ce + grade_ce) / 2)  # alpha=0.7 ignored: no teacher outputs

    only_organ, grads, _, _ = _baseline_step(tmp_path, {"organ": 1.0, "grade": 0.0})
    torch.testing.assert_close(only_organ, organ_ce)
    assert torch.count_nonzero(grads["grade"]) == 0 and torch.count_nonzero(grads["organ"]) > 0

    weighted, _, _, _ = _baseline_step(tmp_path, '{"organ": 3, "grade": 1}')
    torch.testing.assert_close(weighted, (3 * organ_ce + grade_ce) / 4)
    assert not torch.isclose(weighted, uniform)


def test_student_loss_is_the_multitask_loss(tmp_path):
    teacher, student = models()
    data = tiny_dataset(8, teacher=teacher)
    args = make_args(tmp_path, alpha=0.4, temperature=2.0, task_weights={"organ": 2, "grade": 1})
    trainer = MtCNNDistillationTrainer(model=student, args=args, data_collator=ReportCollator())
    batch = ReportCollator()([data[i] for i in range(8)])
    loss = trainer.compute_loss(student, batch, num_items_in_batch=trainer.count_items(batch))
    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"]).logits
    expected = multitask_kd_loss(
        logits, batch["teacher_probs"], batch["labels"], alpha=0.4, temperature=2.0,
        task_weights={"organ": 2, "grade": 1},
    )  # fmt: skip
    torch.testing.assert_close(loss, expected)


def test_label_map_mismatch_is_refused(tmp_path):
    teacher = TinyMultitaskModel(TinyMultitaskConfig(task_labels={"organ": ["b", "a", "other"], "grade": ["g1"]}))
    _, student = models()
    with pytest.raises(ValueError, match="label maps differ"):
        MtCNNDistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path))


def test_config_validation(tmp_path):
    bad_values = ({"alpha": 1.5}, {"temperature": 0.0}, {"teacher_outputs_type": "x"}, {"task_weights": '{"a": -1}'})
    for bad in bad_values:
        with pytest.raises(ValueError):
            make_args(tmp_path, **bad)
    for bad in ({"alpha": -0.1}, {"temperature": 0.0}, {"beta": 2.0}, {"loss": "nope"}):
        with pytest.raises(ValueError):
            make_args(tmp_path, LogitDistillationConfig, **bad)


@pytest.mark.parametrize("loss", ["feature", "similarity_kd", "multitask_kd", "clip_logit_kd"])
def test_loss_the_trainer_cannot_call_is_refused_at_config_time(tmp_path, loss):
    with pytest.raises(ValueError, match="soft_target_kd, generalized_jsd, forward_kl, reverse_kl"):
        make_args(tmp_path, LogitDistillationConfig, loss=loss)
    for name in LOGIT_LOSSES:
        assert make_args(tmp_path, LogitDistillationConfig, loss=name).loss == name


def test_configs_carry_no_other_familys_fields():
    base = set(DistillationConfig.__dataclass_fields__)
    assert not {"alpha", "temperature", "loss", "beta", "task_weights", "teacher_outputs_type"} & base
    assert "loss" not in MtCNNDistillationConfig.__dataclass_fields__


def test_wrong_config_class_is_refused(tmp_path):
    _, student = models()
    with pytest.raises(TypeError, match="MtCNNDistillationConfig"):
        MtCNNDistillationTrainer(model=student, args=make_args(tmp_path, LogitDistillationConfig))


def _trainer_classes():
    classes = [LogitDistillationTrainer, MtCNNDistillationTrainer]
    for module, names in (
        ("reportkd.text.mtcnn.dac", ["DACTrainer"]),
        ("reportkd.text.skd.trainer", ["SKDTrainer"]),
        ("reportkd.vlm.clip.trainer", ["CLIPDistillationTrainer"]),
        ("reportkd.vlm.slide.trainer", ["SlideAlignmentTrainer", "SlideDistillationTrainer"]),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:  # an optional dependency (open_clip…) is missing
            continue
        classes += [getattr(mod, n) for n in names]
    return classes


@pytest.mark.parametrize("cls", _trainer_classes(), ids=lambda c: c.__name__)
def test_each_trainer_overrides_only_the_loss_hook(cls):
    """The accumulation / process bookkeeping lives in DistillationTrainer.compute_loss alone."""
    below_base = cls.__mro__[: cls.__mro__.index(DistillationTrainer)]
    assert all("compute_loss" not in vars(c) for c in below_base)
    assert any("compute_loss_terms" in vars(c) for c in below_base)


class _TermsTrainer(LogitDistillationTrainer):
    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        terms, outputs = super().compute_loss_terms(model, inputs, num_items_in_batch)
        self.calls += 1
        return {**terms, "loss_aux": torch.tensor(float(self.calls))}, outputs


def test_named_terms_are_logged_averaged_over_the_window(tmp_path):
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    model = BertForSequenceClassification(cfg)
    data = Dataset.from_dict({"input_ids": torch.randint(0, 30, (16, 5)).tolist(), "labels": [0, 1] * 8})
    args = make_args(tmp_path, LogitDistillationConfig, max_steps=2, logging_steps=2, per_device_train_batch_size=4,
                     gradient_accumulation_steps=2)  # fmt: skip
    trainer = _TermsTrainer(model=model, args=args, train_dataset=data)
    trainer.calls = 0
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 1 and trainer.calls == 4
    assert logged[0]["loss_aux"] == pytest.approx(2.5)  # mean of 1, 2, 3, 4 (4 micro-batches in the window)


def test_base_trainer_has_no_loss(tmp_path):
    _, student = models()
    trainer = DistillationTrainer(model=student, args=make_args(tmp_path, DistillationConfig))
    batch = ReportCollator()([tiny_dataset(2)[i] for i in range(2)])
    with pytest.raises(NotImplementedError, match="LogitDistillationTrainer"):
        trainer.compute_loss(student, batch)


def _causal_lm_case(tmp_path, **kw):
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=30, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0, embd_pdrop=0,
                     attn_pdrop=0, eos_token_id=0, bos_token_id=0)  # fmt: skip
    student, teacher = GPT2LMHeadModel(cfg), GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 30, (4, 8))
    labels = ids.clone()
    labels[:, :3] = -100  # prompt
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})

    def collate(rows):
        return {k: torch.tensor([r[k] for r in rows]) for k in ("input_ids", "labels")}

    args = make_args(tmp_path, LogitDistillationConfig, per_device_train_batch_size=4, **kw)
    trainer = LogitDistillationTrainer(model=student, teacher_model=teacher, args=args, data_collator=collate)
    batch = collate([data[i] for i in range(4)])
    with torch.no_grad():
        s, t = student(input_ids=ids).logits, teacher(input_ids=ids).logits
    return trainer, batch, s, t, labels


def test_causal_lm_student_scores_next_token(tmp_path):
    """A causal-LM student's loss compares logits at t with label t + 1 (a silent wrong answer otherwise)."""
    trainer, batch, s, t, labels = _causal_lm_case(tmp_path, alpha=0.3, teacher_outputs_type="logits")
    n = trainer.count_items(batch)
    assert int(n) == int(labels[:, 1:].ne(-100).sum())
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=n)
    torch.testing.assert_close(loss, soft_target_kd_loss(s[:, :-1], t[:, :-1], labels[:, 1:], alpha=0.3))


def test_generalized_jsd_is_called_with_its_beta(tmp_path):
    from reportkd.losses import generalized_jsd_loss

    trainer, batch, s, t, labels = _causal_lm_case(tmp_path, loss="generalized_jsd", beta=0.2, temperature=2.0)
    loss = trainer.compute_loss(trainer.model, batch)
    expected = generalized_jsd_loss(s[:, :-1], t[:, :-1], labels[:, 1:], beta=0.2, temperature=2.0)
    torch.testing.assert_close(loss, expected)


def test_config_from_user_training_arguments_keeps_their_flags(tmp_path):
    from transformers import TrainingArguments

    from reportkd.text.mtcnn import DACConfig

    user = TrainingArguments(output_dir=str(tmp_path / "u"), gradient_accumulation_steps=4, max_steps=7,
                             report_to="none", use_cpu=True, learning_rate=1e-3, seed=11)  # fmt: skip
    student = MtCNNDistillationConfig.from_training_args(user, alpha=0.3, output_dir=str(tmp_path / "s"))
    assert (student.gradient_accumulation_steps, student.max_steps, student.learning_rate, student.seed) == (
        4, 7, 1e-3, 11)  # fmt: skip
    assert student.use_cpu and student.alpha == 0.3 and student.output_dir == str(tmp_path / "s")
    assert student.remove_unused_columns is False and student.hub_private_repo is True  # this config's defaults
    dac = DACConfig.from_training_args(student, dac_target_accuracy=0.9)
    assert dac.gradient_accumulation_steps == 4 and not hasattr(dac, "alpha")
