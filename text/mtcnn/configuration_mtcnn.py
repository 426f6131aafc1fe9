"""Configuration of the multitask CNN (MtCNN) report classifier and of its teacher ensemble."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

CONV_IMPLS = ("fused", "conv1d")


class MtCNNConfig(PretrainedConfig):
    """Configuration of `MtCNNForReportClassification` and `MtCNNEnsembleForReportClassification`.

    The architecture follows ORNL's FrESCO MtCNN: word embeddings, parallel 1-D convolutions (one per kernel size,
    `num_filters` filters each), masked global max-pool over time, ReLU, dropout, one linear head per task.

    Args:
        vocab_size: Number of rows of the embedding matrix (tokenizer vocabulary size).
        embedding_dim: Word embedding size.
        num_filters: Filters per kernel size.
        kernel_sizes: Convolution window sizes (tokens).
        dropout: Dropout on the pooled document embedding.
        max_length: Longest document (tokens) the tokenizer keeps; the model itself accepts any length.
        pad_token_id: Padding id; its embedding row is kept at zero and padded positions never reach the max-pool.
        task_labels: Ordered mapping task -> class names; a class id is the index of its name.
        tasks: Task order (label-column order). Filled from `task_labels` when None; stored because
            `save_pretrained` writes JSON with sorted keys, which would otherwise reorder the tasks.
        other_label: Name of the catch-all class that `encode_labels` maps unseen values to (when a task has it).
        num_members: Number of members of the teacher ensemble (1 for a single model).
        share_embeddings: Ensemble only: one embedding matrix shared by all members (default: one each).
        conv_impl: "fused" (unfold + GEMM forward, argmax-gather backward; fast) or "conv1d" (reference
            `torch.nn.functional.conv1d` path, mathematically identical, used for checks and benchmarks).
        member_chunk_size: Ensemble only: members processed together by the fused kernel; None picks from a
            memory budget (all members on GPU, cache-sized chunks on CPU).
        embedding_init_std: Standard deviation of the random embedding initialisation.
        abstain_class: Deep Abstaining Classifier (FrESCO's DAC): every task head gets one extra output, the
            "abstain" class, trained with :func:`reportkd.losses.deep_abstaining_loss` (see
            :class:`reportkd.text.mtcnn.DACTrainer`). Label maps are unchanged; probabilities returned by
            ``predict_proba`` are over the real classes (renormalised), the abstain probability is separate.
        dac_alpha: Initial abstention penalty of every task (DAC only; tuned during training by ``DACTrainer``
            and stored with the weights as the ``dac_alpha`` buffer).
    """

    model_type = "mtcnn"

    vocab_size: int = 20000
    embedding_dim: int = 300
    num_filters: int = 300
    kernel_sizes: list[int] | tuple[int, ...] = (3, 4, 5)
    dropout: float = 0.5
    max_length: int = 1500
    pad_token_id: int = 0
    task_labels: dict[str, list[str]] | None = None
    tasks: list[str] | None = None
    other_label: str | None = "other"
    num_members: int = 1
    share_embeddings: bool = False
    conv_impl: str = "fused"
    member_chunk_size: int | None = None
    embedding_init_std: float = 0.05
    abstain_class: bool = False
    dac_alpha: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.kernel_sizes = list(self.kernel_sizes) if self.kernel_sizes is not None else []
        if isinstance(self.task_labels, Mapping):
            self.task_labels = {
                str(t): list(v) if not isinstance(v, str) else [v] for t, v in self.task_labels.items()
            }
            if self.tasks is None:
                self.tasks = list(self.task_labels)
            self.tasks = list(self.tasks)
            if sorted(self.tasks) != sorted(self.task_labels):
                raise ValueError(
                    f"MtCNNConfig.tasks={self.tasks} must list each task of task_labels {list(self.task_labels)} once."
                )
            self.task_labels = {t: self.task_labels[t] for t in self.tasks}
        self._check()

    def _check(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"MtCNNConfig.{name} must be an integer >= {minimum}, got {value!r}.")

        for name, minimum in (("vocab_size", 2), ("embedding_dim", 1), ("num_filters", 1), ("max_length", 1)):
            positive_int(name, minimum)
        positive_int("num_members")
        if self.member_chunk_size is not None:
            positive_int("member_chunk_size")
        if not self.kernel_sizes:
            raise ValueError("MtCNNConfig.kernel_sizes is empty: give at least one window size, e.g. (3, 4, 5).")
        for k in self.kernel_sizes:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"MtCNNConfig.kernel_sizes must hold integers >= 1, got {self.kernel_sizes!r}.")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MtCNNConfig.dropout must be in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"MtCNNConfig.pad_token_id={self.pad_token_id!r} must index the vocabulary [0, {self.vocab_size})."
            )
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"MtCNNConfig.conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}.")
        if not isinstance(self.dac_alpha, (int, float)) or self.dac_alpha < 0:
            raise ValueError(f"MtCNNConfig.dac_alpha must be a number >= 0, got {self.dac_alpha!r}.")
        if self.abstain_class and self.num_members > 1:
            raise ValueError("abstain_class (DAC) is for single models; train the teacher ensemble without it.")
        if not self.embedding_init_std > 0:
            raise ValueError(f"MtCNNConfig.embedding_init_std must be > 0, got {self.embedding_init_std!r}.")
        if not self.task_labels:
            raise ValueError(
                "MtCNNConfig.task_labels is empty: pass an ordered mapping task -> class names, "
                'e.g. {"organ": ["breast", "kidney", "other"], "grade": ["G1", "G2", "G3", "G4"]}.'
            )
        if not isinstance(self.task_labels, Mapping):
            raise ValueError(f"MtCNNConfig.task_labels must be a dict task -> class names, got {self.task_labels!r}.")
        for task, names in self.task_labels.items():
            if not task or "." in task:
                raise ValueError(f"Task name {task!r} is invalid: use a non-empty name without '.'.")
            if len(names) < 2:
                raise ValueError(f"Task {task!r} has {len(names)} class(es) {names!r}; a task needs at least two.")
            if not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"Task {task!r}: class names must be non-empty strings, got {names!r}.")
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(
                    f"Task {task!r} lists class name(s) {duplicates} more than once; names must be unique."
                )
        if self.other_label is not None and not isinstance(self.other_label, str):
            raise ValueError(f"MtCNNConfig.other_label must be a string or None, got {self.other_label!r}.")

    @property
    def task_names(self) -> list[str]:
        """Task names in label-column order."""
        return list(self.tasks or [])

    @property
    def num_labels(self) -> dict[str, int]:  # type: ignore[override]
        """Number of classes of each task (a dict, unlike the single-task `PretrainedConfig.num_labels`)."""
        return {task: len(self.task_labels[task]) for task in self.task_names}

    @property
    def num_outputs(self) -> dict[str, int]:
        """Width of each task head: its classes, plus one abstain output when ``abstain_class``."""
        return {task: n + int(bool(self.abstain_class)) for task, n in self.num_labels.items()}

    @num_labels.setter
    def num_labels(self, value: Any) -> None:
        # `PretrainedConfig` assigns a single-task label count here; the per-task counts come from `task_labels`.
        return None

    @property
    def hidden_size(self) -> int:
        """Size of the pooled document embedding (`num_filters * len(kernel_sizes)`)."""
        return self.num_filters * len(self.kernel_sizes)

    def task_label2id(self, task: str) -> dict[str, int]:
        """Class name -> id of one task.

        Args:
            task: Task name.
        """
        if task not in self.task_labels:
            raise KeyError(f"Unknown task {task!r}; the config's tasks are {self.task_names}.")
        return {name: i for i, name in enumerate(self.task_labels[task])}

    def encode_labels(self, example: Mapping[str, Any], missing: tuple[Any, ...] = (None, "")) -> list[int]:
        """Label ids of one example, in task order; -100 marks a missing label.

        Values absent from a task's classes map to `other_label` when the task has that class, else raise.

        Args:
            example: Mapping task -> class name (extra keys are ignored).
            missing: Values that mean "no label" (-100).
        """
        ids = []
        for task in self.task_names:
            names, value = self.task_labels[task], example.get(task)
            if value in missing:
                ids.append(-100)
            elif value in names:
                ids.append(names.index(value))
            elif self.other_label is not None and self.other_label in names:
                ids.append(names.index(self.other_label))
            else:
                raise ValueError(
                    f"Task {task!r}: label {value!r} is not one of {names} and the task has no "
                    f"{self.other_label!r} class; add the class or map the value before encoding."
                )
        return ids


class MtCNNEnsembleConfig(MtCNNConfig):
    """Configuration of `MtCNNEnsembleForReportClassification`: an `MtCNNConfig` with its own `model_type`, so that
    `AutoModel.from_pretrained` restores an ensemble as an ensemble. `num_members` is the ensemble size."""

    model_type = "mtcnn_ensemble"
    _auto_class = None  # ensembles load through reportkd only: their folders ship no code

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None):  # copied from a single model's config: it would load the wrong class
            del self.auto_map


# save_pretrained copies this file into the folder and records it in auto_map (plain-transformers loading).
MtCNNConfig.register_for_auto_class()


__all__ = ["MtCNNConfig", "MtCNNEnsembleConfig"]
