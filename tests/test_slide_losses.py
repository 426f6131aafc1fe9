"""Slide distillation losses: similarity KD against a manual computation, identities, XMAG pooling, zero loss for a
student identical to its teacher."""

import copy

import pytest
import torch
import torch.nn.functional as F
from slide_tiny import tiny_aligned, tiny_encoder, trainer_args

from reportkd.losses import LOSSES, similarity_kd_loss
from reportkd.vlm.slide.data import SlideCollator, synthetic_dataset
from reportkd.vlm.slide.trainer import SlideDistillationConfig, SlideDistillationTrainer, pool_to_student_cells


def manual_similarity_kd(sq, tq, sk, tk, temperature, exclude_self):
    total = 0.0
    for i in range(sq.shape[0]):
        keys = [j for j in range(sk.shape[0]) if not (exclude_self and j == i)]
        s = torch.stack([F.cosine_similarity(sq[i], sk[j], dim=0) for j in keys]) / temperature
        t = torch.stack([F.cosine_similarity(tq[i], tk[j], dim=0) for j in keys]) / temperature
        p, q = t.softmax(0), s.softmax(0)
        total += (p * (p.log() - q.log())).sum()
    return total / sq.shape[0]


def test_similarity_kd_matches_a_manual_computation():
    torch.manual_seed(0)
    s, t = torch.randn(5, 8), torch.randn(5, 12)  # widths may differ: each side compares within itself
    got = similarity_kd_loss(s, t, temperature=0.5)
    torch.testing.assert_close(got, manual_similarity_kd(s, t, s, t, 0.5, True), rtol=1e-5, atol=1e-6)
    sk, tk = torch.randn(7, 8), torch.randn(7, 12)  # slide-report: keys are reports, nothing excluded
    got = similarity_kd_loss(s, t, sk, tk, temperature=0.2)
    torch.testing.assert_close(got, manual_similarity_kd(s, t, sk, tk, 0.2, False), rtol=1e-5, atol=1e-6)
    per = similarity_kd_loss(s, t, temperature=0.5, reduction="none")
    assert per.shape == (5,) and (per >= 0).all()
    torch.testing.assert_close(
        similarity_kd_loss(s, t, temperature=0.5, reduction="sum", num_items_in_batch=99), per.sum()
    )
    torch.testing.assert_close(similarity_kd_loss(s, t, temperature=0.5, num_items_in_batch=10), per.sum() / 10)
    assert LOSSES.get("similarity_kd") is similarity_kd_loss


def test_similarity_kd_is_zero_for_matching_relations_and_gives_student_gradients_only():
    torch.manual_seed(1)
    s = torch.randn(6, 8, requires_grad=True)
    assert similarity_kd_loss(s, 3.0 * s.detach()).abs() < 1e-6  # cosine: scale does not matter
    q = torch.linalg.qr(torch.randn(8, 8))[0]
    assert similarity_kd_loss(s, s.detach() @ q).abs() < 1e-5  # rotations keep relations
    t = torch.randn(6, 8, requires_grad=True)
    similarity_kd_loss(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_similarity_kd_errors():
    s = torch.randn(4, 8)
    with pytest.raises(ValueError, match="both"):
        similarity_kd_loss(s, s, student_keys=s)
    with pytest.raises(ValueError, match="same items"):
        similarity_kd_loss(s, torch.randn(5, 8))
    with pytest.raises(ValueError, match="at least 2"):
        similarity_kd_loss(s[:1], s[:1])
    with pytest.raises(ValueError, match="temperature"):
        similarity_kd_loss(s, s, temperature=0.0)


def test_pool_to_student_cells_averages_teacher_tokens_per_cell():
    teacher = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
    index = torch.tensor([[0, 0, 2, -1, 2, 2]])
    pooled, counts = pool_to_student_cells(teacher, index, 3)
    assert counts.tolist() == [[2, 0, 3]]
    torch.testing.assert_close(pooled[0, 0], teacher[0, :2].mean(0))
    torch.testing.assert_close(pooled[0, 2], teacher[0, [2, 4, 5]].mean(0))
    assert pooled[0, 1].abs().sum() == 0


@pytest.mark.parametrize("kind", ["cosine", "mse"])
@pytest.mark.parametrize("xmag", [False, True])
def test_distillation_loss_is_zero_when_the_student_is_the_teacher(tmp_path, kind, xmag):
    teacher = tiny_encoder().eval()
    data = synthetic_dataset("n=8,seed=0", grid="fine", teacher_grid="fine" if xmag else None)
    args = trainer_args(
        SlideDistillationConfig,
        tmp_path,
        feature_kind=kind,
        token_kind=kind,
        token_weight=1.0,
        similarity_weight=1.0,
        feature_weight=1.0,
    )
    trainer = SlideDistillationTrainer(model=copy.deepcopy(teacher), teacher_model=teacher, args=args)
    batch = SlideCollator(crop_size=5)([data[i] for i in range(8)])
    if xmag:  # same grid on both sides, shuffled so that teacher_to_student does the matching
        perm = torch.randperm(batch["teacher_features"].shape[1])
        for key in ("teacher_features", "teacher_grid", "teacher_patch_mask", "teacher_to_student"):
            batch[key] = batch[key][:, perm]
        assert (batch["teacher_to_student"][batch["teacher_patch_mask"]] >= 0).all()
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.abs() < 1e-5
    terms, _ = trainer.compute_loss_terms(trainer.model, batch, None)
    assert {"loss_feature", "loss_token", "loss_similarity"} <= set(terms)
    assert all(float(value.detach().abs()) < 1e-5 for value in terms.values()), terms


def test_distillation_config_and_teacher_checks(tmp_path):
    with pytest.raises(ValueError, match="Every distillation weight"):
        trainer_args(SlideDistillationConfig, tmp_path, feature_weight=0.0, similarity_weight=0.0)
    with pytest.raises(ValueError, match="similarity_kind"):
        trainer_args(SlideDistillationConfig, tmp_path, similarity_kind="slide_text")
    with pytest.raises(ValueError, match="aligned teacher"):
        SlideDistillationTrainer(
            model=tiny_encoder(),
            teacher_model=tiny_encoder(seed=1),
            args=trainer_args(SlideDistillationConfig, tmp_path, similarity_kind="both"),
        )
    with pytest.raises(ValueError, match="needs a teacher"):
        SlideDistillationTrainer(model=tiny_encoder(), args=trainer_args(SlideDistillationConfig, tmp_path))
    # an aligned teacher adds a projection into its slide-report space for slide-report KD
    trainer = SlideDistillationTrainer(
        model=tiny_encoder(hidden_size=16),
        teacher_model=tiny_aligned(),
        args=trainer_args(SlideDistillationConfig, tmp_path, similarity_kind="both"),
    )
    names = {n for n, _ in trainer.model.named_parameters()}
    assert {"feature_projection.weight", "token_projection.weight", "joint_projection.weight"} <= names
    assert not any(p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
