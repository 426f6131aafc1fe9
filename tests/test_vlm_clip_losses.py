"""Identities of the CLIP distillation losses (random tensors) and their distributed gather."""

import os

import open_clip
import pytest
import torch
import torch.nn.functional as F

from reportkd.losses import LOSSES, register_loss
from reportkd.vlm.clip.losses import (
    clip_attention_kd_loss,
    clip_contrastive_loss,
    clip_feature_distillation_loss,
    clip_icl_loss,
    clip_logit_kd_loss,
    clip_relation_kd_loss,
)


def feats(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(b, d, generator=g), dim=-1), F.normalize(torch.randn(b, d, generator=g), dim=-1))


def test_registered_under_clip_names_and_duplicates_refused():
    for name in ("clip_contrastive", "clip_logit_kd", "clip_fd", "clip_icl", "clip_relation_kd", "clip_attention_kd"):
        assert name in LOSSES
    with pytest.raises(ValueError, match="already registered"):
        register_loss("clip_fd", lambda *a: None)


def test_contrastive_matches_open_clip():
    img, txt = feats()
    scale = torch.tensor(10.0)
    expected = open_clip.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(clip_contrastive_loss(img, txt, scale), expected)
    assert clip_contrastive_loss(img, txt, scale, reduction="none").shape == (6,)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_logit_kd_identities(temperature):
    img, txt = feats()
    s, t = torch.tensor(7.0), torch.tensor(7.0)
    kl = clip_logit_kd_loss(img, txt, s, img, txt, t, temperature=temperature)
    torch.testing.assert_close(kl, torch.tensor(0.0), atol=1e-6, rtol=0)
    # soft cross-entropy of identical models = the teacher's entropy (its floor), times T^2
    ce = clip_logit_kd_loss(img, txt, s, img, txt, t, temperature=temperature, kind="soft_ce")
    logits = 7.0 * img @ txt.T / temperature
    entropy = lambda x: -(x.softmax(-1) * x.log_softmax(-1)).sum(-1).mean()  # noqa: E731
    torch.testing.assert_close(ce, (entropy(logits) + entropy(logits.T)) / 2 * temperature**2)
    other_img, other_txt = feats(seed=1)
    assert clip_logit_kd_loss(other_img, other_txt, s, img, txt, t, temperature=temperature) > 0


def test_logit_kd_soft_ce_matches_open_clip_distill_loss():
    (img, txt), (t_img, t_txt) = feats(), feats(d=12, seed=1)  # teacher may be wider
    s, t = torch.tensor(5.0), torch.tensor(9.0)
    _, expected = open_clip.DistillClipLoss()(img, txt, s, t_img, t_txt, t)
    torch.testing.assert_close(clip_logit_kd_loss(img, txt, s, t_img, t_txt, t, kind="soft_ce"), expected)


def test_feature_distillation_zero_for_identical_and_needs_projection():
    img, txt = feats()
    torch.testing.assert_close(clip_feature_distillation_loss(img, txt, img, txt), torch.tensor(0.0))
    torch.testing.assert_close(clip_feature_distillation_loss(3 * img, txt, img, txt), torch.tensor(0.0))  # scale-free
    t_img, t_txt = feats(d=12, seed=2)
    with pytest.raises(ValueError, match="projection"):
        clip_feature_distillation_loss(img, txt, t_img, t_txt)
    proj = torch.nn.Linear(8, 12)
    loss = clip_feature_distillation_loss(img, txt, t_img, t_txt, image_projection=proj, text_projection=proj)
    loss.backward()
    assert proj.weight.grad is not None and loss > 0
    total = clip_feature_distillation_loss(img, txt, *feats(seed=3), reduction="sum")
    torch.testing.assert_close(clip_feature_distillation_loss(img, txt, *feats(seed=3), num_items_in_batch=12),
                               total / 12)  # fmt: skip


def test_icl_of_identical_embeddings_is_the_contrastive_loss():
    img, txt = feats()
    scale = torch.tensor(12.0)
    torch.testing.assert_close(clip_icl_loss(img, txt, img, txt, scale), clip_contrastive_loss(img, txt, scale))
    with pytest.raises(ValueError, match="project"):
        clip_icl_loss(img, txt, *feats(d=4), scale)


def test_relation_kd_identities():
    img, txt = feats()
    s = torch.tensor(10.0)
    torch.testing.assert_close(clip_relation_kd_loss(img, txt, s, img, txt, s), torch.tensor(0.0), atol=1e-6, rtol=0)
    t_img, t_txt = feats(d=16, seed=4)
    assert clip_relation_kd_loss(img, txt, s, t_img, t_txt, s) > 0
    with pytest.raises(ValueError, match="at least 2"):
        clip_relation_kd_loss(img[:1], txt[:1], s, img[:1], txt[:1], s)


def test_attention_kd_identities():
    g = torch.Generator().manual_seed(0)
    attn = torch.randn(2, 4, 5, 5, generator=g).softmax(-1)
    torch.testing.assert_close(clip_attention_kd_loss(attn, attn), torch.tensor(0.0))
    other = torch.randn(2, 4, 5, 5, generator=g).softmax(-1)
    assert clip_attention_kd_loss(other, attn) > 0
    # different head counts: compared after averaging heads
    fewer = attn[:, :2]
    torch.testing.assert_close(
        clip_attention_kd_loss(fewer, attn), clip_attention_kd_loss(fewer.mean(1), attn.mean(1))
    )
    causal = torch.tril(torch.ones(5, 5)).expand(2, 1, 5, 5) / torch.arange(1, 6).view(5, 1)
    torch.testing.assert_close(clip_attention_kd_loss(causal, causal), torch.tensor(0.0))  # masked keys are fine
    with pytest.raises(ValueError, match="differ"):
        clip_attention_kd_loss(attn, torch.rand(2, 4, 6, 6).softmax(-1))


# -- distributed gather ----------------------------------------------------------------------------------------------
def _ddp_worker(rank, world, init_file, payload, out_dir):
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    img, txt, t_img, t_txt = (x.chunk(world)[rank].clone() for x in payload)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    loss = _all_batch_terms(img, txt, t_img, t_txt)
    loss.backward()
    save_file({"loss": loss.detach(), "img": img.grad, "txt": txt.grad}, os.path.join(out_dir, f"{rank}.safetensors"))
    dist.destroy_process_group()


def _all_batch_terms(img, txt, t_img, t_txt):
    s = torch.tensor(8.0)
    loss = clip_contrastive_loss(img, txt, s) + clip_logit_kd_loss(img, txt, s, t_img, t_txt, s, temperature=2.0)
    return loss + clip_icl_loss(img, txt, t_img, t_txt, s) + clip_relation_kd_loss(img, txt, s, t_img, t_txt, s)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks two gloo processes (POSIX only)")
def test_distributed_gather_equals_global_batch(tmp_path):
    """Two processes with gathered negatives reproduce the global-batch loss and (DDP-averaged) gradients."""
    import multiprocessing as mp

    from safetensors.torch import load_file

    img, txt = feats(b=8, d=6)
    t_img, t_txt = feats(b=8, d=6, seed=5)
    ctx = mp.get_context("fork")  # no re-import in the children: fast
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), (img, txt, t_img, t_txt),
                                                   str(tmp_path))) for r in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, "a gloo worker failed"
    r0, r1 = (load_file(str(tmp_path / f"{r}.safetensors")) for r in range(2))
    img_ref, txt_ref = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    ref = _all_batch_terms(img_ref, txt_ref, t_img, t_txt)
    ref.backward()
    torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, ref.detach())
    # DDP averages parameter gradients over processes: rank r's feature gradient / world = the global one
    torch.testing.assert_close(torch.cat([r0["img"], r1["img"]]) / 2, img_ref.grad)
    torch.testing.assert_close(torch.cat([r0["txt"], r1["txt"]]) / 2, txt_ref.grad)
