"""PatchDistillationTrainer: config validation, frozen experts, exact accumulation for per-image terms, a run that
learns, and the saved student in ``get_encoder`` / ``reportkd extract`` / push with its card."""

import subprocess
import sys

import pytest
import torch

from reportkd.vlm.patch import (
    MultiCropCollator,
    PatchDistillationConfig,
    PatchDistillationTrainer,
    PatchEncoder,
    synthetic_tiles,
)

TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}


def tiny_vit(width: int = 16, seed: int = 0) -> PatchEncoder:
    torch.manual_seed(seed)
    return PatchEncoder("vit_small_patch16_224", {**TINY, "embed_dim": width}, image_size=16)


def config(tmp_path, **kw) -> PatchDistillationConfig:
    base = dict(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8, report_to="none",
                use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1, seed=0,
                dataloader_drop_last=True, dino_out_dim=16, dino_hidden_dim=16, dino_bottleneck_dim=8)  # fmt: skip
    return PatchDistillationConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiles():
    return synthetic_tiles(16, image_size=16, seed=0, tasks=("tissue",))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"feature_weight": 0.0, "relation_sample_weight": 0.0, "relation_region_weight": 0.0}, "Every loss weight"),
        ({"feature_kind": "l1"}, "feature_kind"),
        ({"dino_weight": -1.0}, "dino_weight must be >= 0"),
        ({"centering": "batch"}, "centering"),
        ({"teacher_model_name_or_path": "x"}, "teachers="),
        ({"teacher_temperature": 0.0}, "teacher_temperature"),
    ],
)
def test_config_refuses_what_the_trainer_cannot_use(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **kwargs)


def test_token_terms_need_token_teachers_and_ibot_a_vit(tmp_path, tiles):
    with pytest.raises(ValueError, match="need patch tokens"):
        PatchDistillationTrainer(tiny_vit(), teachers=["random-tiny-cnn"], args=config(tmp_path))  # region default
    with pytest.raises(ValueError, match="ViT student"):
        PatchDistillationTrainer(PatchEncoder("cnn_tiny", image_size=16), teachers=[tiny_vit(24)],
                                 args=config(tmp_path, ibot_weight=1.0))  # fmt: skip
    with pytest.raises(ValueError, match="teachers="):
        PatchDistillationTrainer(tiny_vit(), teachers=[], args=config(tmp_path))


def test_experts_stay_frozen_while_the_student_and_its_heads_learn(tmp_path, tiles):
    experts = {"a": tiny_vit(24, seed=1), "b": PatchEncoder("cnn_tiny", image_size=16)}  # different widths
    before = {n: {k: v.clone() for k, v in e.state_dict().items()} for n, e in experts.items()}
    student = tiny_vit(seed=2)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    args = config(tmp_path, max_steps=3, dino_weight=1.0, self_distill_weight=1.0)
    collator = MultiCropCollator(16, num_global=2, num_local=1, local_size=8)
    trainer = PatchDistillationTrainer(student, teachers=experts, args=args, train_dataset=tiles,
                                       data_collator=collator)  # fmt: skip
    heads = trainer.model.feature_heads
    assert heads["a"].out_features == 24 and heads["b"].out_features == experts["b"].embedding_dim
    trainer.train()
    for n, e in experts.items():
        assert not any(p.requires_grad for p in e.parameters())
        for k, v in e.state_dict().items():
            torch.testing.assert_close(v, before[n][k], rtol=0, atol=0, msg=f"{n}.{k}")
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())
    logged = trainer.state.log_history[0]
    assert {"loss_feature", "loss_relation_sample", "loss_dino", "loss_self_distill"} <= set(logged)
    ema = trainer.model.ema_encoder.state_dict()
    assert any(not torch.equal(ema[k], start[k]) for k in start), "the EMA teacher follows the student"


def test_gradient_accumulation_equals_one_large_batch_for_per_image_terms(tmp_path, tiles):
    """Feature, token, region-relation and DINO (fixed centre: center_momentum=1) terms are per image."""
    experts = {"a": tiny_vit(24, seed=1), "b": tiny_vit(12, seed=3)}

    def one_step(**kw):
        args = config(tmp_path, optim="sgd", learning_rate=0.5, token_weight=1.0, relation_sample_weight=0.0,
                      dino_weight=1.0, center_momentum=1.0, feature_kind="mse", **kw)  # fmt: skip
        collator = MultiCropCollator(16, num_global=2, global_scale=(1.0, 1.0), hed_sigma=0.0, flip=False)
        trainer = PatchDistillationTrainer(tiny_vit(seed=2), teachers=experts, args=args, train_dataset=tiles,
                                           data_collator=collator)  # fmt: skip
        trainer.train()
        return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    big = one_step(per_device_train_batch_size=8)
    small = one_step(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    init = dict(tiny_vit(seed=2).named_parameters())
    moved = False
    for name, p in big.items():
        torch.testing.assert_close(p, small[name], rtol=1e-4, atol=1e-6, msg=name)
        key = name.removeprefix("encoder.")
        moved |= key in init and not torch.equal(p, init[key])
    assert moved


def test_a_short_run_lowers_the_feature_kd_loss(tmp_path, tiles):
    teacher = tiny_vit(24, seed=1)
    args = config(tmp_path, max_steps=30, learning_rate=3e-3, logging_steps=10)
    collator = MultiCropCollator(16, num_global=1, global_scale=(1.0, 1.0), hed_sigma=0.0)
    trainer = PatchDistillationTrainer(tiny_vit(seed=2), teachers=[teacher], args=args, train_dataset=tiles,
                                       data_collator=collator)  # fmt: skip
    trainer.train()
    losses = [h["loss_feature"] for h in trainer.state.log_history if "loss_feature" in h]
    assert losses[-1] < 0.7 * losses[0]


def test_ibot_masks_reach_the_student(tmp_path, tiles):
    args = config(
        tmp_path,
        feature_weight=0.0,
        relation_sample_weight=0.0,
        relation_region_weight=0.0,
        ibot_weight=1.0,
        max_steps=2,
    )
    collator = MultiCropCollator(16, num_global=1, mask_ratio=0.5, num_patches=4)
    trainer = PatchDistillationTrainer(tiny_vit(seed=2), teachers=[tiny_vit(24, seed=1)], args=args,
                                       train_dataset=tiles, data_collator=collator)  # fmt: skip
    trainer.train()
    assert trainer.model.mask_token.abs().sum() > 0, "the mask token is trained"
    with pytest.raises(ValueError, match="mask_ratio"):
        trainer.compute_loss_terms(trainer.model, {"global_views": torch.rand(1, 2, 3, 16, 16)}, None)


def test_saved_student_loads_in_get_encoder_extract_and_pushes_with_its_card(tmp_path):
    from reportkd.cli import main
    from reportkd.hub import DistillationInfo, push_to_hub, write_card
    from reportkd.vlm.encoders import get_encoder
    from reportkd.vlm.wsi import load_slide_features, write_synthetic_slide

    student = tiny_vit(seed=4).eval()
    folder = student.save_pretrained(tmp_path / "student")
    DistillationInfo.from_run("patch_distillation", teachers=["uni_v1", "phikon"], training_data="tiles",
                              losses={"feature_kd": 1.0}).save(folder)  # fmt: skip
    write_card(folder, "org/patch")
    enc = get_encoder(str(folder))
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode(student.normalize(x)), student(student.normalize(x))["embedding"])
    assert enc.embedding_dim == 16 and enc.transform.output_size == 16
    with pytest.raises(ValueError, match="drop --encoder-weights"):
        get_encoder(str(folder), random_init=True)

    write_synthetic_slide(tmp_path / "s0.tif", size=(256, 256), levels=1, seed=0)
    out = tmp_path / "features"
    args = ["extract", str(tmp_path / "s0.tif"), "--out", str(out), "--encoder", str(folder), "--patch-size", "32",
            "--num-workers", "0", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert load_slide_features(out / "features" / "s0.safetensors").features.shape[1] == 16

    dry = subprocess.run(
        [sys.executable, "-m", "reportkd.cli", "push", str(folder), "--repo-id", "org/patch", "--dry-run"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "(patch_encoder)" in dry
    (folder / "secret_token.txt").write_text("hf_x")
    result = push_to_hub(folder, "org/patch", local_hub=tmp_path / "hub")
    assert sorted(result.files) == ["README.md", "config.json", "distillation.json", "model.safetensors"]
    card = (tmp_path / "hub" / "org" / "patch" / "README.md").read_text()
    assert "Patch encoder" in card and "uni_v1" in card and "GPFM" in card and "Not a medical device" in card
    reloaded = PatchEncoder.from_pretrained(tmp_path / "hub" / "org" / "patch").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x)["embedding"], student(x)["embedding"])


def test_precomputed_teacher_features_give_the_live_teachers_loss(tmp_path, tiles):
    from reportkd.vlm.patch.data import precompute_teacher_features, save_teacher_features

    teacher = tiny_vit(24, seed=1)
    path = save_teacher_features(precompute_teacher_features({"a": teacher}, tiles), tmp_path / "feats.safetensors")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_teacher_features({"a": torch.zeros(1, 1)}, path)
    stored = tiles.with_teacher_features(path)
    collator = MultiCropCollator(16, num_global=1, global_scale=(1.0, 1.0), hed_sigma=0.0, flip=False)
    items = [stored[i] for i in range(8)]

    def loss(teachers, batch):
        args = config(tmp_path, relation_region_weight=0.0)  # precomputed: embeddings only
        trainer = PatchDistillationTrainer(tiny_vit(seed=2), teachers=teachers, args=args)
        return trainer.compute_loss_terms(trainer.model, batch, None)[0]["loss"]

    live = loss({"a": teacher}, collator([tiles[i] for i in range(8)]))
    torch.testing.assert_close(loss({"a": 24}, collator(items)), live)
    with pytest.raises(ValueError, match="no teacher_features"):
        loss({"a": 24}, collator([tiles[i] for i in range(8)]))
