"""The trainable side of CLIP distillation: the student plus the projections the losses learn with it.

:class:`CLIPDistillationStudent` wraps an open_clip student (or a PEFT model around one) together with

- ``projections["embed_image"] / ["embed_text"]``: linear maps of the student embeddings to the teacher's width,
  used by feature distillation (FD) and interactive contrastive learning (ICL), created only when the widths
  differ (identity otherwise, so identical models give FD = 0);
- one ``nn.Linear`` per hidden-state :class:`~reportkd.vlm.clip.hooks.LayerMatch` whose widths differ;
- forward hooks on the student's matched layers.

The teacher is not a submodule: it stays outside the optimiser, the state dict and data-parallel wrapping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import LayerCapture, LayerMatch, resize_patch_tokens, select_tokens
from .models import dummy_inputs


@torch.no_grad()
def probe_widths(model: nn.Module, requests: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Embedding width and the shape of each hooked output, from one forward pass on dummy inputs.

    Args:
        model: An open_clip model.
        requests: ``(path, kind)`` pairs to probe.
    """
    was_training = model.training
    model.eval()
    image, text = dummy_inputs(model, batch_size=2)
    with LayerCapture(model, requests) as capture:
        image_features = model.encode_image(image)
        model.encode_text(text)
        shapes = {k: tuple(v.shape) for k, v in capture.captured.items()}
    model.train(was_training)
    missing = [f"{kind}:{path}" for path, kind in requests if f"{kind}:{path}" not in shapes]
    if missing:
        raise ValueError(f"Layers {missing} did not run in encode_image / encode_text; match layers that do.")
    return {"embed_dim": image_features.shape[-1], "layers": shapes}


class CLIPDistillationStudent(nn.Module):
    """An open_clip student with the projections and hooks needed by the distillation losses.

    ``forward(pixel_values, input_ids)`` returns a dict with ``image_features`` / ``text_features``
    (L2-normalised), ``logit_scale`` (exponentiated), ``image_embeds_proj`` / ``text_embeds_proj`` (normalised,
    in the teacher's width) and ``layers`` (hooked hidden states, projected and token-selected, and attention
    maps, keyed by :attr:`LayerMatch.name`).

    Args:
        student: The open_clip student (a PEFT model around one works: hooks look through it).
        teacher: The teacher, only read here to size the projections (not stored).
        layer_matches: Hidden-state and attention matches.
        embed_projection: Create embedding projections (needed by FD / ICL) when the widths differ.
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        teacher: nn.Module | None = None,
        layer_matches: Sequence[LayerMatch] = (),
        embed_projection: bool = True,
    ) -> None:
        super().__init__()
        self.student = student
        self.layer_matches = list(layer_matches)
        self.projections = nn.ModuleDict()
        if (self.layer_matches or embed_projection) and teacher is None:
            raise ValueError("Layer matches and embedding projections need the teacher to size them; pass teacher=.")
        self.teacher_layer_shapes: dict[str, tuple[int, ...]] = {}
        if teacher is None:
            self.capture = None
            return
        s_req = [(m.student, m.kind) for m in self.layer_matches]
        t_req = [(m.teacher, m.kind) for m in self.layer_matches]
        s_info, t_info = probe_widths(student, s_req), probe_widths(teacher, t_req)
        if embed_projection and s_info["embed_dim"] != t_info["embed_dim"]:
            self.projections["embed_image"] = nn.Linear(s_info["embed_dim"], t_info["embed_dim"])
            self.projections["embed_text"] = nn.Linear(s_info["embed_dim"], t_info["embed_dim"])
        for match in self.layer_matches:
            s_shape = s_info["layers"][f"{match.kind}:{match.student}"]
            t_shape = t_info["layers"][f"{match.kind}:{match.teacher}"]
            self.teacher_layer_shapes[match.name] = t_shape
            if match.kind == "hidden" and s_shape[-1] != t_shape[-1]:
                if not match.projection:
                    raise ValueError(
                        f"{match.name}: student width {s_shape[-1]} != teacher width {t_shape[-1]}; set projection: "
                        "true to learn a linear map."
                    )
                self.projections[match.module_key] = nn.Linear(s_shape[-1], t_shape[-1])
        self.capture = LayerCapture(student, s_req) if s_req else None
        if self.capture is not None:
            self.capture.enabled = False  # records only inside forward (plain student calls stay hook-free)

    def _project(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.projections[key](x) if key in self.projections else x

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, *, return_layers: bool = True, **unused: Any
    ) -> dict[str, Any]:
        recording = self.capture.recording(return_layers) if self.capture is not None else contextlib.nullcontext({})
        with recording as captured:
            image = self.student.encode_image(pixel_values, normalize=True)
            text = self.student.encode_text(input_ids, normalize=True)
        out: dict[str, Any] = {
            "image_features": image,
            "text_features": text,
            "logit_scale": self.student.logit_scale.exp(),
            "image_embeds_proj": F.normalize(self._project("embed_image", image), dim=-1),
            "text_embeds_proj": F.normalize(self._project("embed_text", text), dim=-1),
            "layers": {},
        }
        for match in self.layer_matches if return_layers else ():
            value = captured[f"{match.kind}:{match.student}"]  # recorded inside the block above
            if match.kind == "hidden":
                value = select_tokens(self._project(match.module_key, value), match.tokens)
            out["layers"][match.name] = value
        return out


def align_teacher_layer(match: LayerMatch, student_value: torch.Tensor, teacher_value: torch.Tensor) -> torch.Tensor:
    """Brings a teacher hidden state to the student's token layout (resizing vision patch grids if needed)."""
    if match.kind == "hidden":
        if match.tokens == "all" and teacher_value.dim() == 3 and teacher_value.shape[1] != student_value.shape[1]:
            teacher_value = resize_patch_tokens(teacher_value, student_value.shape[1])
        return select_tokens(teacher_value, match.tokens)
    return teacher_value
