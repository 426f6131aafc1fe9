"""Text distillation methods: multitask report classifiers (MtCNN) and report-generating language models."""

from . import mtcnn  # noqa: E402,F401  (registers MtCNN with AutoConfig / AutoModel)
