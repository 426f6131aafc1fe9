"""Registered patch encoders: the known pathology foundation models (architecture declared here, so weights held
locally load offline) and ``random-tiny-cnn``, a small random CNN for tests and demos (no download).

| name | architecture | dim | weights |
|---|---|---|---|
| ``conch_v1`` | CoCa ViT-B/16, 448 px (needs the ``conch`` package) | 512 | MahmoodLab/CONCH (gated) |
| ``conch_v15`` | timm ViT-L/16, 448 px, attentional pooler (TITAN's) | 768 | MahmoodLab/conchv1_5 (gated) |
| ``uni_v1`` | timm ViT-L/16, LayerScale 1e-5 | 1024 | MahmoodLab/UNI (gated) |
| ``uni_v2`` | timm ViT-H/14 (UNI2-h), SwiGLU, 8 register tokens | 1536 | MahmoodLab/UNI2-h (gated) |
| ``virchow`` | timm ViT-H/14, SwiGLU; CLS ⊕ mean patch token | 2560 | paige-ai/Virchow (gated) |
| ``virchow2`` | as Virchow with 4 register tokens | 2560 | paige-ai/Virchow2 (gated) |
| ``gigapath`` | timm ViT-g/16 (DINOv2 layout, 40 blocks) | 1536 | prov-gigapath/prov-gigapath (gated) |
| ``phikon`` | transformers ViT-B/16, CLS token | 768 | owkin/phikon |
| ``quiltnet`` | open_clip ViT-B/32 image tower | 512 | wisdomik/QuiltNet-B-32 |
| ``plip`` | transformers CLIP ViT-B/32 image tower + projection | 512 | vinid/plip |
| ``resnet50_trunc`` | timm ResNet-50 up to layer3, average-pooled | 1024 | timm/resnet50.tv_in1k |
| ``random-tiny-cnn`` | 3 conv layers, **random weights** | 64 | none (seeded) |

Each entry downloads from the hub when online, or loads ``weights=PATH`` / the user weights map offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .builders import build_hf, build_open_clip, build_timm, from_hub, load_state_dict_file, load_weights_into
from .registry import EncoderBundle, EncoderWeightsError, register_encoder
from .transforms import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchTransform

IMAGENET_224 = PatchTransform(224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")
IMAGENET_224_BICUBIC = PatchTransform(224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
CLIP_224 = PatchTransform(224, crop=224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, interpolation="bicubic")


def _swiglu_vit_h(reg_tokens: int) -> dict:
    import timm

    return {
        "img_size": 224,
        "init_values": 1e-5,
        "num_classes": 0,
        "mlp_ratio": 5.3375,
        "global_pool": "",
        "dynamic_img_size": True,
        "mlp_layer": timm.layers.SwiGLUPacked,
        "act_layer": nn.SiLU,
        **({"reg_tokens": reg_tokens} if reg_tokens else {}),
    }


@register_encoder("uni_v1")
def uni_v1(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """UNI (Mahmood Lab): ViT-L/16 DINOv2 on 100k slides; 1024-d."""
    kwargs = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True}
    return build_timm(
        "uni_v1", arch="vit_large_patch16_224", hub_id="hf-hub:MahmoodLab/uni", timm_kwargs=kwargs,
        embedding_dim=1024, transform=IMAGENET_224, precision=torch.float16,
        url="https://huggingface.co/MahmoodLab/UNI", weights=weights, random_init=random_init,
    )  # fmt: skip


@register_encoder("uni_v2")
def uni_v2(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """UNI2-h (Mahmood Lab): ViT-H/14 SwiGLU with 8 register tokens; 1536-d."""
    import timm

    kwargs = {
        "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True, "mlp_layer": timm.layers.SwiGLUPacked,
        "act_layer": nn.SiLU, "reg_tokens": 8, "dynamic_img_size": True,
    }  # fmt: skip
    return build_timm(
        "uni_v2", arch="vit_giant_patch14_224", hub_id="hf-hub:MahmoodLab/UNI2-h", timm_kwargs=kwargs,
        embedding_dim=1536, transform=IMAGENET_224, precision=torch.bfloat16,
        url="https://huggingface.co/MahmoodLab/UNI2-h", weights=weights, random_init=random_init,
    )  # fmt: skip


@register_encoder("virchow")
def virchow(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """Virchow (Paige): ViT-H/14 SwiGLU; CLS ⊕ mean patch token, 2560-d."""
    return build_timm(
        "virchow", arch="vit_huge_patch14_224", hub_id="hf-hub:paige-ai/Virchow", timm_kwargs=_swiglu_vit_h(0),
        embedding_dim=2560, transform=IMAGENET_224_BICUBIC, precision=torch.float16, pool="cls_mean",
        url="https://huggingface.co/paige-ai/Virchow", weights=weights, random_init=random_init,
    )  # fmt: skip


@register_encoder("virchow2")
def virchow2(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """Virchow 2 (Paige): ViT-H/14 SwiGLU with 4 register tokens; CLS ⊕ mean patch token, 2560-d."""
    return build_timm(
        "virchow2", arch="vit_huge_patch14_224", hub_id="hf-hub:paige-ai/Virchow2", timm_kwargs=_swiglu_vit_h(4),
        embedding_dim=2560, transform=IMAGENET_224_BICUBIC, precision=torch.float16, pool="cls_mean",
        url="https://huggingface.co/paige-ai/Virchow2", weights=weights, random_init=random_init,
    )  # fmt: skip


@register_encoder("gigapath")
def gigapath(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """Prov-GigaPath tile encoder: ViT-g/16 (DINOv2 layout, 40 blocks); 1536-d."""
    kwargs = {
        "img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
        "mlp_ratio": 5.33334, "num_classes": 0, "dynamic_img_size": True,
    }  # fmt: skip
    transform = PatchTransform(256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
    return build_timm(
        "gigapath", arch="vit_giant_patch14_dinov2", hub_id="hf_hub:prov-gigapath/prov-gigapath", timm_kwargs=kwargs,
        embedding_dim=1536, transform=transform, precision=torch.float16,
        url="https://huggingface.co/prov-gigapath/prov-gigapath", weights=weights, random_init=random_init,
    )  # fmt: skip


@register_encoder("resnet50_trunc")
def resnet50_trunc(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """ResNet-50 (ImageNet) truncated after layer3, average-pooled; 1024-d (the classic CLAM baseline)."""
    bundle = build_timm(
        "resnet50_trunc", arch="resnet50", hub_id="resnet50.tv_in1k", timm_kwargs={"num_classes": 0},
        embedding_dim=1024, transform=IMAGENET_224, url="https://huggingface.co/timm/resnet50.tv_in1k",
        weights=weights, random_init=random_init, ignore_keys=("fc.",),
    )  # fmt: skip
    m = bundle.model
    trunk = nn.Sequential(
        m.conv1, m.bn1, m.act1, m.maxpool, m.layer1, m.layer2, m.layer3, nn.AdaptiveAvgPool2d(1), nn.Flatten(1)
    )
    bundle.model, bundle.channels_last = trunk, True
    return bundle


@register_encoder("phikon")
def phikon(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """Phikon (Owkin): ViT-B/16 iBOT on TCGA; CLS token, 768-d."""
    from transformers import ViTConfig

    return build_hf(
        "phikon", model_cls="ViTModel", hub_id="owkin/phikon", config=ViTConfig(), pool="cls", embedding_dim=768,
        transform=IMAGENET_224, url="https://huggingface.co/owkin/phikon", weights=weights, random_init=random_init,
        model_kwargs={"add_pooling_layer": False}, ignore_keys=("pooler.",),
    )  # fmt: skip


@register_encoder("plip")
def plip(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """PLIP: CLIP ViT-B/32 fine-tuned on pathology tweets; projected image embedding, 512-d."""
    from transformers import AutoConfig, CLIPVisionConfig

    config = CLIPVisionConfig(patch_size=32, image_size=224, projection_dim=512)
    kwargs = {}
    if weights is not None and weights.is_dir():  # a saved CLIPModel: its projection width is in the outer config
        saved = AutoConfig.from_pretrained(str(weights), local_files_only=True)
        if hasattr(saved, "vision_config"):
            kwargs["config"] = CLIPVisionConfig(
                **{**saved.vision_config.to_dict(), "projection_dim": saved.projection_dim}
            )
    return build_hf(
        "plip", model_cls="CLIPVisionModelWithProjection", hub_id="vinid/plip", config=config, pool="image_embeds",
        embedding_dim=512, transform=CLIP_224, url="https://huggingface.co/vinid/plip", weights=weights,
        random_init=random_init, ignore_keys=("text_model.", "text_projection.", "logit_scale"), model_kwargs=kwargs,
    )  # fmt: skip


@register_encoder("quiltnet")
def quiltnet(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """QuiltNet-B-32: open_clip ViT-B/32 trained on Quilt-1M; projected image embedding, 512-d."""
    return build_open_clip(
        "quiltnet", arch="ViT-B-32", hub_id="hf-hub:wisdomik/QuiltNet-B-32", embedding_dim=512,
        url="https://huggingface.co/wisdomik/QuiltNet-B-32", weights=weights, random_init=random_init,
    )  # fmt: skip


class _ConchImage(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, proj_contrast=False, normalize=False)


@register_encoder("conch_v1")
def conch_v1(*, weights: Path | None = None, random_init: bool = False) -> EncoderBundle:
    """CONCH (Mahmood Lab): CoCa ViT-B/16 at 448 px, image embedding before projection, 512-d; needs `conch`."""
    url = "https://huggingface.co/MahmoodLab/CONCH"
    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError:
        raise ImportError(
            "conch_v1 uses CONCH's own architecture (CoCa ViT-B/16 with attentional pooling, 448 px), which lives in "
            "the CONCH package: pip install git+https://github.com/Mahmoodlab/CONCH.git. Then pass its checkpoint "
            f"(pytorch_model.bin from {url}) with --encoder-weights or the weights map."
        ) from None
    if random_init:
        raise EncoderWeightsError("conch_v1 has no random-init mode; use random-tiny-cnn or resnet50_trunc for demos.")
    if weights is None:
        model, transform = from_hub(
            "conch_v1", "hf_hub:MahmoodLab/conch", url,
            lambda: create_model_from_pretrained("conch_ViT-B-16", checkpoint_path="hf_hub:MahmoodLab/conch"),
        )  # fmt: skip
        source = "hub:MahmoodLab/conch"
    else:
        model, transform = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=str(weights))
        source = f"file:{weights}"
    return EncoderBundle("conch_v1", _ConchImage(model), transform, 512, torch.float32, source, info={"url": url})


class TinyPatchCNN(nn.Module):
    """Three strided conv layers and average pooling: a fast stand-in encoder (random, seeded weights)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, dim, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_encoder("random-tiny-cnn")
def random_tiny_cnn(
    *, weights: Path | None = None, random_init: bool = True, dim: int = 64, seed: int = 0
) -> EncoderBundle:
    """RANDOM weights, 3-layer CNN, 64-d, any patch size: tests and demos only (features carry no meaning)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyPatchCNN(dim)
    source = "random"
    if weights is not None:
        load_weights_into(model, load_state_dict_file(weights), name="random-tiny-cnn", path=weights)
        source = f"file:{weights}"
    transform = PatchTransform(None, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return EncoderBundle("random-tiny-cnn", model, transform, dim, torch.float32, source, info={"seed": seed})
