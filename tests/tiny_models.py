"""Tiny hand-written models for trainer tests (no hub, no MtCNN needed)."""

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class TinyMultitaskConfig(PretrainedConfig):
    model_type = "reportkd-tiny-multitask"

    def __init__(self, vocab_size=50, hidden=8, task_labels=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden = hidden
        self.task_labels = task_labels or {"organ": ["a", "b", "other"], "grade": ["g1", "g2", "g3", "other"]}


class TinyMultitaskModel(PreTrainedModel):
    config_class = TinyMultitaskConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = nn.EmbeddingBag(config.vocab_size, config.hidden, mode="mean")
        self.heads = nn.ModuleDict({t: nn.Linear(config.hidden, len(v)) for t, v in config.task_labels.items()})
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        h = self.emb(input_ids)
        logits = {t: head(h) for t, head in self.heads.items()}
        loss = None
        if labels is not None:
            losses = [
                nn.functional.cross_entropy(logits[t], labels[:, i], ignore_index=-100) for i, t in enumerate(logits)
            ]
            loss = torch.stack([torch.nan_to_num(x) for x in losses]).mean()
        return ModelOutput(loss=loss, logits=logits)


try:
    AutoConfig.register(TinyMultitaskConfig.model_type, TinyMultitaskConfig)
    AutoModel.register(TinyMultitaskConfig, TinyMultitaskModel)
except ValueError:
    pass


def tiny_dataset(n=16, seed=0, vocab=50, missing=True, teacher=None):
    """Rows of input_ids (length 6), labels (2 tasks) and optionally stored teacher probabilities."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, 6), generator=g)
    labels = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)], 1)
    if missing:
        labels[::3, 1] = -100
    data = {"input_ids": ids.tolist(), "labels": labels.tolist()}
    if teacher is not None:
        with torch.no_grad():
            out = teacher(input_ids=ids).logits
        data["teacher_probs"] = [{t: out[t][i].softmax(-1).tolist() for t in out} for i in range(n)]
    return Dataset.from_dict(data)
