"""Multitask CNN (MtCNN) report classifier, its vectorized teacher ensemble and a word-level tokenizer.

Importing this package registers `mtcnn` and `mtcnn_ensemble` with `AutoConfig` / `AutoModel` and the
`report-classification` pipeline with transformers' pipeline registry (idempotent).
"""

from transformers import AutoConfig, AutoModel

from .configuration_mtcnn import MtCNNConfig, MtCNNEnsembleConfig
from .dac import DACConfig, DACTrainer, dac_alphas, dac_decisions
from .ensemble import MtCNNEnsembleForReportClassification, MtCNNEnsembleOutput
from .hf_pipeline import ReportClassificationPipeline, register_pipeline
from .model_kind import register_kinds
from .modeling_mtcnn import MtCNNForReportClassification, MtCNNOutput
from .tokenization import train_word_tokenizer
from .trainer import MtCNNDistillationConfig, MtCNNDistillationTrainer, MultitaskTrainingConfig, parse_task_weights

AutoConfig.register("mtcnn", MtCNNConfig, exist_ok=True)
AutoConfig.register("mtcnn_ensemble", MtCNNEnsembleConfig, exist_ok=True)
AutoModel.register(MtCNNConfig, MtCNNForReportClassification, exist_ok=True)
AutoModel.register(MtCNNEnsembleConfig, MtCNNEnsembleForReportClassification, exist_ok=True)
register_kinds()  # the mtcnn model kind of reportkd.hub (cards, push)
register_pipeline()  # pipeline("report-classification", model=DIR)

__all__ = [
    "DACConfig",
    "DACTrainer",
    "dac_alphas",
    "dac_decisions",
    "MtCNNConfig",
    "MtCNNDistillationConfig",
    "MtCNNDistillationTrainer",
    "MtCNNEnsembleConfig",
    "MtCNNEnsembleForReportClassification",
    "MtCNNEnsembleOutput",
    "MtCNNForReportClassification",
    "MtCNNOutput",
    "MultitaskTrainingConfig",
    "parse_task_weights",
    "ReportClassificationPipeline",
    "train_word_tokenizer",
]
