"""Text distillation methods: multitask report classifiers (MtCNN) and report-generating language models."""

from . import hisan, mtcnn  # noqa: F401  (register MtCNN and HiSAN with AutoConfig / AutoModel)
