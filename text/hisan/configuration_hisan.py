"""Configuration of the multitask hierarchical self-attention network (HiSAN) report classifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

from ..mtcnn.configuration_mtcnn import MtCNNConfig


class HiSANConfig(PretrainedConfig):
    """Configuration of `HiSANForReportClassification` (Gao et al., 2018/2019; the HiSAN of ORNL's FrESCO).

    A report's word ids are cut into lines of `words_per_line` words; each line is encoded by multi-head word-level
    self-attention and pooled by target attention, then the lines by line-level self-attention and target attention
    into one document embedding of size `attention_heads * attention_dim_per_head`, with one linear head per task.
    The task fields (`task_labels`, `tasks`, `other_label`) mean exactly what they mean in `MtCNNConfig`, so a HiSAN
    drops in wherever an MtCNN does (same tokenizer, label maps, trainers and thresholds).

    Args:
        vocab_size: Number of rows of the embedding matrix (tokenizer vocabulary size).
        embedding_dim: Word embedding size.
        attention_heads: Heads of each multi-head attention.
        attention_dim_per_head: Size of one head; the document embedding has `heads * dim_per_head` values.
        words_per_line: Words per line (chunk) of the word level; FrESCO uses 15.
        dropout: Dropout on embeddings, attention weights and the line and document embeddings.
        max_length: Longest document (tokens) the tokenizer keeps; the model itself accepts any length.
        pad_token_id: Padding id; padded positions never receive attention.
        task_labels: Ordered mapping task -> class names; a class id is the index of its name.
        tasks: Task order (label-column order), filled from `task_labels` when None.
        other_label: Name of the catch-all class that `encode_labels` maps unseen values to (when a task has it).
        embedding_init_std: Standard deviation of the random embedding initialisation.
    """

    model_type = "hisan"

    vocab_size: int = 20000
    embedding_dim: int = 300
    attention_heads: int = 8
    attention_dim_per_head: int = 50
    words_per_line: int = 15
    dropout: float = 0.1
    max_length: int = 1500
    pad_token_id: int = 0
    task_labels: dict[str, list[str]] | None = None
    tasks: list[str] | None = None
    other_label: str | None = "other"
    embedding_init_std: float = 0.05

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if isinstance(self.task_labels, Mapping):
            self.task_labels = {
                str(t): list(v) if not isinstance(v, str) else [v] for t, v in self.task_labels.items()
            }
            self.tasks = list(self.task_labels) if self.tasks is None else list(self.tasks)
            if sorted(self.tasks) != sorted(self.task_labels):
                raise ValueError(
                    f"HiSANConfig.tasks={self.tasks} must list each task of task_labels {list(self.task_labels)} once."
                )
            self.task_labels = {t: self.task_labels[t] for t in self.tasks}
        self._check()

    def _check(self) -> None:
        for name, minimum in (
            ("vocab_size", 2), ("embedding_dim", 1), ("attention_heads", 1), ("attention_dim_per_head", 1),
            ("words_per_line", 1), ("max_length", 1),
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"HiSANConfig.{name} must be an integer >= {minimum}, got {value!r}.")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HiSANConfig.dropout must be in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"HiSANConfig.pad_token_id={self.pad_token_id!r} must index the vocabulary [0, {self.vocab_size})."
            )
        if not self.embedding_init_std > 0:
            raise ValueError(f"HiSANConfig.embedding_init_std must be > 0, got {self.embedding_init_std!r}.")
        if not self.task_labels or not isinstance(self.task_labels, Mapping):
            raise ValueError(
                "HiSANConfig.task_labels is empty: pass an ordered mapping task -> class names, "
                'e.g. {"organ": ["breast", "kidney", "other"], "grade": ["G1", "G2", "G3", "G4"]}.'
            )
        for task, names in self.task_labels.items():
            if not task or "." in task:
                raise ValueError(f"Task name {task!r} is invalid: use a non-empty name without '.'.")
            if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"Task {task!r}: give at least two unique, non-empty class names, got {names!r}.")

    # The task interface is MtCNN's, shared rather than copied: same label maps, same encoding of a report's labels.
    task_names = MtCNNConfig.task_names
    num_labels = MtCNNConfig.num_labels
    task_label2id = MtCNNConfig.task_label2id
    encode_labels = MtCNNConfig.encode_labels

    @property
    def hidden_size(self) -> int:
        """Size of the document embedding (`attention_heads * attention_dim_per_head`)."""
        return self.attention_heads * self.attention_dim_per_head

    @property
    def num_outputs(self) -> dict[str, int]:
        """Width of each task head (its classes; HiSAN has no abstain output)."""
        return dict(self.num_labels)


__all__ = ["HiSANConfig"]
