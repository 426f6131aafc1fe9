"""conch_v15 (CONCH v1.5, TITAN's patch encoder): architecture, preprocessing, TRIDENT checkpoints, offline error."""

import numpy as np
import pytest
import torch

from reportkd.vlm.encoders import ENCODERS, EncoderWeightsError, get_encoder, list_encoders
from reportkd.vlm.encoders.conch_v15 import ConchV15Vision, load_conch_v15_state_dict, trident_pos_embed

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def test_conch_v15_is_registered_and_builds_the_published_architecture():
    assert "conch_v15" in list_encoders() and "768" in list_encoders()["conch_v15"]
    with torch.device("meta"):  # full size, shapes only: nothing allocated, nothing downloaded
        b = ENCODERS.get("conch_v15")(random_init=True)
        out = b.model(torch.empty(2, 3, 448, 448))
    assert b.embedding_dim == 768 and tuple(out.shape) == (2, 768) and b.source == "random"
    assert b.precision == torch.float16
    trunk = b.model.trunk
    assert trunk.embed_dim == 1024 and len(trunk.blocks) == 24 and trunk.blocks[0].attn.num_heads == 16
    assert tuple(trunk.pos_embed.shape) == (1, 1 + 28 * 28, 1024)  # 448 px / 16
    assert trunk.blocks[0].ls1.gamma.shape == (1024,)  # LayerScale (init_values=1.0)
    params = sum(p.numel() for p in b.model.parameters()) / 1e6
    assert params == pytest.approx(306.7, abs=0.05)  # ViT-L/16 at 448 px (304.0 M) + pooler and LayerNorm (2.8 M)


def test_conch_v15_preprocessing_is_448_px_imagenet_normalised():
    with torch.device("meta"):
        b = ENCODERS.get("conch_v15")(random_init=True)
    img = np.full((224, 300, 3), 128, dtype=np.uint8)  # non-square: shorter side to 448, centre crop
    x = b.transform(img)
    assert tuple(x.shape) == (3, 448, 448)
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)
    assert b.transform.interpolation == "bilinear"


def test_trident_checkpoint_loads_with_position_embeddings_interpolated_like_trident(tmp_path):
    torch.manual_seed(0)
    src = ConchV15Vision(img_size=224, trunk_kwargs=TINY, pool_dim=24, pool_heads=2)  # TRIDENT's 14 x 14 grid
    sd = src.state_dict()
    assert {
        "trunk.pos_embed",
        "attn_pool_contrast.query",
        "attn_pool_contrast.to_kv.weight",
        "ln_contrast.weight",
    } <= set(sd)
    dst = ConchV15Vision(img_size=64, trunk_kwargs=TINY, pool_dim=24, pool_heads=2)
    load_conch_v15_state_dict(dst, sd, tmp_path / "ckpt.bin")
    assert tuple(dst.trunk.pos_embed.shape) == (1, 1 + 4 * 4, 32)
    # TRIDENT's forward-time rule at 64 px: bicubic with scale_factor (4 + 0.1) / 14, CLS row untouched
    grid = sd["trunk.pos_embed"][:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, scale_factor=(4.1 / 14, 4.1 / 14), mode="bicubic")
    torch.testing.assert_close(dst.trunk.pos_embed[0, 1:], ref.permute(0, 2, 3, 1).reshape(16, 32)[:, :])
    torch.testing.assert_close(dst.trunk.pos_embed[0, 0], sd["trunk.pos_embed"][0, 0])
    assert torch.equal(trident_pos_embed(sd["trunk.pos_embed"], 224), sd["trunk.pos_embed"])  # native size: as is
    out = dst.eval()(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 24) and torch.isfinite(out).all()
    # the output is the LayerNorm of the pooled query: zero mean per row before the affine (weights are 1/0 here)
    torch.testing.assert_close(out.mean(-1), torch.zeros(3), atol=1e-5, rtol=0)


def test_attentional_pooler_matches_a_reference_cross_attention():
    torch.manual_seed(0)
    m = ConchV15Vision(img_size=32, trunk_kwargs=TINY, pool_dim=24, pool_heads=2).attn_pool_contrast
    x = torch.randn(2, 5, 32)
    q = m.to_q(m.ln_q(m.query))  # (1, 24)
    k, v = m.to_kv(m.ln_k(x)).chunk(2, -1)
    heads = []
    for h in range(2):
        s = slice(12 * h, 12 * (h + 1))
        att = ((q[:, s] * 12**-0.5) @ k[..., s].transpose(-1, -2)).softmax(-1)  # (2, 1, 5)
        heads.append(att @ v[..., s])
    torch.testing.assert_close(m(x), m.to_out(torch.cat(heads, -1)))


def test_conch_v15_offline_gives_one_line_naming_the_hub_id_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderWeightsError, match=r"conch_v15.*MahmoodLab/conchv1_5.*--encoder-weights") as e:
        get_encoder("conch_v15")
    assert "\n" not in str(e.value)


def test_conch_v15_names_a_folder_without_its_checkpoint(tmp_path):
    with pytest.raises(EncoderWeightsError, match="pytorch_model_vision.bin"):
        get_encoder("conch_v15", tmp_path)
