"""Patch-distillation losses and augmentation: identities, closed forms, invariances, masked items ignored."""

import pytest
import torch
from torch import nn

from reportkd.vlm.patch.data import MultiCropCollator, hed_jitter, stain_variants
from reportkd.vlm.patch.evaluation import agreement, linear_cka
from reportkd.vlm.patch.losses import (
    centered_teacher_probs,
    dino_loss,
    ema_update_,
    feature_kd_loss,
    ibot_patch_loss,
    multi_expert_kd_loss,
    pool_tokens,
    region_relation_loss,
    sample_relation_loss,
    sinkhorn_knopp,
    update_center,
)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_feature_kd_is_zero_for_identical_embeddings_and_tokens(kind):
    x = torch.randn(4, 8)
    tokens = torch.randn(4, 9, 8)
    assert feature_kd_loss(x, x, kind=kind).item() == pytest.approx(0, abs=1e-6)
    assert feature_kd_loss(tokens, tokens, kind=kind).item() == pytest.approx(0, abs=1e-6)
    assert feature_kd_loss(x, torch.randn(4, 8), kind=kind).item() > 0.1
    y = torch.randn(4, 8)
    per = feature_kd_loss(x, y, kind=kind, reduction="none")
    assert per.shape == (4,)
    torch.testing.assert_close(feature_kd_loss(x, y, kind=kind, reduction="sum") / 4, per.mean())
    torch.testing.assert_close(feature_kd_loss(x, y, kind=kind, reduction="mean"), per.mean())


def test_multi_expert_heads_with_different_teacher_widths_and_weights():
    torch.manual_seed(0)
    student = torch.randn(6, 8, requires_grad=True)
    teachers = {"uni": torch.randn(6, 16), "conch": torch.randn(6, 5)}
    heads = nn.ModuleDict({"uni": nn.Linear(8, 16), "conch": nn.Linear(8, 5)})
    loss = multi_expert_kd_loss(student, teachers, projections=heads, weights={"uni": 1.0, "conch": 0.0})
    loss.backward()
    assert heads["uni"].weight.grad.abs().sum() > 0 and student.grad.abs().sum() > 0
    assert heads["conch"].weight.grad is None or heads["conch"].weight.grad.abs().sum() == 0  # weight 0: no pull
    both = multi_expert_kd_loss(student, teachers, projections=heads)
    single = sum(feature_kd_loss(student, t, projection=heads[n]) for n, t in teachers.items())
    torch.testing.assert_close(both, single)
    with pytest.raises(KeyError, match="No projection head for expert 'virchow'"):
        multi_expert_kd_loss(student, {"virchow": torch.randn(6, 3)}, projections=heads)


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_sample_relations_are_invariant_to_batch_order_and_width(kind):
    torch.manual_seed(0)
    s, t = torch.randn(8, 6), torch.randn(8, 12)
    perm = torch.randperm(8)
    a = sample_relation_loss(s, t, kind=kind)
    torch.testing.assert_close(sample_relation_loss(s[perm], t[perm], kind=kind), a)
    rotation = torch.linalg.qr(torch.randn(12, 12))[0]
    assert sample_relation_loss(t @ rotation, t, kind=kind).item() == pytest.approx(0, abs=1e-5)  # rotation: same
    assert a.item() > 0


def test_region_relations_per_image_and_pooled_teacher_grid():
    torch.manual_seed(0)
    t = torch.randn(3, 16, 10)
    rotation = torch.linalg.qr(torch.randn(10, 10))[0]
    assert region_relation_loss(t @ rotation, t).item() == pytest.approx(0, abs=1e-5)
    fine = torch.randn(3, 64, 10)  # an 8x8 teacher grid onto a 4x4 student grid
    torch.testing.assert_close(region_relation_loss(pool_tokens(fine, 16), fine), torch.tensor(0.0))
    per = region_relation_loss(torch.randn(3, 16, 4), t, reduction="none")
    perm = torch.tensor([2, 0, 1])
    assert per.shape == (3,)
    s = torch.randn(3, 16, 4)
    torch.testing.assert_close(region_relation_loss(s[perm], t[perm], reduction="none"),
                               region_relation_loss(s, t, reduction="none")[perm])  # fmt: skip


def test_dino_centring_sharpening_and_center_ema_rule():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    center = torch.randn(7)
    probs = centered_teacher_probs(logits, center, temperature=0.04)
    torch.testing.assert_close(probs, ((logits - center) / 0.04).softmax(-1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))
    new = update_center(center, logits, momentum=0.9)
    torch.testing.assert_close(new, 0.9 * center + 0.1 * logits.reshape(-1, 7).mean(0))
    torch.testing.assert_close(update_center(center, logits, momentum=1.0), center)
    # sharpening: a lower temperature gives a more peaked target
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1).mean()  # noqa: E731
    assert entropy(centered_teacher_probs(logits, center, temperature=0.04)) < entropy(
        centered_teacher_probs(logits, center, temperature=1.0)
    )


def test_sinkhorn_gives_equal_mass_per_prototype():
    torch.manual_seed(0)
    logits = torch.rand(16, 4) * 2 - 1 + torch.tensor([0.5, 0, 0, 0])  # cosine logits, prototype 0 favoured
    q = sinkhorn_knopp(logits, temperature=0.1, iterations=20)
    torch.testing.assert_close(q.sum(-1), torch.ones(16), atol=1e-3, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((4,), 4.0), atol=0.15, rtol=0)
    softmax_mass = (logits / 0.1).softmax(-1).sum(0)
    assert (q.sum(0) - 4).abs().max() < (softmax_mass - 4).abs().max() / 5


def test_dino_loss_is_smallest_when_the_student_matches_and_skips_same_view():
    torch.manual_seed(0)
    t = torch.randn(2, 4, 6)
    probs = (t / 0.1).softmax(-1)
    matched = dino_loss(t, probs, student_temperature=0.1, skip_same_view=False, reduction="none")
    other = dino_loss(torch.randn(2, 4, 6), probs, student_temperature=0.1, skip_same_view=False, reduction="none")
    assert (matched.mean() < other.mean()).item()
    # skip_same_view: with one global view and no local crop there is no pair
    with pytest.raises(ValueError, match="no view pair"):
        dino_loss(t[:1], probs[:1], skip_same_view=True)
    pairs = dino_loss(t, probs, skip_same_view=True, reduction="none")
    ce = lambda si, ti: -(probs[ti] * (t[si] / 0.1).log_softmax(-1)).sum(-1)  # noqa: E731
    torch.testing.assert_close(pairs, (ce(0, 1) + ce(1, 0)) / 2)


def test_ibot_ignores_unmasked_patches():
    torch.manual_seed(0)
    s, t = torch.randn(2, 9, 5), torch.randn(2, 9, 5).softmax(-1)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, :3] = True
    changed = s.clone()
    changed[:, 3:] = torch.randn(2, 6, 5)
    torch.testing.assert_close(ibot_patch_loss(changed, t, mask), ibot_patch_loss(s, t, mask))
    assert ibot_patch_loss(s, t, torch.zeros_like(mask)).item() == 0


def test_ema_update_rule():
    teacher, student = [torch.ones(3), torch.zeros(2)], [torch.full((3,), 3.0), torch.ones(2)]
    ema_update_(teacher, student, momentum=0.75)
    torch.testing.assert_close(teacher[0], torch.full((3,), 1.5))
    torch.testing.assert_close(teacher[1], torch.full((2,), 0.25))


def test_hed_jitter_identity_variants_and_collator_shapes():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16) * 0.8 + 0.1
    torch.testing.assert_close(hed_jitter(x, torch.ones(3, 3), torch.zeros(3, 3)), x, atol=1e-4, rtol=0)
    changed = hed_jitter(x, torch.full((3, 3), 1.3), torch.zeros(3, 3))
    assert (changed - x).abs().mean() > 0.01 and changed.min() >= 0 and changed.max() <= 1
    v = stain_variants(x, 3, seed=1)
    assert v.shape == (3, 3, 3, 16, 16)
    torch.testing.assert_close(v[0], x)
    items = [{"pixels": (x[i] * 255).to(torch.uint8), "labels": {"tissue": i}} for i in range(3)]
    batch = MultiCropCollator(16, num_global=2, num_local=3, local_size=8, mask_ratio=0.25, num_patches=4)(items)
    assert batch["global_views"].shape == (2, 3, 3, 16, 16) and batch["local_views"].shape == (3, 3, 3, 8, 8)
    assert batch["masks"].shape == (2, 3, 4) and (batch["masks"].sum(-1) == 1).all()
    assert batch["labels_tissue"].tolist() == [0, 1, 2]


def test_agreement_metrics_are_one_for_the_same_geometry():
    x = torch.randn(30, 8)
    rotation = torch.linalg.qr(torch.randn(8, 8))[0]
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-6)
    same = agreement(x, x @ rotation * 3)
    assert same["knn_overlap@10"] == pytest.approx(1.0) and same["similarity_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert agreement(x, torch.randn(30, 5))["cka"] < 0.9
