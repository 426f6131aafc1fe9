"""SlideEncoderModel: save/load round trip, ragged batches and masks, attention paths, validation errors."""

import pytest
import torch
from slide_tiny import batch_of, random_slide, tiny_encoder
from transformers import AutoConfig, AutoModel

from reportkd.vlm.slide import SlideEncoderConfig, SlideEncoderModel


@pytest.mark.parametrize("kw", [{}, {"pooling": "mean", "use_cls_token": False, "alibi_slopes": [1.0, 0.5, 0.1, 0.0]}])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kw):
    model = tiny_encoder(**kw).eval()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json",
        "model.safetensors",
        "configuration_slide.py",
        "modeling_slide.py",  # code: plain transformers
    }
    assert AutoConfig.from_pretrained(tmp_path).model_type == "reportkd_slide_encoder"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is SlideEncoderModel
    same = {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    assert {k: v for k, v in loaded.config.to_dict().items() if k != "_name_or_path"} == same
    batch = batch_of([random_slide(7), random_slide(12, seed=1)])
    a, b = model(**batch), loaded(**batch)
    assert torch.equal(a.slide_embeds, b.slide_embeds) and torch.equal(a.patch_embeds, b.patch_embeds)


def test_slide_alone_equals_slide_in_padded_batch_with_garbage_padding():
    model = tiny_encoder().eval()
    slides = [random_slide(n, seed=n) for n in (5, 12, 9)]
    batch = batch_of(slides)
    pad = ~batch["patch_mask"]
    batch["features"][pad] = 1e3  # padded rows hold garbage: they must not matter
    batch["grid"][pad] = 99
    out = model(**batch)
    for i, (f, g) in enumerate(slides):
        alone = model(f, g)  # unbatched (N, D) input
        torch.testing.assert_close(out.slide_embeds[i], alone.slide_embeds[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.patch_embeds[i, : len(f)], alone.patch_embeds[0], atol=1e-5, rtol=1e-5)


def test_masked_background_cells_anywhere_do_not_change_outputs():
    model = tiny_encoder(pooling="mean").eval()
    f, g = random_slide(10)
    extra_f, extra_g = torch.randn(4, 32) * 10, torch.tensor([[0, 0], [3, 3], [9, 9], [1, 5]])
    mixed_f, mixed_g = torch.cat([f[:5], extra_f, f[5:]]), torch.cat([g[:5], extra_g, g[5:]])
    mask = torch.ones(14, dtype=torch.bool)
    mask[5:9] = False
    ref, out = model(f, g), model(mixed_f, mixed_g, mask)
    torch.testing.assert_close(out.slide_embeds, ref.slide_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.patch_embeds[0, mask], ref.patch_embeds[0], atol=1e-5, rtol=1e-5)


def test_patch_order_does_not_matter():
    model = tiny_encoder().eval()
    f, g = random_slide(11)
    perm = torch.randperm(11)
    a, b = model(f, g), model(f[perm], g[perm])
    torch.testing.assert_close(a.slide_embeds, b.slide_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.patch_embeds[0, perm], b.patch_embeds[0], atol=1e-5, rtol=1e-5)


def test_explicit_attention_path_matches_fused_attention():
    model = tiny_encoder().eval()
    batch = batch_of([random_slide(6), random_slide(9, seed=2)])
    fused = model(**batch, output_hidden_states=True)
    explicit = model(**batch, output_attentions=True)
    torch.testing.assert_close(fused.slide_embeds, explicit.slide_embeds, atol=1e-5, rtol=1e-5)
    assert len(fused.hidden_states) == 3 and fused.attentions is None
    probs = explicit.attentions[0]  # (B, H, 1 + N, 1 + N)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    assert probs[0, :, :, 1 + 6 :].abs().max() == 0  # padded keys of the smaller slide get no attention
    assert model(**batch, return_dict=False)[0].shape == (2, 32)


def test_configuration_and_input_errors_say_what_to_do():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        SlideEncoderConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="use_cls_token"):
        SlideEncoderConfig(use_cls_token=False, pooling="cls")
    with pytest.raises(ValueError, match="position_encoding"):
        SlideEncoderConfig(position_encoding="rope")
    with pytest.raises(ValueError, match="one per head"):
        SlideEncoderConfig(num_attention_heads=4, hidden_size=32, alibi_slopes=[1.0])
    model = tiny_encoder()
    f, g = random_slide(4)
    with pytest.raises(ValueError, match="grid positions"):
        model(f)
    with pytest.raises(ValueError, match="input_dim"):
        model(torch.randn(4, 16), g)
    with pytest.raises(ValueError, match="at least one real patch"):
        model(f, g, torch.zeros(4, dtype=torch.bool))
    # a bag-of-patches ablation runs without positions
    assert tiny_encoder(position_encoding="none")(f).slide_embeds.shape == (1, 32)
