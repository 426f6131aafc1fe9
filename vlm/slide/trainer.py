"""Slide-report alignment and slide-encoder distillation on the shared :class:`~reportkd.trainer.DistillationTrainer`.

:class:`SlideAlignmentTrainer` trains a :class:`~reportkd.vlm.slide.alignment.SlideReportModel` with CLIP's
symmetric InfoNCE over (slide, report) pairs.

:class:`SlideDistillationTrainer` distils a frozen teacher slide encoder (plain or aligned) into a student:

``loss = feature_weight * feature KD (slide embeddings, MSE or cosine, projected when widths differ)
+ similarity_weight * similarity KD (in-batch slide-slide and/or slide-report similarity distributions)
+ token_weight * token KD (patch tokens; teacher tokens pooled onto the student's grid cells)``.

Cross-magnification (XMAG) distillation: batches carry the teacher's fine grid (``teacher_features``…) next to
the student's coarse grid of the same slide region; token KD pools the fine teacher tokens of each coarse cell
(``teacher_to_student``) and matches them to that cell's student token.

Gradient accumulation: per-slide terms (feature, token) are summed and divided by the slides of the whole step;
batch-level terms (contrastive, similarity) use each micro-batch's own in-batch negatives, weighted by its share of
the step's slides. Under data parallelism the contrastive loss gathers every process's pairs as negatives (as
``reportkd.vlm.clip``); similarity KD compares the slides of each process's micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import set_seed

from reportkd.losses import feature_distillation_loss, similarity_kd_loss
from reportkd.trainer import DistillationConfig, DistillationTrainer

from ..clip.losses import clip_contrastive_loss
from .alignment import SlideReportModel, load_slide_model
from .modeling_slide import SlideEncoderModel

SIMILARITY_KINDS = ("slide_slide", "slide_report", "both")


class _SlideTrainerMixin:
    """Item counting (slides) and loss normalisation shared by the slide trainers."""

    def count_items(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.tensor(batch["features"].shape[0])

    @staticmethod
    def _scales(n: int, num_items_in_batch: Any) -> tuple[Any, Any]:
        """(denominator of per-slide sums, share of batch-level terms) of a micro-batch of ``n`` slides."""
        if num_items_in_batch is None:
            return n, 1.0
        return num_items_in_batch, n / num_items_in_batch


# ---------------------------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class SlideAlignmentConfig(DistillationConfig):
    """Arguments of :class:`SlideAlignmentTrainer` (no teacher: CLIP's InfoNCE over slide-report pairs).

    Args:
        freeze_text_encoder: Keep the text encoder fixed (train the slide encoder and both projections).
        freeze_slide_encoder: Keep the slide encoder fixed (train the text side and projections).
    """

    freeze_text_encoder: bool = field(default=False, metadata={"help": "Keep the text encoder's weights fixed."})
    freeze_slide_encoder: bool = field(default=False, metadata={"help": "Keep the slide encoder's weights fixed."})

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_model_name_or_path:
            raise ValueError("Slide-report alignment has no teacher; for distillation use SlideDistillationConfig.")
        if self.freeze_text_encoder and self.freeze_slide_encoder:
            raise ValueError("Both encoders frozen leaves only the projections: unfreeze at least one encoder.")


class SlideAlignmentTrainer(_SlideTrainerMixin, DistillationTrainer):
    """Contrastive slide-report alignment (batches from ``SlideCollator(tokenize=model.tokenize)``).

    Args:
        model: A :class:`~reportkd.vlm.slide.alignment.SlideReportModel`.
        args: A :class:`SlideAlignmentConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts.
    """

    card_method = "slide_alignment"  # reportkd.hub method key of distillation.json / the model card
    args_class = SlideAlignmentConfig

    def __init__(self, model: SlideReportModel, args: SlideAlignmentConfig | None = None, **kwargs: Any):
        if not isinstance(args, SlideAlignmentConfig):
            raise TypeError(f"SlideAlignmentTrainer needs args=SlideAlignmentConfig(...), got {type(args).__name__}.")
        if not isinstance(model, SlideReportModel):
            raise TypeError(f"model must be a SlideReportModel, got {type(model).__name__}.")
        model.text_encoder.requires_grad_(not args.freeze_text_encoder)
        model.slide_encoder.requires_grad_(not args.freeze_slide_encoder)
        super().__init__(model=model, teacher_model=None, args=args, **kwargs)

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        if "input_ids" not in inputs:
            raise ValueError("Alignment batches need reports: build the collator with tokenize=model.tokenize.")
        out = model(
            features=inputs["features"],
            grid=inputs["grid"],
            patch_mask=inputs["patch_mask"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
        )
        _, share = self._scales(out["slide_features"].shape[0], num_items_in_batch)
        contrastive = clip_contrastive_loss(out["slide_features"], out["text_features"], out["logit_scale"])
        return {"loss": share * contrastive, "loss_contrastive": contrastive.detach()}, out

    def save_aligned(self, save_dir: str | Path, *, model_card: str | None = None) -> str | None:
        """Saves the slide-report model (main process only); see ``SlideReportModel.save_pretrained``."""
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return None
        return str(self.accelerator.unwrap_model(self.model).save_pretrained(save_dir, model_card=model_card))


# ---------------------------------------------------------------------------------------------------------------
# Distillation
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class SlideDistillationConfig(DistillationConfig):
    """Arguments of :class:`SlideDistillationTrainer`.

    Args:
        temperature: Softmax temperature of similarity KD on cosine similarities.
        feature_weight: Weight of slide-embedding feature KD.
        feature_kind: ``"cosine"`` (1 - cos) or ``"mse"``.
        similarity_weight: Weight of similarity KD.
        similarity_kind: ``"slide_slide"`` (in-batch slide relations), ``"slide_report"`` (distribution over the
            teacher's report embeddings; needs an aligned teacher and reports) or ``"both"``.
        token_weight: Weight of patch-token KD (XMAG: fine teacher tokens pooled per coarse student cell).
        token_kind: ``"cosine"`` or ``"mse"``.
    """

    temperature: float = field(default=0.1, metadata={"help": "Similarity-KD temperature on cosines (> 0)."})
    feature_weight: float = field(default=1.0, metadata={"help": "Weight of slide-embedding feature KD (>= 0)."})
    feature_kind: str = field(default="cosine", metadata={"help": "'cosine' or 'mse'."})
    similarity_weight: float = field(default=1.0, metadata={"help": "Weight of similarity KD (>= 0)."})
    similarity_kind: str = field(
        default="slide_slide", metadata={"help": "'slide_slide', 'slide_report' (aligned teacher) or 'both'."}
    )
    token_weight: float = field(default=0.0, metadata={"help": "Weight of patch-token KD (>= 0; XMAG alignment)."})
    token_kind: str = field(default="cosine", metadata={"help": "'cosine' or 'mse'."})

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        for name in ("feature_weight", "similarity_weight", "token_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not (self.feature_weight or self.similarity_weight or self.token_weight):
            raise ValueError("Every distillation weight is 0: set feature_weight, similarity_weight or token_weight.")
        for name in ("feature_kind", "token_kind"):
            if getattr(self, name) not in ("cosine", "mse"):
                raise ValueError(f"{name} must be 'cosine' or 'mse', got {getattr(self, name)!r}.")
        if self.similarity_kind not in SIMILARITY_KINDS:
            raise ValueError(f"similarity_kind must be one of {SIMILARITY_KINDS}, got {self.similarity_kind!r}.")

    def uses_reports(self) -> bool:
        """Whether batches need tokenised reports (slide-report similarity KD)."""
        return bool(self.similarity_weight) and self.similarity_kind in ("slide_report", "both")


class SlideDistillationStudent(nn.Module):
    """A student slide encoder with the training-only projections distillation needs.

    Args:
        student: The student slide encoder.
        teacher_dim: The teacher's hidden size (slide embeddings and patch tokens).
        joint_dim: Width of the teacher's slide-report space when distilling slide-report similarities (else None).
    """

    def __init__(self, student: SlideEncoderModel, teacher_dim: int, *, joint_dim: int | None = None) -> None:
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.feature_projection = nn.Linear(width, teacher_dim) if width != teacher_dim else nn.Identity()
        self.token_projection = nn.Linear(width, teacher_dim) if width != teacher_dim else nn.Identity()
        self.joint_projection = nn.Linear(width, joint_dim, bias=False) if joint_dim else None

    def forward(
        self, features: torch.Tensor, grid: torch.Tensor, patch_mask: torch.Tensor | None = None, **unused: Any
    ) -> dict[str, torch.Tensor]:
        out = self.student(features, grid, patch_mask)
        result = {"slide_embeds": out.slide_embeds, "patch_embeds": out.patch_embeds}
        if self.joint_projection is not None:
            result["slide_features"] = F.normalize(self.joint_projection(out.slide_embeds), dim=-1)
        return result


def pool_to_student_cells(
    teacher_tokens: torch.Tensor, teacher_to_student: torch.Tensor, num_student: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the teacher tokens that fall in each student cell.

    Args:
        teacher_tokens: ``(B, N_t, D)`` teacher patch tokens.
        teacher_to_student: ``(B, N_t)`` student index of each teacher token (-1: none / padding).
        num_student: ``N_s``, student tokens per slide.

    Returns:
        ``(pooled (B, N_s, D), counts (B, N_s))``.
    """
    b, _, d = teacher_tokens.shape
    valid = teacher_to_student >= 0
    flat = teacher_to_student.clamp_min(0) + torch.arange(b, device=teacher_tokens.device)[:, None] * num_student
    flat = flat[valid]
    sums = teacher_tokens.new_zeros(b * num_student, d).index_add_(0, flat, teacher_tokens[valid])
    counts = teacher_tokens.new_zeros(b * num_student).index_add_(0, flat, teacher_tokens.new_ones(len(flat)))
    pooled = sums / counts.clamp_min(1).unsqueeze(-1)
    return pooled.view(b, num_student, d), counts.view(b, num_student)


class SlideDistillationTrainer(_SlideTrainerMixin, DistillationTrainer):
    """Distils a frozen teacher slide encoder into a student (see the module docstring for the losses).

    Args:
        model: The student :class:`SlideEncoderModel` (wrapped here) or a ready :class:`SlideDistillationStudent`.
        teacher_model: A :class:`SlideEncoderModel`, a :class:`SlideReportModel` or a saved folder of either;
            None uses ``args.teacher_model_name_or_path``.
        args: A :class:`SlideDistillationConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts (batches from :class:`~.data.SlideCollator`; with
            slide-report KD, ``SlideCollator(tokenize=teacher.tokenize)``).
    """

    card_method = "slide_distillation"  # recipes record "xmag" for cross-magnification runs
    args_class = SlideDistillationConfig

    def __init__(
        self,
        model: SlideEncoderModel | SlideDistillationStudent,
        teacher_model: SlideEncoderModel | SlideReportModel | str | None = None,
        args: SlideDistillationConfig | None = None,
        **kwargs: Any,
    ):
        if not isinstance(args, SlideDistillationConfig):
            raise TypeError(
                f"SlideDistillationTrainer needs args=SlideDistillationConfig(...), got {type(args).__name__}."
            )
        teacher = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if teacher is None:
            raise ValueError("Distillation needs a teacher: pass teacher_model= or set teacher_model_name_or_path.")
        if isinstance(teacher, (str, Path)):
            teacher = load_slide_model(teacher)
        aligned = isinstance(teacher, SlideReportModel)
        if args.uses_reports() and not aligned:
            raise ValueError(
                f"similarity_kind={args.similarity_kind!r} distils slide-report similarities and needs an "
                "aligned teacher (SlideReportModel); use similarity_kind='slide_slide'."
            )
        teacher_encoder = teacher.slide_encoder if aligned else teacher
        if not isinstance(model, SlideDistillationStudent):
            set_seed(args.seed)  # projections initialise reproducibly
            model = SlideDistillationStudent(
                model, teacher_encoder.config.hidden_size, joint_dim=teacher.embed_dim if args.uses_reports() else None
            )
        super().__init__(model=model, teacher_model=teacher, args=args, **kwargs)

    @torch.no_grad()
    def _teacher_outputs(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        teacher = self.accelerator.unwrap_model(self.teacher)
        key = "teacher_" if "teacher_features" in inputs else ""
        feats, grid, mask = (inputs[f"{key}{k}"] for k in ("features", "grid", "patch_mask"))
        with self.compute_loss_context_manager():
            if isinstance(teacher, SlideReportModel):
                out = teacher(
                    feats, grid, mask, input_ids=inputs.get("input_ids"), attention_mask=inputs.get("attention_mask")
                )
            else:
                enc = teacher(feats, grid, mask)
                out = {"slide_embeds": enc.slide_embeds, "patch_embeds": enc.patch_embeds}
        return {k: v.float() for k, v in out.items()}

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        args = self.args
        t = self._teacher_outputs(inputs)
        s = model(features=inputs["features"], grid=inputs["grid"], patch_mask=inputs["patch_mask"])
        plain = self.accelerator.unwrap_model(model)
        n = s["slide_embeds"].shape[0]
        denom, share = self._scales(n, num_items_in_batch)
        loss = s["slide_embeds"].new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}
        if args.feature_weight:
            total = feature_distillation_loss(
                s["slide_embeds"],
                t["slide_embeds"],
                projection=plain.feature_projection,
                kind=args.feature_kind,
                reduction="sum",
            )
            loss = loss + args.feature_weight * total / denom
            terms["loss_feature"] = total.detach() / n
        if args.token_weight:
            total = self._token_sum(plain, s, t, inputs)
            loss = loss + args.token_weight * total / denom
            terms["loss_token"] = total.detach() / n
        if args.similarity_weight and args.similarity_kind in ("slide_slide", "both") and n > 1:
            value = similarity_kd_loss(s["slide_embeds"], t["slide_embeds"], temperature=args.temperature)
            loss = loss + share * args.similarity_weight * value
            terms["loss_similarity"] = value.detach()
        if args.uses_reports():
            if "text_features" not in t:
                raise ValueError("slide_report similarity KD needs reports: SlideCollator(tokenize=teacher.tokenize).")
            keys = t["text_features"]
            value = similarity_kd_loss(
                s["slide_features"], t["slide_features"], keys, keys, temperature=args.temperature
            )
            loss = loss + share * args.similarity_weight * value
            terms["loss_slide_report"] = value.detach()
        return {"loss": loss, **terms}, s

    def _token_sum(self, plain: SlideDistillationStudent, s: dict, t: dict, inputs: dict) -> torch.Tensor:
        """Per-slide mean token KD over student cells that hold teacher tokens, summed over slides."""
        s_tokens, mask = s["patch_embeds"], inputs["patch_mask"]
        if "teacher_to_student" in inputs:
            target, counts = pool_to_student_cells(t["patch_embeds"], inputs["teacher_to_student"], s_tokens.shape[1])
            mask = mask & (counts > 0)
        else:
            target = t["patch_embeds"]
        per = feature_distillation_loss(
            s_tokens, target, projection=plain.token_projection, kind=self.args.token_kind, mask=mask, reduction="none"
        )
        return (per.sum(1) / mask.sum(1).clamp_min(1)).sum()

    # -- export -----------------------------------------------------------------------------------------------------
    def save_student(
        self, save_dir: str | Path, *, model_card: str | None = None, aligned: bool = False
    ) -> str | None:
        """Saves the student (main process only).

        Args:
            save_dir: Output folder.
            model_card: ``README.md`` content.
            aligned: With slide-report KD, save a :class:`SlideReportModel`: the student slide encoder with its
                learned projection into the teacher's space and the teacher's text encoder (zero-shot, retrieval).
        """
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return None
        plain = self.accelerator.unwrap_model(self.model)
        save_dir = Path(save_dir)
        if aligned:
            teacher = self.accelerator.unwrap_model(self.teacher)
            if plain.joint_projection is None or not isinstance(teacher, SlideReportModel):
                raise ValueError("aligned=True needs slide_report similarity KD from an aligned teacher.")
            model = SlideReportModel(plain.student, teacher.text_encoder, embed_dim=teacher.embed_dim)
            with torch.no_grad():
                model.slide_projection.weight.copy_(plain.joint_projection.weight)
                model.text_projection.weight.copy_(teacher.text_projection.weight)
                model.logit_scale.copy_(teacher.logit_scale)
            return str(model.save_pretrained(save_dir, model_card=model_card))
        plain.student.save_pretrained(save_dir)
        if model_card is not None:
            (save_dir / "README.md").write_text(model_card)
        return str(save_dir)
