"""Multitask hierarchical self-attention network (HiSAN) report classifier, a drop-in alternative to MtCNN.

Importing this package registers `hisan` with `AutoConfig` / `AutoModel` (idempotent). It uses MtCNN's word
tokenizer, label maps, trainers (:class:`reportkd.text.mtcnn.MtCNNDistillationTrainer`) and thresholds.
"""

from transformers import AutoConfig, AutoModel

from .configuration_hisan import HiSANConfig
from .modeling_hisan import HiSANForReportClassification

AutoConfig.register("hisan", HiSANConfig, exist_ok=True)
AutoModel.register(HiSANConfig, HiSANForReportClassification, exist_ok=True)

__all__ = ["HiSANConfig", "HiSANForReportClassification"]
