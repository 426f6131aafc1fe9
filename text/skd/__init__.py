"""Speculative knowledge distillation (Xu et al., ICLR 2025) for causal language models, with its baselines.

``SKDTrainer`` trains a student on completions of one of six sources (``SKDConfig.mode``): ``sft``,
``supervised_kd``, ``on_policy`` (GKD), ``seq_kd``, ``skd`` and ``mixed``. :func:`interleaved_sample` is the
batched, KV-cached, block-verified sampler behind the sampled modes.
"""

from .config import MODES, SKDConfig
from .data import PromptCompletionCollator, position_ids
from .model_kind import register_kinds
from .sampling import SampleOutput, draw_noise, in_filtered_top_k, in_top_k, interleaved_sample, sample_tokens
from .sharding import is_sharded, shard_frozen_model
from .trainer import SKDTrainer, shared_vocabulary_size

register_kinds()  # the causal_lm model kind of reportkd.hub (cards, push)

__all__ = [
    "MODES",
    "PromptCompletionCollator",
    "SKDConfig",
    "SKDTrainer",
    "SampleOutput",
    "draw_noise",
    "in_filtered_top_k",
    "in_top_k",
    "interleaved_sample",
    "is_sharded",
    "position_ids",
    "sample_tokens",
    "shard_frozen_model",
    "shared_vocabulary_size",
]
