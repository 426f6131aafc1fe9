"""Patch-encoder distillation on the shared :class:`~reportkd.trainer.DistillationTrainer` (one loss hook).

``loss = feature_weight * multi-expert feature KD (a projection head per expert, expert weights; GPFM)
+ token_weight * patch-token KD + relation_sample_weight * sample relation KD + relation_region_weight * region
relation KD (HVisKD) + dino_weight * DINO + ibot_weight * iBOT against each frozen expert's fixed prototype head
(H0-mini) + self_distill_weight * DINO against the student's EMA copy on local/global crops (GPFM)``.

Batches come from :class:`~reportkd.vlm.patch.data.MultiCropCollator`. An item is an image: per-image terms
(feature, token, region relation, DINO, iBOT, self-distillation) are summed and divided by the images of the whole
accumulation step, so accumulating ``k`` micro-batches of ``b`` equals one batch of ``k * b`` for them. Batch-coupled
parts are handled per micro-batch: sample relation KD compares the images of each micro-batch (weighted by its share
of the step's images); DINO/iBOT centres are updated after every micro-batch (EMA, or Sinkhorn-Knopp over the
micro-batch), so with centring those terms are exact only with ``center_momentum=1``; the experts' running feature
moments (``expert_feature_norm="standardize"``) likewise, exact only with ``feature_norm_momentum=1`` after the first
micro-batch; the EMA teacher is updated after each optimiser step. With ``teacher_views`` in the batch (the collator's
``clean_teacher_views``) the experts see un-jittered views while the student sees stain-jittered ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, set_seed

from reportkd.trainer import DistillationConfig, DistillationTrainer

from .heads import PatchDistillationStudent, PrecomputedTeacher, expert_key, load_teacher_spec
from .losses import (
    centered_teacher_probs,
    dino_loss,
    ema_update_,
    feature_kd_loss,
    ibot_patch_loss,
    multi_expert_kd_loss,
    pool_tokens,
    region_relation_loss,
    sample_relation_loss,
    sinkhorn_knopp,
    standardize_features,
    update_center,
    update_moments,
)
from .modeling import PatchEncoder

WEIGHTS = ("feature_weight", "token_weight", "relation_sample_weight", "relation_region_weight", "dino_weight",
           "ibot_weight", "self_distill_weight")  # fmt: skip


@dataclass
class PatchDistillationConfig(DistillationConfig):
    """Arguments of :class:`PatchDistillationTrainer` (any subset of the terms; weights 0 switch them off).

    Args:
        teachers: Frozen experts: registry names (``uni_v1``, ``timm:NAME``…), saved patch-encoder folders.
        expert_weights: Expert name → weight in every per-expert term (default 1 each).
        feature_weight: Feature KD of pooled embeddings through one projection head per expert (GPFM).
        feature_kind: ``"cosine"`` or ``"mse"``.
        token_weight: Patch-token KD (teacher tokens pooled onto the student's grid; needs token teachers).
        relation_sample_weight: Sample-level relation KD (HVisKD; batch-coupled). On by default with
            ``relation_region_weight``: together they beat plain multi-expert KD in ``benchmarks/patch_distill.py``,
            and next to DINO/iBOT they make that student as stain-robust as its experts (keep them on there too).
        relation_sample_kind: ``"mse"`` (cosine matrices) or ``"kl"`` (row softmax).
        relation_region_weight: Region-level relation KD (token-token cosine matrices per image; HVisKD; needs
            experts with patch tokens: set 0 for embedding-only experts or precomputed features).
        dino_weight: DINO distillation from the frozen experts (H0-mini).
        ibot_weight: iBOT masked-token distillation from the frozen experts (needs a ViT student and masks).
        self_distill_weight: DINO self-distillation against the student's EMA copy (GPFM's local-global term).
        dino_out_dim: Prototypes of the DINO/iBOT heads.
        dino_hidden_dim: MLP width of the student's DINO heads.
        dino_bottleneck_dim: Bottleneck of the student's DINO heads.
        teacher_temperature: Teacher sharpening temperature.
        student_temperature: Student temperature.
        centering: ``"ema"`` (running centre) or ``"sinkhorn"`` (Sinkhorn-Knopp per micro-batch).
        center_momentum: EMA momentum of the centres (1: fixed centre, exact under accumulation).
        ema_momentum: Momentum of the EMA teacher of self-distillation.
        expert_feature_norm: ``"none"`` or ``"standardize"``: each expert's embedding standardised with its running
            mean and variance before feature KD and sample relation KD (GPFM-style per-expert normalisation).
        feature_norm_momentum: EMA momentum of those running moments.
    """

    teachers: list[str] = field(default_factory=list, metadata={"help": "Frozen experts: registry names or folders."})
    expert_weights: dict[str, float] | None = field(
        default=None, metadata={"help": "Expert name -> weight (default 1 each)."}
    )
    feature_weight: float = field(default=1.0, metadata={"help": "Feature KD through a head per expert (>= 0)."})
    feature_kind: str = field(default="cosine", metadata={"help": "'cosine' or 'mse'."})
    token_weight: float = field(default=0.0, metadata={"help": "Patch-token KD (>= 0)."})
    relation_sample_weight: float = field(default=1.0, metadata={"help": "Sample-level relation KD (>= 0)."})
    relation_sample_kind: str = field(default="mse", metadata={"help": "'mse' or 'kl'."})
    relation_region_weight: float = field(
        default=1.0, metadata={"help": "Region-level relation KD (>= 0; needs token experts, else set 0)."}
    )
    dino_weight: float = field(default=0.0, metadata={"help": "DINO distillation from the experts (>= 0)."})
    ibot_weight: float = field(default=0.0, metadata={"help": "iBOT masked-token distillation (>= 0; ViT)."})
    self_distill_weight: float = field(default=0.0, metadata={"help": "EMA self-distillation (>= 0)."})
    dino_out_dim: int = field(default=256, metadata={"help": "DINO/iBOT prototypes (>= 2)."})
    dino_hidden_dim: int = field(default=256, metadata={"help": "DINO head MLP width."})
    dino_bottleneck_dim: int = field(default=64, metadata={"help": "DINO head bottleneck width."})
    teacher_temperature: float = field(default=0.04, metadata={"help": "Teacher sharpening temperature (> 0)."})
    student_temperature: float = field(default=0.1, metadata={"help": "Student temperature (> 0)."})
    centering: str = field(default="ema", metadata={"help": "'ema' or 'sinkhorn'."})
    center_momentum: float = field(default=0.9, metadata={"help": "Centre EMA momentum in [0, 1]."})
    ema_momentum: float = field(default=0.99, metadata={"help": "EMA teacher momentum in [0, 1]."})
    expert_feature_norm: str = field(
        default="none", metadata={"help": "'none' or 'standardize' (each expert's embedding, running moments)."}
    )
    feature_norm_momentum: float = field(default=0.99, metadata={"help": "Momentum of those moments in [0, 1]."})

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_model_name_or_path:
            raise ValueError("Patch distillation takes its experts in teachers=[...], not teacher_model_name_or_path.")
        for name in WEIGHTS:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not any(getattr(self, n) for n in WEIGHTS):
            raise ValueError(f"Every loss weight is 0: set one of {', '.join(WEIGHTS)}.")
        if self.feature_kind not in ("cosine", "mse"):
            raise ValueError(f"feature_kind must be 'cosine' or 'mse', got {self.feature_kind!r}.")
        if self.relation_sample_kind not in ("mse", "kl"):
            raise ValueError(f"relation_sample_kind must be 'mse' or 'kl', got {self.relation_sample_kind!r}.")
        if self.centering not in ("ema", "sinkhorn"):
            raise ValueError(f"centering must be 'ema' or 'sinkhorn', got {self.centering!r}.")
        if self.expert_feature_norm not in ("none", "standardize"):
            raise ValueError(f"expert_feature_norm must be 'none' or 'standardize', got {self.expert_feature_norm!r}.")
        for name in ("center_momentum", "ema_momentum", "feature_norm_momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        for name in ("teacher_temperature", "student_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.dino_out_dim < 2:
            raise ValueError(f"dino_out_dim must be >= 2, got {self.dino_out_dim}.")
        if self.expert_weights and any(w < 0 for w in self.expert_weights.values()):
            raise ValueError(f"expert_weights must be >= 0, got {self.expert_weights}.")
        self.teachers = [str(t) for t in self.teachers]

    def heads(self) -> tuple[str, ...]:
        """The student heads the active terms need."""
        norm = self.expert_feature_norm == "standardize" and bool(self.feature_weight or self.relation_sample_weight)
        pairs = [("feature", self.feature_weight), ("token", self.token_weight), ("dino", self.dino_weight),
                 ("ibot", self.ibot_weight), ("self_distill", self.self_distill_weight),
                 ("feature_norm", norm)]  # fmt: skip
        return tuple(h for h, w in pairs if w)

    def needs_teachers(self) -> bool:
        """Whether any term reads the experts (everything but self-distillation)."""
        return any(getattr(self, n) for n in WEIGHTS if n != "self_distill_weight")


class _EMACallback(TrainerCallback):
    """Updates the EMA teacher after every optimiser step."""

    def __init__(self, trainer: PatchDistillationTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        plain = self.trainer.accelerator.unwrap_model(self.trainer.model)
        ema, live = plain.ema_pairs()
        if ema:
            ema_update_(ema, live, momentum=self.trainer.args.ema_momentum)


class PatchDistillationTrainer(DistillationTrainer):
    """Distils one or several frozen patch encoders into a student (see the module docstring for the terms).

    Args:
        model: The student :class:`PatchEncoder` (wrapped here with its heads) or a ready
            :class:`PatchDistillationStudent`.
        teachers: Experts (specs, :class:`PatchEncoder` modules or :class:`PatchTeacher`); None: ``args.teachers``.
            A mapping gives them names; an int value is the width of precomputed features stored with the tiles
            (``TileDataset(teacher_features=...)``), so that expert is never loaded.
        args: A :class:`PatchDistillationConfig`.
        **kwargs: Everything ``transformers.Trainer`` accepts (batches from ``MultiCropCollator``).
    """

    card_method = "patch_distillation"
    args_class = PatchDistillationConfig

    def __init__(
        self,
        model: PatchEncoder | PatchDistillationStudent,
        teachers: Sequence[Any] | Mapping[str, Any] | None = None,
        args: PatchDistillationConfig | None = None,
        **kwargs: Any,
    ):
        if not isinstance(args, PatchDistillationConfig):
            got = type(args).__name__
            raise TypeError(f"PatchDistillationTrainer needs args=PatchDistillationConfig(...), got {got}.")
        teachers = args.teachers if teachers is None else teachers
        named = teachers.items() if isinstance(teachers, Mapping) else [(None, t) for t in teachers]
        experts = [load_teacher_spec(t, name=n) for n, t in named]
        if args.needs_teachers() and not experts:
            raise ValueError("These losses distil experts: pass teachers= or set teachers: [...] (or use only "
                             "self_distill_weight).")  # fmt: skip
        if (args.token_weight or args.relation_region_weight or args.ibot_weight) and not all(
            e.has_tokens for e in experts
        ):
            missing = [e.name for e in experts if not e.has_tokens]
            raise ValueError(
                f"Token, region-relation and iBOT terms need patch tokens; experts {missing} give only embeddings "
                "(use timm / saved patch-encoder teachers, or set those weights to 0)."
            )
        if not isinstance(model, PatchDistillationStudent):
            if args.ibot_weight and not model.is_vit:
                raise ValueError("ibot_weight needs a ViT student (masked patch tokens); use a vit_* preset.")
            set_seed(args.seed)  # heads initialise reproducibly
            model = PatchDistillationStudent(
                model, {e.name: e.embedding_dim for e in experts}, heads=args.heads(),
                dino_out_dim=args.dino_out_dim, dino_hidden_dim=args.dino_hidden_dim,
                dino_bottleneck_dim=args.dino_bottleneck_dim, seed=args.seed,
            )  # fmt: skip
        super().__init__(model=model, teacher_model=None, args=args, **kwargs)
        self.experts = nn.ModuleList(experts).to(self.args.device)
        self.add_callback(_EMACallback(self))

    def count_items(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return torch.tensor(batch["global_views"].shape[1])

    def _targets(self, logits: torch.Tensor, center_name: str, plain: PatchDistillationStudent, update: bool):
        """Teacher targets of ``(..., K)`` logits with centring + sharpening; updates the named centre."""
        args = self.args
        if args.centering == "sinkhorn":
            flat = logits.reshape(-1, logits.shape[-1])
            return sinkhorn_knopp(flat, temperature=args.teacher_temperature).reshape(logits.shape)
        center = getattr(plain, center_name)
        probs = centered_teacher_probs(logits, center, temperature=args.teacher_temperature)
        if update:
            center.copy_(update_center(center, logits, momentum=args.center_momentum))
        return probs

    def _standardized(self, embeddings: dict[str, torch.Tensor], plain: PatchDistillationStudent, update: bool):
        """Each expert's embeddings standardised with its running moments (updated first when training)."""
        out = {}
        first = bool(plain.feature_norm_updates == 0)
        for name, emb in embeddings.items():
            key = expert_key(name)
            mean, var = getattr(plain, f"feature_mean_{key}"), getattr(plain, f"feature_var_{key}")
            if update:
                new_mean, new_var = update_moments(mean, var, emb, momentum=self.args.feature_norm_momentum,
                                                   first=first)  # fmt: skip
                mean.copy_(new_mean)
                var.copy_(new_var)
            out[name] = standardize_features(emb.detach(), mean, var)
        if update:
            plain.feature_norm_updates += 1
        return out

    def compute_loss_terms(self, model, inputs, num_items_in_batch):
        args = self.args
        plain: PatchDistillationStudent = self.accelerator.unwrap_model(model)
        views, local, masks = inputs["global_views"], inputs.get("local_views"), inputs.get("masks")
        v, n = views.shape[:2]
        denom = num_items_in_batch if num_items_in_batch is not None else n
        share = n / num_items_in_batch if num_items_in_batch is not None else 1.0
        flat = views.flatten(0, 1)
        # teachers (and the EMA branch) see the un-jittered views when the collator gives them
        t_flat = inputs["teacher_views"].flatten(0, 1) if "teacher_views" in inputs else flat
        s = model(flat, mask=masks.flatten(0, 1) if (masks is not None and args.ibot_weight) else None)
        s_emb, s_tok = s["embedding"], s["tokens"]
        stored = inputs.get("teacher_features") or {}
        t_out = {}
        for e in self.experts if args.needs_teachers() else ():
            if e.name in stored:  # precomputed on the whole tile: the same target for every view
                t_out[e.name] = {"embedding": stored[e.name].float().repeat(v, 1), "tokens": None}
            elif isinstance(e, PrecomputedTeacher):
                raise ValueError(
                    f"Expert {e.name!r} is precomputed but the batch has no teacher_features[{e.name!r}]."
                )
            else:
                t_out[e.name] = e(t_flat)
        w = {name: (args.expert_weights or {}).get(name, 1.0) for name in t_out}
        update = model.training
        loss = s_emb.new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}

        def add(name: str, weight: float, per_image_sum: torch.Tensor) -> None:
            nonlocal loss
            loss = loss + weight * per_image_sum / v / denom
            terms[f"loss_{name}"] = per_image_sum.detach() / (v * n)

        t_emb = {k: o["embedding"] for k, o in t_out.items()}
        if "feature_norm" in args.heads():
            t_emb = self._standardized(t_emb, plain, update)
        if args.feature_weight:
            targets = {expert_key(k): e for k, e in t_emb.items()}
            value = multi_expert_kd_loss(s_emb, targets, projections=plain.feature_heads, kind=args.feature_kind,
                                         weights={expert_key(k): x for k, x in w.items()})  # fmt: skip
            add("feature", args.feature_weight, value)
        if args.token_weight:
            value = sum(w[k] * feature_kd_loss(s_tok, pool_tokens(o["tokens"], s_tok.shape[1]),
                                               projection=plain.token_heads[expert_key(k)], kind=args.feature_kind)
                        for k, o in t_out.items())  # fmt: skip
            add("token", args.token_weight, value)
        if args.relation_region_weight:
            value = sum(w[k] * region_relation_loss(s_tok, o["tokens"]) for k, o in t_out.items())
            add("relation_region", args.relation_region_weight, value)
        if args.relation_sample_weight and n > 1:
            value = sum(w[k] * sample_relation_loss(s_emb[i * n : (i + 1) * n], t[i * n : (i + 1) * n],
                                                    kind=args.relation_sample_kind)
                        for k, t in t_emb.items() for i in range(v)) / v  # fmt: skip
            loss = loss + share * args.relation_sample_weight * value
            terms["loss_relation_sample"] = value.detach()
        local_emb = None
        if local is not None and (args.dino_weight or args.self_distill_weight):
            local_emb = model(local.flatten(0, 1))["embedding"]
        if args.dino_weight:
            value = 0.0
            for k, o in t_out.items():
                key = expert_key(k)
                t_logits = plain.teacher_heads[key](o["embedding"]).view(v, n, -1)
                probs = self._targets(t_logits, f"center_{key}", plain, update)
                s_logits = plain.dino_heads[key](s_emb).view(v, n, -1)
                if local_emb is not None:
                    s_logits = torch.cat([s_logits, plain.dino_heads[key](local_emb).view(-1, n, s_logits.shape[-1])])
                value = value + w[k] * dino_loss(s_logits, probs, student_temperature=args.student_temperature,
                                                 skip_same_view=False)  # fmt: skip
            add("dino", args.dino_weight, value * v)  # already a mean over view pairs per image
        if args.ibot_weight:
            if masks is None:
                raise ValueError("ibot_weight needs masked views: build the collator with mask_ratio > 0.")
            value = 0.0
            for k, o in t_out.items():
                key = expert_key(k)
                t_tok = pool_tokens(o["tokens"], s_tok.shape[1])
                probs = self._targets(plain.teacher_heads[key](t_tok), f"patch_center_{key}", plain, update)
                value = value + w[k] * ibot_patch_loss(plain.dino_heads[key](s_tok), probs, masks.flatten(0, 1),
                                                       student_temperature=args.student_temperature)  # fmt: skip
            add("ibot", args.ibot_weight, value)
        if args.self_distill_weight:
            with torch.no_grad():
                ema_logits = plain.ema_head(plain.ema_encoder(plain.encoder.normalize(t_flat))["embedding"])
            probs = self._targets(ema_logits.view(v, n, -1), "self_center", plain, update)
            s_logits = plain.self_head(s_emb).view(v, n, -1)
            if local_emb is not None:
                s_logits = torch.cat([s_logits, plain.self_head(local_emb).view(-1, n, s_logits.shape[-1])])
            if s_logits.shape[0] < 2:
                raise ValueError("self_distill_weight needs two global views or local crops (num_global / num_local).")
            value = dino_loss(s_logits, probs, student_temperature=args.student_temperature, skip_same_view=True)
            add("self_distill", args.self_distill_weight, value * v)
        return {"loss": loss, **terms}, s

    # -- export -----------------------------------------------------------------------------------------------------
    def save_student(self, save_dir) -> str | None:
        """Saves the student encoder (``config.json`` + ``model.safetensors``; main process only)."""
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return None
        return str(self.accelerator.unwrap_model(self.model).encoder.save_pretrained(save_dir))
