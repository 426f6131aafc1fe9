"""reportkd: knowledge distillation for pathology reports and pathology vision-language models."""

__version__ = "0.1.0"
