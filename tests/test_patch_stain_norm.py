"""Harder benchmark tiles and the stain-invariance / per-expert normalisation options of patch distillation:
morphology tiles carry their labels in structure (not colour), the collator's clean teacher views, teachers fed the
un-jittered views, per-expert feature standardisation (pure functions and in the trainer)."""

import numpy as np
import pytest
import torch

from reportkd.vlm.patch import MultiCropCollator, PatchDistillationConfig, PatchDistillationTrainer, PatchEncoder
from reportkd.vlm.patch.data import load_tiles, morphology_dataset
from reportkd.vlm.patch.losses import standardize_features, update_moments
from reportkd.vlm.synthetic_tiles import morphology_tiles, render_morphology_tile

TINY = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}


def tiny_vit(width: int = 16, seed: int = 0) -> PatchEncoder:
    torch.manual_seed(seed)
    return PatchEncoder("vit_small_patch16_224", {**TINY, "embed_dim": width}, image_size=16)


def config(tmp_path, **kw) -> PatchDistillationConfig:
    base = dict(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8, report_to="none",
                use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1, seed=0,
                dataloader_drop_last=True, relation_region_weight=0.0)  # fmt: skip
    return PatchDistillationConfig(**{**base, **kw})


def test_morphology_tiles_are_deterministic_balanced_and_colour_blind():
    tiles, labels = morphology_tiles(48, image_size=32, seed=3)
    again, _ = morphology_tiles(48, image_size=32, seed=3)
    assert tiles.shape == (48, 32, 32, 3) and tiles.dtype == np.uint8 and np.array_equal(tiles, again)
    assert (
        np.bincount(labels["arrangement"]).tolist() == [12] * 4 and np.bincount(labels["shape"]).tolist() == [16] * 3
    )
    # the labels live in structure: mean colour differs far less between classes than between tiles
    mean = tiles.reshape(48, -1, 3).mean(1)
    for task in ("arrangement", "shape"):
        per_class = np.stack([mean[labels[task] == c].mean(0) for c in np.unique(labels[task])])
        assert per_class.std(0).max() < 0.5 * mean.std(0).max(), task
    ds = load_tiles("morphology:n=8,seed=1", image_size=16)
    assert ds.tiles.shape == (8, 3, 16, 16) and set(ds.labels) == {"arrangement", "shape"}
    torch.testing.assert_close(ds.tiles, morphology_dataset(8, image_size=16, seed=1).tiles)
    with pytest.raises(ValueError, match="Unknown arrangement"):
        render_morphology_tile("spiral", "round", size=16, rng=np.random.default_rng(0))


def test_clean_teacher_views_share_the_crop_and_flip_but_not_the_stain():
    items = [{"pixels": t, "index": i} for i, t in enumerate(morphology_dataset(6, image_size=16, seed=0).tiles)]
    jittered = MultiCropCollator(16, num_global=1, global_scale=(0.5, 1.0), hed_sigma=0.3, clean_teacher_views=True)
    plain = MultiCropCollator(16, num_global=1, global_scale=(0.5, 1.0), hed_sigma=0.0)
    batch = jittered(items)
    torch.testing.assert_close(batch["teacher_views"], plain(items)["global_views"])  # same crops and flips
    assert (batch["global_views"] - batch["teacher_views"]).abs().mean() > 0.01  # the student's are stain-jittered
    assert "teacher_views" not in MultiCropCollator(16, num_global=1, hed_sigma=0.3)(items)


def test_experts_see_the_clean_views_and_the_student_the_jittered_ones(tmp_path):
    tiles = morphology_dataset(8, image_size=16, seed=0)
    seen = {}
    teacher = tiny_vit(24, seed=1)
    collator = MultiCropCollator(16, num_global=1, global_scale=(1.0, 1.0), flip=False, hed_sigma=0.3,
                                 clean_teacher_views=True)  # fmt: skip
    trainer = PatchDistillationTrainer(tiny_vit(seed=2), teachers={"a": teacher}, args=config(tmp_path),
                                       train_dataset=tiles, data_collator=collator)  # fmt: skip
    trainer.experts[0].register_forward_pre_hook(lambda m, a: seen.setdefault("teacher", a[0].clone()))
    trainer.model.register_forward_pre_hook(lambda m, a: seen.setdefault("student", a[0].clone()))
    trainer.compute_loss_terms(trainer.model, collator([tiles[i] for i in range(8)]), None)
    torch.testing.assert_close(seen["teacher"], tiles.pixels())  # whole tile, no flip, no stain change
    assert not torch.allclose(seen["student"], tiles.pixels(), atol=1e-3)


def test_standardize_and_running_moments():
    x = torch.randn(64, 5) * torch.tensor([1.0, 2, 3, 4, 5]) + 7
    mean, var = update_moments(torch.zeros(5), torch.ones(5), x, momentum=0.9, first=True)
    z = standardize_features(x, mean, var)
    torch.testing.assert_close(z.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    m2, v2 = update_moments(mean, var, torch.zeros(8, 5), momentum=0.9)
    torch.testing.assert_close(m2, 0.9 * mean)
    torch.testing.assert_close(v2, 0.9 * var)
    unchanged = update_moments(mean, var, x, momentum=1.0)
    torch.testing.assert_close(unchanged[0], mean)


def test_trainer_standardizes_each_expert_with_its_own_running_moments(tmp_path):
    tiles = morphology_dataset(16, image_size=16, seed=0)
    with pytest.raises(ValueError, match="expert_feature_norm"):
        config(tmp_path, expert_feature_norm="batch")
    experts = {"a": tiny_vit(24, seed=1), "b": tiny_vit(12, seed=3)}
    args = config(tmp_path, max_steps=2, expert_feature_norm="standardize")
    assert "feature_norm" in args.heads() and "feature_norm" not in config(tmp_path).heads()
    collator = MultiCropCollator(16, num_global=1, global_scale=(1.0, 1.0), hed_sigma=0.0, flip=False)
    trainer = PatchDistillationTrainer(tiny_vit(seed=2), teachers=experts, args=args, train_dataset=tiles,
                                       data_collator=collator)  # fmt: skip
    trainer.train()
    model = trainer.model
    assert int(model.feature_norm_updates) == 2
    assert model.feature_mean_a.shape == (24,) and model.feature_var_b.shape == (12,)
    with torch.no_grad():
        emb = experts["a"](experts["a"].normalize(tiles.pixels()))["embedding"]
    # the running mean follows expert a's embeddings (first batch's moments, then an EMA)
    assert (model.feature_mean_a - emb.mean(0)).abs().max() < 0.5 * emb.mean(0).abs().max()
    assert not torch.equal(model.feature_var_a, torch.ones(24))
