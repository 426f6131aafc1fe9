"""Text distillation methods: multitask report classifiers (MtCNN) and report-generating language models."""
