"""ONNX export of an MtCNN student and an onnxruntime classifier with the same ``predict_proba`` contract.

    reportkd export --model reportkd-demo/student --format onnx          # writes reportkd-demo/student/model.onnx
    reportkd predict --model reportkd-demo/student --backend onnx --data reports.jsonl --out predictions.jsonl

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and length) and returns one softmax
probability tensor per task (output names = task names, in the config's order; a DAC model's real classes,
renormalised). It is exported with ``torch.export`` (``torch.onnx.export(dynamo=True)``): under export the model skips
its data-dependent length trimming and runs the ``conv1d`` path, which gives the same probabilities. The file records
the task label maps and the safetensors fingerprint of the weights it was exported from (``metadata_props``), so a
stale export is refused next to retrained weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ONNX_NAME = "model.onnx"
OPSET = 18
METADATA_LABELS = "reportkd.task_labels"
METADATA_WEIGHTS = "reportkd.model_sha256"


class _ProbabilityGraph(nn.Module):
    """The exported function: token ids and mask → per-task softmax probabilities (a tuple in task order)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(model.config.task_names)
        self.cut = -1 if getattr(model.config, "abstain_class", False) else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return tuple(torch.softmax(logits[t][..., : self.cut].float(), -1) for t in self.tasks)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, model_sha256: str | None = None) -> Path:
    """Exports a single MtCNN (eval mode, float32) to ONNX with dynamic batch and length; writes atomically.

    Args:
        model: An ``MtCNNForReportClassification`` (an ensemble is refused: export its distilled student).
        path: Output ``.onnx`` file.
        model_sha256: Fingerprint of the weights (:func:`reportkd.abstention.weights_fingerprint`), recorded in the
            file so that predict can refuse an export of other weights.
    """
    import onnx

    from reportkd.utils import atomic_path

    if getattr(model.config, "num_members", 1) > 1:
        raise ValueError("ONNX export takes a single MtCNN; export the distilled student, not the teacher ensemble.")
    graph = _ProbabilityGraph(model.float().eval()).eval()
    length = max(model.config.kernel_sizes) + 5
    example = (torch.ones(2, length, dtype=torch.long), torch.ones(2, length, dtype=torch.long))
    batch, tokens = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=1)
    shapes = {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter (axis renaming, progress lines)
        program = torch.onnx.export(
            graph, example, input_names=["input_ids", "attention_mask"], output_names=graph.tasks,
            dynamic_shapes=shapes, dynamo=True, opset_version=OPSET, verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    meta = {METADATA_LABELS: json.dumps(model.config.task_labels), METADATA_WEIGHTS: model_sha256 or ""}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


class OnnxClassifier:
    """An exported MtCNN run by onnxruntime on CPU.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (None: onnxruntime's default, all cores).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(
                "The onnx backend needs onnxruntime: pip install 'reportkd[export]' (or pip install onnxruntime)."
            ) from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.task_labels: dict[str, list[str]] = json.loads(meta.get(METADATA_LABELS, "{}"))
        self.model_sha256: str | None = meta.get(METADATA_WEIGHTS) or None
        self.tasks = [o.name for o in self.session.get_outputs()]

    def check(self, task_labels: dict[str, list[str]], model_sha256: str | None) -> None:
        """Refuses an export of another model: other label maps, or weights other than the folder's.

        Args:
            task_labels: The model folder's label maps.
            model_sha256: The model folder's weights fingerprint.
        """
        if self.task_labels != task_labels:
            raise ValueError(
                f"{self.path} was exported from a model with other tasks or label maps; re-export it: "
                "reportkd export --model DIR --format onnx --overwrite."
            )
        if model_sha256 and self.model_sha256 and model_sha256 != self.model_sha256:
            raise ValueError(
                f"{self.path} was exported from other weights ({self.model_sha256}) than the folder's "
                f"({model_sha256}); re-export it: reportkd export --model DIR --format onnx --overwrite."
            )

    def predict_proba(self, input_ids: Any, attention_mask: Any | None = None) -> dict[str, np.ndarray]:
        """Task → ``(B, C_t)`` probabilities.

        Args:
            input_ids: ``(B, L)`` token ids (numpy or torch).
            attention_mask: Optional ``(B, L)`` mask (default: every position).
        """
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        outputs = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return dict(zip(self.tasks, outputs))


__all__ = ["ONNX_NAME", "OnnxClassifier", "export_onnx"]
