"""Layer matching through forward hooks, attention maps from attention inputs, attention-guided masking."""

import pytest
import torch
from vlm_clip_tiny import bundles

from reportkd.vlm.clip.hooks import (
    LayerCapture,
    LayerMatch,
    attention_from_inputs,
    cls_attention_grid,
    parse_layer_matches,
    resize_patch_tokens,
    resolve_module,
)
from reportkd.vlm.clip.masking import apply_patch_mask, attention_guided_patch_mask, mask_ratio_at
from reportkd.vlm.clip.student import CLIPDistillationStudent


def inputs(bundle, b=3):
    torch.manual_seed(0)
    size = bundle.model.visual.image_size
    ids = bundle.tokenizer(["dense pleomorphic nuclei", "fat", "necrosis with debris"][:b])
    return torch.randn(b, 3, *(size if isinstance(size, tuple) else (size, size))), ids


def test_capture_collects_named_hidden_states_and_attention_maps():
    student, _ = bundles(teacher=None)
    model = student.model
    requests = [("visual.transformer.resblocks.0", "hidden"), ("visual.transformer.resblocks.1.attn", "attention"),
                ("transformer.resblocks.1.attn", "attention"), ("transformer.resblocks.0", "hidden")]  # fmt: skip
    pixels, ids = inputs(student)
    with LayerCapture(model, requests) as cap:
        model.encode_image(pixels)
        model.encode_text(ids)
        got = dict(cap.captured)
    assert got["hidden:visual.transformer.resblocks.0"].shape == (3, 17, 32)  # CLS + 4x4 patches, width 32
    assert got["hidden:transformer.resblocks.0"].shape == (3, 32, 32)  # context 32, width 32
    vis = got["attention:visual.transformer.resblocks.1.attn"]
    assert vis.shape == (3, 2, 17, 17)
    torch.testing.assert_close(vis.sum(-1), torch.ones(3, 2, 17))
    text = got["attention:transformer.resblocks.1.attn"]
    assert torch.all(text.triu(1) == 0)  # the causal mask is applied
    assert len(model.visual.transformer.resblocks[0]._forward_hooks) == 0  # hooks removed on exit


def test_attention_maps_equal_the_modules_own_weights():
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 5, 16)
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)
    expected = mha(x, x, x, need_weights=True, average_attn_weights=False, attn_mask=mask)[1]
    torch.testing.assert_close(attention_from_inputs(mha, (x, x, x), {"attn_mask": mask}), expected)
    seq_first = torch.nn.MultiheadAttention(16, 2)
    expected = seq_first(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), average_attn_weights=False)[1]
    torch.testing.assert_close(attention_from_inputs(seq_first, (x.transpose(0, 1),) * 3, {}), expected)
    with pytest.raises(TypeError, match="Cannot compute attention maps"):
        attention_from_inputs(torch.nn.Linear(4, 4), (x,), {})


def test_resolve_module_suggests_names_and_sees_through_peft():
    from peft import LoraConfig, get_peft_model

    student, _ = bundles(teacher=None)
    with pytest.raises(KeyError, match="Close names"):
        resolve_module(student.model, "visual.transformer.resblock.0")
    peft_model = get_peft_model(student.model, LoraConfig(r=2, target_modules=["c_fc"]))
    assert resolve_module(peft_model, "visual.transformer.resblocks.0").__class__.__name__ == "ResidualAttentionBlock"


def test_layer_matches_are_data_and_validated():
    spec = '[{"student": "a.b", "teacher": "c", "kind": "attention", "tokens": "cls"}]'
    (match,) = parse_layer_matches(spec)
    assert match == LayerMatch("a.b", "c", kind="attention", tokens="cls") and match.loss == "kl"
    assert parse_layer_matches("- {student: x, teacher: y, weight: 2}")[0].weight == 2
    with pytest.raises(ValueError, match="Unknown LayerMatch keys"):
        parse_layer_matches([{"student": "a", "teacher": "b", "layer": 3}])
    with pytest.raises(ValueError, match="tokens"):
        LayerMatch("a", "b", kind="attention", tokens="mean")
    with pytest.raises(ValueError, match="duplicates"):
        parse_layer_matches([{"student": "a", "teacher": "b"}, {"student": "a", "teacher": "c"}])


def test_student_wrapper_sizes_projections_from_the_teacher():
    student, teacher = bundles()
    matches = [LayerMatch("visual.transformer.resblocks.1", "visual.transformer.resblocks.0"),
               LayerMatch("visual.transformer.resblocks.1.attn", "visual.transformer.resblocks.1.attn",
                          kind="attention", tokens="cls")]  # fmt: skip
    wrapper = CLIPDistillationStudent(student.model, teacher=teacher.model, layer_matches=matches)
    assert wrapper.projections["embed_image"].weight.shape == (24, 16)  # student 16-d -> teacher 24-d
    assert wrapper.projections[matches[0].module_key].weight.shape == (48, 32)
    pixels, ids = inputs(student)
    out = wrapper(pixels, ids)
    assert out["layers"][matches[0].name].shape == (3, 17, 48)
    assert out["image_embeds_proj"].shape == (3, 24)
    assert all(not n.startswith("teacher") for n, _ in wrapper.named_parameters())


def test_patch_tokens_resize_and_cls_grids():
    tokens = torch.randn(2, 1 + 36, 8)
    resized = resize_patch_tokens(tokens, 1 + 9)
    assert resized.shape == (2, 10, 8)
    torch.testing.assert_close(resized[:, 0], tokens[:, 0])
    torch.testing.assert_close(resize_patch_tokens(tokens, 37), tokens)
    with pytest.raises(ValueError, match="tokens='cls'"):
        resize_patch_tokens(torch.randn(2, 40, 8), 32)
    attn = torch.rand(2, 3, 37, 37).softmax(-1)
    grid = cls_attention_grid(attn, grid=3)
    assert grid.shape == (2, 3, 3)
    torch.testing.assert_close(grid.flatten(1).sum(-1), torch.ones(2))


def test_attention_guided_masking():
    assert mask_ratio_at(0, 100, 0.1, 0.5) == pytest.approx(0.1)
    assert mask_ratio_at(50, 100, 0.1, 0.5) == pytest.approx(0.3)
    assert mask_ratio_at(500, 100, 0.1, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mask_ratio_at(0, 10, 0.0, 1.0)
    # teacher 4x4 grid attending to the top-left patches most; student 2x2 grid
    attn = torch.zeros(1, 2, 17, 17)
    attn[:, :, 0, 1:] = torch.arange(16, 0, -1, dtype=torch.float).view(4, 4).flatten() / 136
    high = attention_guided_patch_mask(attn, 0.25, (2, 2), mode="high")
    low = attention_guided_patch_mask(attn, 0.25, (2, 2), mode="low")
    assert high.tolist() == [[[True, False], [False, False]]]
    assert low.tolist() == [[[False, False], [False, True]]]
    pixels = torch.ones(1, 3, 4, 4)
    masked = apply_patch_mask(pixels, high)
    assert masked[0, :, :2, :2].eq(0).all() and masked[0, :, 2:, :].eq(1).all()
