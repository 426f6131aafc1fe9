"""CLIP distillation on the shared :class:`~reportkd.trainer.DistillationTrainer`.

Loss = ``contrastive_weight * clip_contrastive + logit_kd_weight * clip_logit_kd + icl_weight * clip_icl +
relation_weight * clip_relation_kd`` (batch-level terms: each item's loss depends on the whole batch) ``+
fd_weight * clip_fd + Σ match.weight * layer loss`` (per-item terms: hidden states and attention maps).

Gradient accumulation. Per-item terms are summed and divided by the number of pairs in the whole accumulation
step (and all processes), so ``k`` micro-batches of ``b`` give exactly the gradient of one batch of ``k * b``.
Batch-level terms are not decomposable over micro-batches (the negatives of micro-batch 1 are not in micro-batch
2). Two choices, ``contrastive_accumulation``:

- ``"grad_cache"`` (default, exact): GradCache (Gao et al., 2021). When the Trainer fetches the step's
  micro-batches, the student embeds all of them without gradients, the batch-level loss of the *whole step* is
  computed on those cached embeddings and differentiated with respect to them, and each micro-batch's backward
  pass then pushes its slice of those embedding gradients through the student (RNG state is replayed, so
  dropout / patch dropout match). Cost: one extra no-grad student forward per micro-batch; the teacher runs once.
- ``"micro_batch"``: each micro-batch's batch-level loss with its own in-batch negatives, weighted by its share
  of the step's pairs (smaller negative sets than the large batch; cheaper).

With one micro-batch per step both are the plain large-batch loss.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import set_seed

from reportkd.losses import feature_distillation_loss
from reportkd.trainer import DistillationConfig, DistillationTrainer

from .hooks import LayerCapture, LayerMatch, cls_attention_grid, parse_layer_matches
from .losses import (
    clip_attention_kd_loss,
    clip_contrastive_loss,
    clip_feature_distillation_loss,
    clip_icl_loss,
    clip_logit_kd_loss,
    clip_relation_kd_loss,
)
from .masking import apply_patch_mask, attention_guided_patch_mask, mask_ratio_at, patch_grid_of
from .models import context_length_of, load_open_clip, model_preprocess_cfg, save_open_clip
from .student import CLIPDistillationStudent, align_teacher_layer

BATCH_TERMS = ("contrastive", "logit_kd", "icl", "relation")
_EMBED_KEYS = ("image_features", "text_features", "image_embeds_proj", "text_embeds_proj")


@dataclass
class CLIPDistillationConfig(DistillationConfig):
    """Arguments of :class:`CLIPDistillationTrainer` on top of :class:`~reportkd.trainer.DistillationConfig`.

    Each loss term has its own weight. Set every teacher weight to 0 (and no layer matches) to train a student alone.

    Args:
        temperature: Softening temperature of logit and relation distillation.
        contrastive_weight: Weight of the CLIP contrastive loss on the student's own pairs.
        logit_kd_weight: Weight of logit distillation / affinity mimicking (``clip_logit_kd``).
        logit_kd_kind: ``"kl"`` (0 at a perfect match) or ``"soft_ce"`` (open_clip ``DistillClipLoss``).
        fd_weight: Weight of CLIP-KD feature distillation (MSE of normalised embeddings; CLIP-KD uses ~2000).
        icl_weight: Weight of CLIP-KD interactive contrastive learning.
        relation_weight: Weight of intra-modal relation (similarity-matrix) distillation.
        layer_matches: Hidden-state / attention matches: a list of mappings (see ``hooks.LayerMatch``) or a
            JSON / YAML string of one.
        contrastive_accumulation: ``"grad_cache"`` (exact large-batch gradients) or ``"micro_batch"``.
        mask_ratio_start: Attention-guided masking: share of student patches hidden at the first step.
        mask_ratio_end: Share hidden at the last step (linear ramp); 0 with ``mask_ratio_start`` 0 disables.
        mask_layer: Teacher attention module ranking the patches (default: its last vision block's ``attn``).
        mask_mode: ``"high"`` hides the most attended patches, ``"low"`` the least attended.
    """

    temperature: float = field(default=1.0, metadata={"help": "Temperature of logit and relation KD (> 0)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the CLIP contrastive loss (>= 0)."})
    logit_kd_weight: float = field(default=1.0, metadata={"help": "Weight of logit distillation (>= 0)."})
    logit_kd_kind: str = field(default="kl", metadata={"help": "'kl' or 'soft_ce' (open_clip DistillClipLoss)."})
    fd_weight: float = field(default=0.0, metadata={"help": "Weight of CLIP-KD feature distillation (>= 0)."})
    icl_weight: float = field(default=0.0, metadata={"help": "Weight of CLIP-KD interactive contrastive loss."})
    relation_weight: float = field(default=0.0, metadata={"help": "Weight of relation (similarity-matrix) KD."})
    layer_matches: list[dict] | str | None = field(
        default=None, metadata={"help": "Hidden-state / attention matches (list of mappings or JSON/YAML string)."}
    )
    contrastive_accumulation: str = field(
        default="grad_cache", metadata={"help": "'grad_cache' (exact) or 'micro_batch' (per micro-batch negatives)."}
    )
    mask_ratio_start: float = field(default=0.0, metadata={"help": "Masked share of student patches at step 0."})
    mask_ratio_end: float = field(default=0.0, metadata={"help": "Masked share at the last step (linear ramp)."})
    mask_layer: str | None = field(default=None, metadata={"help": "Teacher attention module ranking patches."})
    mask_mode: str = field(default="high", metadata={"help": "'high' or 'low': which patches to hide first."})

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        for name in ("contrastive_weight", "logit_kd_weight", "fd_weight", "icl_weight", "relation_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.logit_kd_kind not in ("kl", "soft_ce"):
            raise ValueError(f"logit_kd_kind must be 'kl' or 'soft_ce', got {self.logit_kd_kind!r}.")
        if self.contrastive_accumulation not in ("grad_cache", "micro_batch"):
            raise ValueError(
                "contrastive_accumulation must be 'grad_cache' or 'micro_batch', "
                f"got {self.contrastive_accumulation!r}."
            )
        if self.mask_mode not in ("high", "low"):
            raise ValueError(f"mask_mode must be 'high' or 'low', got {self.mask_mode!r}.")
        mask_ratio_at(0, 1, self.mask_ratio_start, self.mask_ratio_end)  # validates the range
        self.layer_matches = [m.to_dict() for m in parse_layer_matches(self.layer_matches)] or None
        if not (self.uses_teacher() or self.contrastive_weight > 0):
            raise ValueError("Every loss weight is 0: set contrastive_weight or a distillation weight above 0.")

    def term_weights(self) -> dict[str, float]:
        """Weights of the embedding-level terms by name."""
        return {"contrastive": self.contrastive_weight, "logit_kd": self.logit_kd_weight, "icl": self.icl_weight,
                "relation": self.relation_weight, "fd": self.fd_weight}  # fmt: skip

    def uses_teacher(self) -> bool:
        """Whether any term needs the teacher."""
        return bool(
            self.logit_kd_weight or self.fd_weight or self.icl_weight or self.relation_weight or self.layer_matches
            or self.mask_ratio_start or self.mask_ratio_end
        )  # fmt: skip


class _RNGState:
    """CPU (and CUDA) RNG state, captured before a no-grad forward and replayed before its gradient twin."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class CLIPDistillationTrainer(DistillationTrainer):
    """Distils an open_clip teacher into an open_clip student (see the module docstring for the losses).

    Batches come from :class:`~reportkd.vlm.clip.data.CLIPCollator`. The student is wrapped in a
    :class:`~reportkd.vlm.clip.student.CLIPDistillationStudent` (projections + hooks), which is what
    ``trainer.model`` holds; :meth:`save_student` exports the student alone in open_clip's hub format.

    Args:
        model: The open_clip student (a PEFT model around one works) or a ready ``CLIPDistillationStudent``.
        teacher_model: Teacher module or name / path for :func:`~reportkd.vlm.clip.models.load_open_clip`;
            None uses ``args.teacher_model_name_or_path``.
        args: A :class:`CLIPDistillationConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts (``train_dataset``, ``data_collator``…).
    """

    args_class = CLIPDistillationConfig

    def __init__(
        self,
        model: nn.Module,
        teacher_model: nn.Module | str | None = None,
        args: CLIPDistillationConfig | None = None,
        **kwargs: Any,
    ):
        if not isinstance(args, CLIPDistillationConfig):
            raise TypeError(
                f"CLIPDistillationTrainer needs args=CLIPDistillationConfig(...), got {type(args).__name__}."
            )
        teacher = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if not args.uses_teacher():
            teacher = None
        elif teacher is None:
            raise ValueError(
                "The distillation weights need a teacher: pass teacher_model= or teacher_model_name_or_path, or set "
                "logit_kd/fd/icl/relation weights and mask ratios to 0 (no layer_matches) to train the student alone."
            )
        if isinstance(teacher, str):
            teacher = load_open_clip(teacher).model
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.layer_matches: list[LayerMatch] = parse_layer_matches(args.layer_matches)
        if not isinstance(model, CLIPDistillationStudent):
            set_seed(args.seed)  # projections initialise reproducibly (the Trainer seeds again itself)
            model = CLIPDistillationStudent(
                model, teacher=teacher, layer_matches=self.layer_matches,
                embed_projection=teacher is not None and bool(args.fd_weight or args.icl_weight),
            )  # fmt: skip
        super().__init__(model=model, teacher_model=teacher, args=args, **kwargs)
        self.mask_layer = None
        if args.mask_ratio_start or args.mask_ratio_end:
            self.mask_layer = args.mask_layer or self._default_mask_layer()
        requests = [(m.teacher, m.kind) for m in self.layer_matches]
        if self.mask_layer is not None:
            requests.append((self.mask_layer, "attention"))
        self._teacher_capture = LayerCapture(self.teacher, requests) if self.teacher is not None and requests else None
        if self._teacher_capture is not None:
            self._teacher_capture.enabled = False  # records only inside _teacher_outputs
        self._grad_cache: dict[str, Any] | None = None
        self._teacher_inputs_differ = (False, False)
        if self.teacher is not None:
            s, t = self.accelerator.unwrap_model(self.model).student, self.accelerator.unwrap_model(self.teacher)
            self._teacher_inputs_differ = (
                model_preprocess_cfg(s) != model_preprocess_cfg(t),
                context_length_of(s) != context_length_of(t)
                or getattr(s, "vocab_size", 0) != getattr(t, "vocab_size", 0),
            )

    def _default_mask_layer(self) -> str:
        blocks = getattr(getattr(getattr(self.teacher, "visual", None), "transformer", None), "resblocks", None)
        if blocks is None:
            raise ValueError("The teacher has no visual.transformer.resblocks: set mask_layer to an attention module.")
        return f"visual.transformer.resblocks.{len(blocks) - 1}.attn"

    # -- inputs: device, teacher forward, masking ---------------------------------------------------------------
    def count_items(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.tensor(batch["pixel_values"].shape[0])

    @torch.no_grad()
    def _teacher_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        teacher = self.accelerator.unwrap_model(self.teacher)
        for key, differ in zip(("teacher_pixel_values", "teacher_input_ids"), self._teacher_inputs_differ):
            if differ and key not in inputs:
                raise ValueError(
                    f"Teacher and student need different inputs but the batch has no {key!r}: build the collator "
                    "with CLIPCollator.for_models(student_bundle, teacher_bundle)."
                )
        pixels = inputs.get("teacher_pixel_values", inputs["pixel_values"])
        ids = inputs.get("teacher_input_ids", inputs["input_ids"])
        capture = self._teacher_capture
        recording = capture.recording() if capture is not None else contextlib.nullcontext({})
        with self.compute_loss_context_manager(), recording as layers:
            image = teacher.encode_image(pixels, normalize=True)
            text = teacher.encode_text(ids, normalize=True)
        return {"image_features": image.float(), "text_features": text.float(),
                "logit_scale": teacher.logit_scale.exp().float(), "layers": layers}  # fmt: skip

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs.get("_clip_prepared"):
            return inputs
        inputs = dict(super()._prepare_inputs(inputs))
        if self.teacher is not None:
            inputs["_teacher"] = self._teacher_outputs(inputs)
            if self.mask_layer is not None and self.model.training:
                ratio = mask_ratio_at(
                    self.state.global_step, self.state.max_steps, self.args.mask_ratio_start, self.args.mask_ratio_end
                )
                if ratio > 0:
                    student = self.accelerator.unwrap_model(self.model).student
                    grid = patch_grid_of(student, tuple(inputs["pixel_values"].shape[-2:]))
                    attn = inputs["_teacher"]["layers"][f"attention:{self.mask_layer}"]
                    mask = attention_guided_patch_mask(attn, ratio, grid, mode=self.args.mask_mode)
                    inputs["pixel_values"] = apply_patch_mask(inputs["pixel_values"], mask)
                self.log_metric("mask_ratio", ratio)
        inputs["_clip_prepared"] = True
        return inputs

    # -- loss terms -----------------------------------------------------------------------------------------------
    def _batch_terms(self, student: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """Unweighted batch-level terms with a positive weight."""
        w, args, terms = self.args.term_weights(), self.args, {}
        s_img, s_txt, s_scale = student["image_features"], student["text_features"], student["logit_scale"]
        if w["contrastive"]:
            terms["contrastive"] = clip_contrastive_loss(s_img, s_txt, s_scale)
        if teacher is None:
            return terms
        t_img, t_txt, t_scale = teacher["image_features"], teacher["text_features"], teacher["logit_scale"]
        if w["logit_kd"]:
            terms["logit_kd"] = clip_logit_kd_loss(
                s_img, s_txt, s_scale, t_img, t_txt, t_scale, temperature=args.temperature, kind=args.logit_kd_kind
            )
        if w["icl"]:
            terms["icl"] = clip_icl_loss(student["image_embeds_proj"], student["text_embeds_proj"], t_img, t_txt,
                                         s_scale)  # fmt: skip
        if w["relation"]:
            terms["relation"] = clip_relation_kd_loss(
                s_img, s_txt, s_scale, t_img, t_txt, t_scale, temperature=args.temperature
            )
        return terms

    def _item_sums(self, student: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """Per-item terms summed over the micro-batch's pairs (unweighted)."""
        sums: dict[str, torch.Tensor] = {}
        if teacher is None:
            return sums
        if self.args.fd_weight:
            sums["fd"] = clip_feature_distillation_loss(
                student["image_embeds_proj"], student["text_embeds_proj"], teacher["image_features"],
                teacher["text_features"], reduction="sum",
            )  # fmt: skip
        for match in self.layer_matches:
            sums[match.name] = layer_match_loss(
                match, student["layers"][match.name], teacher["layers"][f"{match.kind}:{match.teacher}"]
            )
        return sums

    def _item_weight(self, name: str) -> float:
        if name == "fd":
            return self.args.fd_weight
        return next(m.weight for m in self.layer_matches if m.name == name)

    # -- GradCache --------------------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._grad_cache = None
        weights = self.args.term_weights()
        if (
            self.args.contrastive_accumulation == "grad_cache"
            and len(batch_samples) > 1
            and any(weights[t] for t in BATCH_TERMS)
        ):
            batch_samples = self._build_grad_cache(batch_samples)
        return batch_samples, num_items

    def _build_grad_cache(self, batch_samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Embeds all micro-batches without gradients and caches d(step loss)/d(embeddings) per micro-batch."""
        model = self.model
        model.train()
        prepared, outputs, rng = [], [], []
        for i, batch in enumerate(batch_samples):
            inputs = self._prepare_inputs(batch)
            inputs["_clip_index"] = i
            rng.append(_RNGState())
            with torch.no_grad(), self.compute_loss_context_manager():
                out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"], return_layers=False)
            prepared.append(inputs)
            outputs.append(out)
        leaves = {k: torch.cat([o[k] for o in outputs]).float().requires_grad_() for k in _EMBED_KEYS}
        scale = outputs[0]["logit_scale"].detach().float().requires_grad_()
        teacher = None
        if self.teacher is not None:
            t = [p["_teacher"] for p in prepared]
            teacher = {k: torch.cat([x[k] for x in t]) for k in ("image_features", "text_features")}
            teacher["logit_scale"] = t[0]["logit_scale"]
        weights = self.args.term_weights()
        with torch.enable_grad():
            terms = self._batch_terms({**leaves, "logit_scale": scale}, teacher)
            total = sum(weights[name] * value for name, value in terms.items())
            inputs_with_grad = [*leaves.values(), scale]
            grads = torch.autograd.grad(total, inputs_with_grad, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs_with_grad)]
        sizes = [o["image_features"].shape[0] for o in outputs]
        split = {k: g.split(sizes) for k, g in zip(_EMBED_KEYS, grads[:-1])}
        k = len(batch_samples)
        self._grad_cache = {
            "grads": [{key: split[key][i] for key in _EMBED_KEYS} for i in range(k)],
            "scale_grad": grads[-1] / k,
            "share": total.detach() / k,
            "terms": {name: value.detach() for name, value in terms.items()},
            "rng": rng,
        }
        return prepared

    # -- loss -----------------------------------------------------------------------------------------------------
    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        inputs = dict(inputs)
        teacher = inputs.pop("_teacher", None)
        index = inputs.pop("_clip_index", None)
        cache = self._grad_cache if index is not None else None
        if cache is not None:
            cache["rng"][index].restore()
        out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"])
        n = out["image_features"].shape[0]
        denom = num_items_in_batch if num_items_in_batch is not None else n
        loss = out["image_features"].new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}

        for name, total in self._item_sums(out, teacher).items():
            loss = loss + self._item_weight(name) * total / denom
            terms[f"loss_{name}"] = total.detach() / n

        weights = self.args.term_weights()
        if cache is not None:
            g = cache["grads"][index]
            surrogate = sum((out[key].float() * g[key]).sum() for key in _EMBED_KEYS)
            surrogate = surrogate + (out["logit_scale"].float() * cache["scale_grad"]).sum()
            # the cached step loss is this process's own: undo the process factor compute_loss applies
            scaled = num_items_in_batch is not None and self.args.average_tokens_across_devices
            loss = loss + (surrogate + (cache["share"] - surrogate).detach()) / (
                self.accelerator.num_processes if scaled else 1
            )
            if index == 0:
                terms.update({f"loss_{name}": value for name, value in cache["terms"].items()})
        else:
            share = n / denom if num_items_in_batch is not None else 1.0
            for name, value in self._batch_terms(out, teacher).items():
                loss = loss + share * weights[name] * value
                terms[f"loss_{name}"] = value.detach()
        return {"loss": loss, **terms}, {
            "image_features": out["image_features"],
            "text_features": out["text_features"],
        }

    # -- export -----------------------------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints: weights and arguments only (``Trainer`` would call the open_clip tokenizer's missing
        ``save_pretrained`` through ``data_collator.tokenizer``)."""
        collator, self.data_collator = self.data_collator, None
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            self.data_collator = collator

    def save_student(self, save_dir: str, *, model_cfg: dict[str, Any], tokenizer: Any = None,
                     model_card: str | None = None) -> str | None:  # fmt: skip
        """Saves the student alone in open_clip's hub format (main process only); see ``models.save_open_clip``.

        Args:
            save_dir: Output folder.
            model_cfg: The student's open_clip model config.
            tokenizer: The student's tokenizer.
            model_card: Markdown model card.
        """
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return None
        student = self.accelerator.unwrap_model(self.model).student
        return str(save_open_clip(student, save_dir, model_cfg=model_cfg, tokenizer=tokenizer, model_card=model_card))


def layer_match_loss(match: LayerMatch, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of one layer match's per-item loss.

    Args:
        match: The layer match.
        student: Student hidden state (already projected and token-selected) or attention map.
        teacher: Teacher hidden state or attention map as captured.
    """
    if match.kind == "hidden":
        teacher = align_teacher_layer(match, student, teacher)
        per = feature_distillation_loss(student, teacher, kind=match.loss, reduction="none")
        return (per.flatten(1).mean(1) if per.dim() > 1 else per).sum()
    if match.tokens == "cls":
        grid = cls_attention_grid(student)
        student = grid.flatten(1)
        teacher = cls_attention_grid(teacher, grid=grid.shape[-1]).flatten(1)
    return clip_attention_kd_loss(student, teacher, reduction="sum")
