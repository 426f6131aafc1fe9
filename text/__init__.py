"""Text distillation methods: multitask report classifiers (MtCNN) and report-generating language models."""

from . import mtcnn  # noqa: F401  (registers MtCNN with AutoConfig / AutoModel)
