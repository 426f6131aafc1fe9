"""Patch-encoder registry: names, architectures (built on the meta device: no weights, no download), local
weights through the user map, offline errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from reportkd.vlm.encoders import (
    ENCODERS,
    WEIGHTS_ENV,
    EncoderBundle,
    EncoderWeightsError,
    PatchTransform,
    get_encoder,
    list_encoders,
    load_state_dict_file,
    load_weights_map,
    register_encoder,
)

PATHOLOGY = ("conch_v1", "uni_v1", "uni_v2", "virchow", "virchow2", "gigapath", "phikon", "plip", "quiltnet")


def test_known_pathology_encoders_are_registered_with_descriptions():
    names = list_encoders()
    assert set(PATHOLOGY) | {"resnet50_trunc", "random-tiny-cnn"} <= set(names)
    assert "RANDOM" in names["random-tiny-cnn"] and all(names[n] for n in PATHOLOGY)


@pytest.mark.parametrize(
    "name,dim,params_m",
    [
        ("uni_v1", 1024, 303.4),
        ("uni_v2", 1536, 681.4),
        ("virchow2", 2560, 631.2),
        ("resnet50_trunc", 1024, 8.5),
        ("plip", 512, 87.8),
        ("quiltnet", 512, 87.8),
    ],
)
def test_architectures_match_the_published_models(name, dim, params_m):
    with torch.device("meta"):  # shapes only: nothing allocated, nothing downloaded
        b = ENCODERS.get(name)(random_init=True)
        size = b.transform.output_size
        out = b.model(torch.empty(2, 3, size, size))
    assert b.embedding_dim == dim and tuple(out.shape) == (2, dim) and b.source == "random"
    assert sum(p.numel() for p in b.model.parameters()) / 1e6 == pytest.approx(params_m, abs=0.1)


def test_registry_refuses_duplicates_and_lists_names_for_unknown():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("uni_v1", lambda **kw: None)
    with pytest.raises(KeyError, match=r"Registered: .*uni_v1.*timm:NAME"):
        get_encoder("uni_v3")


def test_random_tiny_cnn_is_deterministic_and_encodes_any_patch_size():
    a, b = get_encoder("random-tiny-cnn"), get_encoder("random-tiny-cnn")
    assert isinstance(a, EncoderBundle) and a.random and a.precision == torch.float32
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    x = torch.stack([a.transform(img)] * 3)
    fa, fb = a.encode(x), b.encode(x)
    assert fa.shape == (3, 64) and fa.dtype == torch.float32 and torch.equal(fa, fb)
    assert not any(p.requires_grad for p in a.model.parameters()) and not a.model.training


def test_patch_transform_resizes_crops_and_normalises():
    t = PatchTransform(256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = t(Image.new("RGB", (300, 200), (255, 0, 127)))
    assert x.shape == (3, 224, 224) and x[0].max() == pytest.approx(1.0) and x[1].min() == pytest.approx(-1.0)
    assert PatchTransform(None)(np.zeros((40, 30, 3), np.uint8)).shape == (3, 40, 30)
    with pytest.raises(ValueError, match="interpolation"):
        PatchTransform(interpolation="cubic")


def test_local_weights_via_file_map_and_alias(tmp_path, monkeypatch):
    src = get_encoder("random-tiny-cnn", seed=1)
    (tmp_path / "w").mkdir()
    save_file(src.model.state_dict(), str(tmp_path / "w" / "tiny.safetensors"))
    direct = get_encoder("random-tiny-cnn", tmp_path / "w" / "tiny.safetensors")
    assert direct.source.startswith("file:") and not direct.random
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(direct.encode(x), src.encode(x))
    wmap = tmp_path / "weights.json"  # relative paths are relative to the map
    wmap.write_text(json.dumps({"random-tiny-cnn": "w/tiny.safetensors", "my_cnn": {"encoder": "random-tiny-cnn",
                                "weights": "w/tiny.safetensors"}}))  # fmt: skip
    monkeypatch.setenv(WEIGHTS_ENV, str(wmap))
    via_env = get_encoder("random-tiny-cnn")
    alias = get_encoder("my_cnn")
    assert via_env.source == direct.source and alias.name == "my_cnn" and torch.equal(alias.encode(x), src.encode(x))
    assert load_weights_map({"a": "b"}) == {"a": "b"}
    with pytest.raises(EncoderWeightsError, match="not found"):
        get_encoder("random-tiny-cnn", tmp_path / "nope.safetensors")


def test_torch_checkpoints_load_tensors_only_and_wrong_checkpoints_are_named(tmp_path):
    model = get_encoder("random-tiny-cnn").model
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ckpt.pth")
    sd = load_state_dict_file(tmp_path / "ckpt.pth")
    assert set(sd) == {f"module.{k}" for k in model.state_dict()}
    assert get_encoder("random-tiny-cnn", tmp_path / "ckpt.pth").source.startswith("file:")  # prefix stripped
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(EncoderWeightsError, match="does not fit the random-tiny-cnn architecture"):
        get_encoder("random-tiny-cnn", tmp_path / "wrong.safetensors")


def test_offline_hub_error_says_how_to_load_weights_locally(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderWeightsError, match=r"uni_v1.*--encoder-weights.*REPORTKD_ENCODER_WEIGHTS"):
        get_encoder("uni_v1")


def test_conch_without_its_package_explains_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "conch", None)  # also when the package happens to be installed
    with pytest.raises(ImportError, match="pip install git\\+https://github.com/Mahmoodlab/CONCH"):
        get_encoder("conch_v1")


def test_timm_scheme_with_random_weights_and_precision():
    b = get_encoder("timm:test_vit", random_init=True, precision="bf16")
    assert b.name == "timm:test_vit" and b.precision == torch.bfloat16
    size = b.transform.output_size
    out = b.encode(torch.stack([b.transform(Image.new("RGB", (size, size)))] * 2))
    assert out.shape == (2, b.embedding_dim) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        get_encoder("random-tiny-cnn", precision="int8")


def test_transformers_model_saved_locally_loads_offline(tmp_path, monkeypatch):
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    cfg = CLIPConfig(text_config={**small, "vocab_size": 99}, vision_config={**small, "patch_size": 32},
                     projection_dim=8)  # fmt: skip
    torch.manual_seed(0)
    clip = CLIPModel(cfg).eval()
    clip.save_pretrained(tmp_path / "plip")  # what a site keeps after downloading vinid/plip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b = get_encoder("plip", tmp_path / "plip")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        want = clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output)
    assert b.embedding_dim == 8 and b.source.startswith("file:")
    torch.testing.assert_close(b.encode(x), want)
