"""``pipeline("report-classification", model=DIR)``: label a report per task or abstain, with the folder's thresholds.

Registered with transformers' pipeline registry when :mod:`reportkd.text.mtcnn` is imported::

    import reportkd.text  # registers the MtCNN models and this pipeline
    from transformers import pipeline

    coder = pipeline("report-classification", model="reportkd-demo/student")
    coder("Left kidney, nephrectomy: clear cell renal cell carcinoma, ISUP grade 2.")
    # {"auto_coded": False, "tasks": {"organ": {"label": "kidney", "prediction": "kidney", "probability": 0.998,
    #                                           "top_k": [{"label": "kidney", "score": 0.998}, ...]}, ...}}

One dict per report, in the format of ``reportkd predict``'s lines: per task the class or ``"abstain"`` (below the
calibrated threshold: send the report to a human), the most probable class, its probability and the ``top_k``
classes. Thresholds (and calibration temperatures) come from ``MODEL_DIR/thresholds.json`` (checked against the
model's label maps and weights, as the CLI does), or ``thresholds=FILE``; without any, every prediction is accepted
and a warning says so. Reports with empty text abstain on every task (``"skipped": "empty text"``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

logger = logging.getLogger(__name__)

TASK = "report-classification"
ABSTAIN = "abstain"


class ReportClassificationPipeline(Pipeline):
    """Per-task labels or ``"abstain"`` for pathology reports, from a multitask classifier and its thresholds.

    Args:
        thresholds: A thresholds file; ``"auto"`` (default) = ``thresholds.json`` of the model folder when present;
            None = accept every prediction.
        allow_other_weights: Accept thresholds calibrated for other (or unknown) weights with the same label maps.
        top_k: Default number of candidates listed per task (a call can override it).
        **kwargs: The usual :class:`~transformers.Pipeline` arguments (model, tokenizer, device, batch_size, …).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(
        self, *args: Any, thresholds: str | Path | None = "auto", allow_other_weights: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        task_labels = getattr(self.model.config, "task_labels", None)
        if not task_labels:
            raise ValueError(
                f"{type(self.model).__name__} has no task_labels in its config; the report-classification pipeline "
                "needs a multitask report classifier (e.g. a reportkd MtCNN)."
            )
        self.task_labels = {t: list(v) for t, v in task_labels.items()}
        self.thresholds = self._read_thresholds(thresholds, allow_other_weights)

    def _read_thresholds(self, thresholds: str | Path | None, allow_other_weights: bool):
        from reportkd.abstention import THRESHOLDS_NAME, read_thresholds, weights_fingerprint

        folder = Path(getattr(self.model, "name_or_path", "") or "")
        path = folder / THRESHOLDS_NAME if thresholds == "auto" else thresholds
        if path is None or (thresholds == "auto" and not Path(path).is_file()):
            logger.warning("No thresholds for %s: every prediction is accepted (pass thresholds=FILE).", folder)
            return None
        sha = weights_fingerprint(folder) if folder.is_dir() else None
        return read_thresholds(
            path, task_labels=self.task_labels, model_sha256=sha, allow_other_weights=allow_other_weights
        )

    def _sanitize_parameters(self, top_k: int | None = None, **kwargs: Any):
        postprocess = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
            postprocess["top_k"] = top_k
        return {}, {}, postprocess

    def preprocess(self, inputs: str) -> dict[str, Any]:
        if not isinstance(inputs, str):
            raise ValueError(f"report-classification takes report texts (str), got {type(inputs).__name__}.")
        max_length = getattr(self.model.config, "max_length", None)
        enc = self.tokenizer(inputs, truncation=max_length is not None, max_length=max_length, return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        enc["empty"] = torch.tensor([not inputs.split()])
        return enc

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        empty = model_inputs.pop("empty")
        out = self.model(**model_inputs)
        cut = -1 if getattr(self.model.config, "abstain_class", False) else None
        # flat keys of tensors: the pipeline's batch iterator splits each one back into reports
        return {
            "empty": empty,
            **{f"probs/{t}": torch.softmax(v[..., :cut].float(), -1) for t, v in out.logits.items()},
        }

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = 3) -> dict[str, Any]:
        from reportkd.abstention import apply_temperature, apply_thresholds

        if bool(model_outputs["empty"].reshape(-1)[0]):
            tasks = {
                t: {"label": ABSTAIN, "prediction": None, "probability": None, "top_k": []} for t in self.task_labels
            }
            return {"auto_coded": False, "skipped": "empty text", "tasks": tasks}
        probs = {t: model_outputs[f"probs/{t}"].reshape(1, -1).double().numpy() for t in self.task_labels}
        th = self.thresholds
        if th is not None and th.temperatures:
            probs = {t: apply_temperature(p, th.temperatures.get(t, 1.0)) for t, p in probs.items()}
        if th is None:
            accepted = {t: np.ones(1, dtype=bool) for t in probs}
        else:
            accepted = apply_thresholds(probs, th.thresholds, th.mode)
        tasks = {}
        for t, p in probs.items():
            p = p[0]
            order = np.argsort(-p, kind="stable")[:top_k]
            names = self.task_labels[t]
            best = names[int(order[0])]
            tasks[t] = {
                "label": best if accepted[t][0] else ABSTAIN,
                "prediction": best,
                "probability": round(float(p[order[0]]), 6),
                "top_k": [{"label": names[int(i)], "score": round(float(p[i]), 6)} for i in order],
            }
        return {"auto_coded": all(accepted[t][0] for t in tasks), "tasks": tasks}


def register_pipeline() -> None:
    """Registers ``"report-classification"`` with transformers' ``PIPELINE_REGISTRY`` (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=ReportClassificationPipeline, pt_model=AutoModel, type="text"
        )


__all__ = ["ABSTAIN", "TASK", "ReportClassificationPipeline", "register_pipeline"]
