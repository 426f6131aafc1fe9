"""Attention-guided masking of image patches (M3AE-Distill / AttMask style).

The teacher sees the whole image; its CLS-to-patch attention (from one attention layer, averaged over heads)
ranks the patches, and the student sees the image with a growing share of them blanked out. ``mode="high"``
hides the patches the teacher attends to most (the hard case, AttMask-High); ``"low"`` hides the least attended
(background first). Masking happens in pixel space on the student's patch grid, so it works for any student
architecture and for teachers with another patch size or image size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .hooks import cls_attention_grid

MaskMode = Literal["high", "low"]


def mask_ratio_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear ramp of the mask ratio from ``start`` at step 0 to ``end`` at ``total_steps``.

    Args:
        step: Current optimisation step.
        total_steps: Steps of the whole run (``<= 0`` keeps ``end``).
        start: Ratio at the first step, in ``[0, 1)``.
        end: Ratio at the last step, in ``[0, 1)``.
    """
    for name, value in (("start", start), ("end", end)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"mask ratio {name} must be in [0, 1), got {value}.")
    if total_steps <= 0:
        return end
    progress = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * progress


def attention_guided_patch_mask(
    teacher_attention: torch.Tensor, ratio: float, grid: tuple[int, int], *, mode: MaskMode = "high"
) -> torch.Tensor:
    """Which student patches to hide, ranked by the teacher's CLS-to-patch attention.

    Args:
        teacher_attention: ``(B, H, L, L)`` teacher attention probabilities (CLS first, square patch grid).
        ratio: Share of the student's patches to hide, in ``[0, 1)``.
        grid: The student's ``(rows, cols)`` patch grid.
        mode: ``"high"`` hides the most attended patches, ``"low"`` the least attended.

    Returns:
        ``(B, rows, cols)`` boolean mask, True where the patch is hidden.
    """
    if mode not in ("high", "low"):
        raise ValueError(f"mode must be 'high' or 'low', got {mode!r}.")
    scores = cls_attention_grid(teacher_attention)
    scores = F.interpolate(scores[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
    flat = scores.flatten(1)
    k = int(round(ratio * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        idx = flat.topk(k, dim=1, largest=mode == "high").indices
        mask.scatter_(1, idx, True)
    return mask.view(-1, *grid)


def apply_patch_mask(pixel_values: torch.Tensor, mask: torch.Tensor, *, fill: float = 0.0) -> torch.Tensor:
    """Blanks the masked patches of normalised images (``fill=0`` is the data mean after normalisation).

    Args:
        pixel_values: ``(B, C, H, W)`` images.
        mask: ``(B, rows, cols)`` boolean patch mask; ``H`` and ``W`` must be multiples of the grid.
        fill: Value written into hidden patches.
    """
    b, _, h, w = pixel_values.shape
    rows, cols = mask.shape[-2:]
    if h % rows or w % cols:
        raise ValueError(f"Image {h}x{w} does not split into a {rows}x{cols} patch grid.")
    pixel_mask = mask.repeat_interleave(h // rows, dim=1).repeat_interleave(w // cols, dim=2)
    return pixel_values.masked_fill(pixel_mask[:, None].to(pixel_values.device), fill)


def patch_grid_of(model: torch.nn.Module, image_size: tuple[int, int]) -> tuple[int, int]:
    """The student's patch grid: ``visual.grid_size`` for ViTs, else a 7x7 grid (ResNets, timm towers)."""
    grid = getattr(getattr(model, "visual", None), "grid_size", None)
    if grid is not None:
        return tuple(grid)
    return (7, 7) if image_size[0] % 7 == 0 and image_size[1] % 7 == 0 else (8, 8)
