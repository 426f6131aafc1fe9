"""Patch-encoder distillation: multi-expert KD (GPFM), DINO/iBOT distillation (H0-mini), relation KD (HVisKD).

One or several frozen patch encoders (registry names, saved students, timm models) are distilled into a small timm
ViT/CNN student that saves as a folder ``reportkd extract --encoder <folder>`` loads (model kind ``patch_encoder``).
"""

from .data import MultiCropCollator, TileDataset, hed_jitter, load_tiles, stain_variants, synthetic_tiles
from .heads import PatchDistillationStudent, PatchTeacher, load_teacher_spec
from .model_kind import register_kinds
from .modeling import STUDENT_PRESETS, PatchEncoder, count_flops
from .trainer import PatchDistillationConfig, PatchDistillationTrainer

register_kinds()

__all__ = [
    "STUDENT_PRESETS",
    "MultiCropCollator",
    "PatchDistillationConfig",
    "PatchDistillationStudent",
    "PatchDistillationTrainer",
    "PatchEncoder",
    "PatchTeacher",
    "TileDataset",
    "count_flops",
    "hed_jitter",
    "load_teacher_spec",
    "load_tiles",
    "stain_variants",
    "synthetic_tiles",
]
