"""Patch encoders for whole-slide feature extraction: a registry of factories returning an :class:`EncoderBundle`.

See :mod:`.registry` for name resolution and the offline weights map, :mod:`.pathology` for the built-in entries.
"""

from . import builders, conch_v15, pathology  # noqa: F401  (register the built-in schemes and encoders)
from .builders import load_state_dict_file
from .registry import (
    ENCODER_SCHEMES,
    ENCODERS,
    PRECISIONS,
    WEIGHTS_ENV,
    EncoderBundle,
    EncoderWeightsError,
    get_encoder,
    list_encoders,
    load_weights_map,
    register_encoder,
    register_encoder_scheme,
)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchTransform

__all__ = [
    "ENCODERS",
    "ENCODER_SCHEMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PRECISIONS",
    "WEIGHTS_ENV",
    "EncoderBundle",
    "EncoderWeightsError",
    "PatchTransform",
    "get_encoder",
    "list_encoders",
    "load_state_dict_file",
    "load_weights_map",
    "register_encoder",
    "register_encoder_scheme",
]
