"""CLIPDistillationTrainer: frozen teacher, exact gradient accumulation (per-item terms and GradCache), PEFT."""

import open_clip
import pytest
import torch
from vlm_clip_tiny import bundles, clone, make_args, tiny_data

from reportkd.vlm.clip.data import CLIPCollator
from reportkd.vlm.clip.models import count_flops
from reportkd.vlm.clip.trainer import CLIPDistillationTrainer

MATCHES = [
    {"student": "visual.transformer.resblocks.1", "teacher": "visual.transformer.resblocks.1", "weight": 2.0},
    {"student": "visual.transformer.resblocks.1.attn", "teacher": "visual.transformer.resblocks.0.attn",
     "kind": "attention", "tokens": "cls"},
    {"student": "transformer.resblocks.1", "teacher": "transformer.resblocks.1", "tokens": "mean", "loss": "cosine"},
]  # fmt: skip
PER_ITEM = dict(contrastive_weight=0.0, logit_kd_weight=0.0, fd_weight=10.0, layer_matches=MATCHES,
                mask_ratio_start=0.25, mask_ratio_end=0.5)  # fmt: skip
BATCH_LEVEL = dict(contrastive_weight=1.0, logit_kd_weight=1.0, icl_weight=0.5, relation_weight=0.5, temperature=2.0,
                   fd_weight=10.0, layer_matches=MATCHES[:1])  # fmt: skip


def train(tmp_path, student, teacher, data, **kw):
    s_bundle, t_bundle = student
    trainer = CLIPDistillationTrainer(
        model=clone(s_bundle.model), teacher_model=teacher, args=make_args(tmp_path, **kw), train_dataset=data,
        data_collator=CLIPCollator.for_models(s_bundle, t_bundle),
    )  # fmt: skip
    trainer.train()
    return trainer


def assert_same_step(a, b):
    for (name, x), (_, y) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)


def moved(trainer, student):
    after = dict(trainer.model.student.named_parameters())
    return any(not torch.equal(p, after[n]) for n, p in student.model.named_parameters())


def test_teacher_stays_frozen_in_eval_mode_and_inputs_are_separate(tmp_path):
    student, teacher = bundles()
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    flops = count_flops(student.model), count_flops(teacher.model)
    trainer = train(tmp_path, (student, teacher), teacher.model, tiny_data(16), max_steps=2, **BATCH_LEVEL)
    assert trainer.teacher is teacher.model and not trainer.teacher.training
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())
    assert moved(trainer, student)
    # hooks stay idle outside the trainer: plain calls cost what they cost before
    assert (count_flops(trainer.model.student), count_flops(trainer.teacher)) == flops
    assert trainer.model.capture.captured == {} and trainer._teacher_capture.captured == {}
    names = {n for n, _ in trainer.model.named_parameters()}
    assert not any("teacher" in n for n in names) and "projections.embed_image.weight" in names
    logged = trainer.state.log_history[0]
    assert {"loss_contrastive", "loss_logit_kd", "loss_icl", "loss_relation", "loss_fd"} <= set(logged)
    with pytest.raises(ValueError, match="CLIPCollator.for_models"):  # a student-only collator is refused
        train(tmp_path, (student, None), teacher.model, tiny_data(8), **BATCH_LEVEL)
    batch = CLIPCollator.for_models(student, teacher)([tiny_data(2)[i] for i in range(2)])
    assert batch["teacher_pixel_values"].shape[-1] == 48 and batch["pixel_values"].shape[-1] == 32
    assert batch["teacher_input_ids"].shape[-1] == 40 and batch["input_ids"].shape[-1] == 32


def test_gradient_accumulation_equals_large_batch_for_per_item_terms(tmp_path):
    """FD, hidden-state and attention terms (with masking) are normalised by the step's pair count."""
    student, teacher = bundles()
    data = tiny_data(16)
    big = train(tmp_path, (student, teacher), teacher.model, data, **PER_ITEM, per_device_train_batch_size=8)
    small = train(tmp_path, (student, teacher), teacher.model, data, **PER_ITEM, per_device_train_batch_size=4,
                  gradient_accumulation_steps=2)  # fmt: skip
    assert_same_step(big, small)
    assert moved(big, student)


def test_grad_cache_makes_batch_level_terms_exact_under_accumulation(tmp_path):
    student, teacher = bundles()
    data = tiny_data(16)
    big = train(tmp_path, (student, teacher), teacher.model, data, **BATCH_LEVEL, per_device_train_batch_size=8)
    cached = train(tmp_path, (student, teacher), teacher.model, data, **BATCH_LEVEL, per_device_train_batch_size=4,
                   gradient_accumulation_steps=2)  # fmt: skip
    assert_same_step(big, cached)
    torch.testing.assert_close(
        cached.state.log_history[0]["loss"], big.state.log_history[0]["loss"], rtol=1e-4, atol=0
    )
    # per-micro-batch negatives ("micro_batch") are cheaper but not the large-batch gradient
    micro = train(tmp_path, (student, teacher), teacher.model, data, **BATCH_LEVEL, per_device_train_batch_size=4,
                  gradient_accumulation_steps=2, contrastive_accumulation="micro_batch")  # fmt: skip
    diff = max((a - b).abs().max().item() for a, b in zip(big.model.parameters(), micro.model.parameters()))
    assert diff > 1e-5


def test_student_alone_needs_no_teacher_and_distillation_needs_one(tmp_path):
    student, _ = bundles(teacher=None)
    trainer = train(tmp_path, (student, None), None, tiny_data(16), max_steps=2, contrastive_weight=1.0,
                    logit_kd_weight=0.0, per_device_train_batch_size=4, gradient_accumulation_steps=2)  # fmt: skip
    assert trainer.teacher is None and moved(trainer, student)
    with pytest.raises(ValueError, match="need a teacher"):
        CLIPDistillationTrainer(model=student.model, args=make_args(tmp_path))


def test_lora_student_trains_adapters_and_saves_merged(tmp_path):
    from peft import LoraConfig, get_peft_model

    student, teacher = bundles()
    peft_student = get_peft_model(clone(student.model), LoraConfig(r=2, target_modules=["c_fc", "c_proj"]))
    trainer = CLIPDistillationTrainer(
        model=peft_student, teacher_model=teacher.model, args=make_args(tmp_path, max_steps=2, learning_rate=0.5),
        train_dataset=tiny_data(16), data_collator=CLIPCollator.for_models(student, teacher),
    )  # fmt: skip
    trainer.train()
    base = dict(student.model.named_parameters())
    for name, p in peft_student.named_parameters():
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(p, base[plain]), name
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in peft_student.named_parameters())
    path = trainer.save_student(str(tmp_path / "lora_student"), model_cfg=student.model_cfg)
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(pixels), peft_student.encode_image(pixels), rtol=1e-4, atol=1e-5)


def test_config_validation(tmp_path):
    for bad, msg in (({"fd_weight": -1.0}, "fd_weight"), ({"contrastive_accumulation": "x"}, "grad_cache"),
                     ({"mask_ratio_end": 1.0}, r"\[0, 1\)"), ({"logit_kd_kind": "js"}, "soft_ce"),
                     ({"contrastive_weight": 0.0, "logit_kd_weight": 0.0}, "Every loss weight is 0"),
                     ({"layer_matches": [{"student": "a"}]}, "needs")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            make_args(tmp_path, **bad)
