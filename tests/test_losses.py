import pytest
import torch
import torch.nn.functional as F

from reportkd.losses import (
    LOSSES,
    feature_distillation_loss,
    forward_kl_loss,
    generalized_jsd_loss,
    multitask_kd_loss,
    reverse_kl_loss,
    soft_target_kd_loss,
    teacher_log_probs,
)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)


def kl(p_logits, q_logits, T=1.0):
    p = F.log_softmax(p_logits / T, -1)
    q = F.log_softmax(q_logits / T, -1)
    return (p.exp() * (p - q)).sum(-1)


def test_identical_distributions_give_zero(logits):
    s, _, _ = logits
    assert soft_target_kd_loss(s, s.clone(), temperature=3.0).abs() < 1e-6
    for beta in (0.0, 0.3, 1.0):
        assert generalized_jsd_loss(s, s.clone(), beta=beta).abs() < 1e-6


def test_soft_target_equals_t2_scaled_kl(logits):
    s, t, _ = logits
    for T in (1.0, 2.0, 4.0):
        expected = (T**2 * kl(t, s, T)).mean()
        torch.testing.assert_close(soft_target_kd_loss(s, t, temperature=T), expected)


def test_probs_teacher_matches_logits_teacher(logits):
    s, t, _ = logits
    for T in (1.0, 2.5):
        a = soft_target_kd_loss(s, t, temperature=T, teacher_type="logits")
        b = soft_target_kd_loss(s, t.softmax(-1), temperature=T, teacher_type="probs")
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        teacher_log_probs(t.softmax(-1), temperature=2.0, teacher_type="probs").exp(),
        (t / 2.0).softmax(-1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_alpha_zero_is_cross_entropy_and_mix_is_linear(logits):
    s, t, y = logits
    torch.testing.assert_close(soft_target_kd_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    mix = soft_target_kd_loss(s, t, y, alpha=0.3, temperature=2.0)
    ref = 0.3 * soft_target_kd_loss(s, t, temperature=2.0) + 0.7 * F.cross_entropy(s, y)
    torch.testing.assert_close(mix, ref)


def test_missing_labels_are_ignored(logits):
    s, t, y = logits
    y_missing = y.clone()
    y_missing[:2] = -100
    got = soft_target_kd_loss(s, t, y_missing, alpha=0.5)
    ref = soft_target_kd_loss(s[2:], t[2:], y[2:], alpha=0.5)
    torch.testing.assert_close(got, ref)
    per_item = soft_target_kd_loss(s, t, y_missing, alpha=0.5, reduction="none")
    assert (per_item[:2] == 0).all() and (per_item[2:] > 0).all()


def test_jsd_endpoints_are_the_two_kl_directions(logits):
    s, t, _ = logits
    torch.testing.assert_close(generalized_jsd_loss(s, t, beta=0.0), kl(t, s).mean())
    torch.testing.assert_close(generalized_jsd_loss(s, t, beta=1.0), kl(s, t).mean())
    torch.testing.assert_close(forward_kl_loss(s, t), kl(t, s).mean())
    torch.testing.assert_close(reverse_kl_loss(s, t), kl(s, t).mean())
    mid = generalized_jsd_loss(s, t, beta=0.5)
    assert 0 < mid < min(kl(t, s).mean(), kl(s, t).mean())
    assert mid <= torch.log(torch.tensor(2.0))  # JSD is bounded by log 2


def test_sequence_shapes_and_accumulation_normalisation():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 7, 11, generator=g), torch.randn(4, 7, 11, generator=g)
    labels = torch.randint(0, 11, (4, 7), generator=g)
    labels[:, :3] = -100  # prompt tokens
    labels[3, 5:] = -100  # padding
    full = generalized_jsd_loss(s, t, labels, beta=0.2)
    n = labels.ne(-100).sum()
    halves = sum(
        generalized_jsd_loss(s[i : i + 2], t[i : i + 2], labels[i : i + 2], beta=0.2, num_items_in_batch=n)
        for i in (0, 2)
    )
    torch.testing.assert_close(full, halves)


def test_feature_loss(logits):
    s, t, _ = logits
    assert feature_distillation_loss(s, s.clone()) == 0
    assert feature_distillation_loss(s, 3 * s, kind="cosine", normalize=True).abs() < 1e-6
    torch.testing.assert_close(feature_distillation_loss(s, t), F.mse_loss(s, t))
    proj = torch.nn.Linear(5, 3)
    with pytest.raises(ValueError, match="projection"):
        feature_distillation_loss(s, torch.randn(6, 3))
    assert feature_distillation_loss(s, torch.randn(6, 3), projection=proj).requires_grad


def test_shape_mismatch_is_a_clear_error(logits):
    s, _, _ = logits
    with pytest.raises(ValueError, match="label map"):
        soft_target_kd_loss(s, torch.randn(6, 4))
    with pytest.raises(ValueError, match="vocabulary"):
        generalized_jsd_loss(s, torch.randn(6, 4))
    with pytest.raises(ValueError, match="labels are required"):
        soft_target_kd_loss(s, s, alpha=0.5)


def test_multitask_loss_is_mean_of_task_means():
    g = torch.Generator().manual_seed(2)
    student = {"organ": torch.randn(8, 3, generator=g), "grade": torch.randn(8, 4, generator=g)}
    teacher = {k: torch.randn_like(v).softmax(-1) for k, v in student.items()}
    labels = torch.stack([torch.randint(0, 3, (8,), generator=g), torch.randint(0, 4, (8,), generator=g)], 1)
    labels[:3, 1] = -100
    hard = multitask_kd_loss(student, None, labels, alpha=0.0)
    ref = 0.5 * (
        F.cross_entropy(student["organ"], labels[:, 0]) + F.cross_entropy(student["grade"][3:], labels[3:, 1])
    )
    torch.testing.assert_close(hard, ref)
    # exact under accumulation: two halves with global per-task counts sum to the full batch
    full = multitask_kd_loss(student, teacher, labels, alpha=0.7, temperature=2.0)
    counts = labels.ne(-100).sum(0)
    halves = sum(
        multitask_kd_loss(
            {k: v[i : i + 4] for k, v in student.items()},
            {k: v[i : i + 4] for k, v in teacher.items()},
            labels[i : i + 4],
            alpha=0.7,
            temperature=2.0,
            num_items_in_batch=counts,
        )
        for i in (0, 4)
    )
    torch.testing.assert_close(full, halves)
    weighted = multitask_kd_loss(student, None, labels, alpha=0.0, task_weights={"organ": 1.0, "grade": 0.0})
    torch.testing.assert_close(weighted, F.cross_entropy(student["organ"], labels[:, 0]))


def test_multitask_loss_member_axis_is_each_member_alone():
    """Ensemble logits (N, B, C): each member's loss on its own rows (member_mask), summed over members."""
    g = torch.Generator().manual_seed(3)
    student = {"organ": torch.randn(3, 8, 3, generator=g), "grade": torch.randn(3, 8, 4, generator=g)}
    teacher = {k: torch.randn(8, v.shape[-1], generator=g).softmax(-1) for k, v in student.items()}
    labels = torch.stack([torch.randint(0, 3, (8,), generator=g), torch.randint(0, 4, (8,), generator=g)], 1)
    labels[:3, 1] = -100
    mask = torch.rand(3, 8, generator=g) < 0.6
    mask[:, 0] = True
    kw = dict(alpha=0.4, temperature=2.0, task_weights={"organ": 2.0, "grade": 1.0})
    per_member = multitask_kd_loss(student, teacher, labels, member_mask=mask, sum_members=False, **kw)
    for m in range(3):
        rows = mask[m]
        alone = multitask_kd_loss(
            {k: v[m, rows] for k, v in student.items()}, {k: v[rows] for k, v in teacher.items()}, labels[rows], **kw
        )
        torch.testing.assert_close(per_member[m], alone)
    total = multitask_kd_loss(student, teacher, labels, member_mask=mask, **kw)
    torch.testing.assert_close(total, per_member.sum())
    # (N, T) per-member counts of a larger step: each member's loss scales by its own count ratio
    counts = (mask[:, :, None] & labels.ne(-100)[None]).sum(1)
    doubled = multitask_kd_loss(student, teacher, labels, member_mask=mask, num_items_in_batch=2 * counts, **kw)
    torch.testing.assert_close(doubled, total / 2)
    with pytest.raises(ValueError, match="member_mask"):
        multitask_kd_loss(student, teacher, labels, member_mask=mask[:, :4], **kw)


def test_registry_refuses_duplicates():
    assert {"soft_target_kd", "generalized_jsd", "feature", "multitask_kd"} <= set(LOSSES.names())
    with pytest.raises(ValueError, match="already registered"):
        LOSSES.register("soft_target_kd", lambda *a, **k: None)
    with pytest.raises(KeyError, match="Registered"):
        LOSSES.get("nope")
