"""PNG plots of abstention: risk–coverage curves and reliability diagrams, one panel per task, one line per model.

Matplotlib with the Agg backend (no display needed); files are written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..utils import atomic_path
from .metrics import ReliabilityBins, RiskCoverage


def _figure(n_panels: int, title: str):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(n_panels, 4)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes.flat[:n_panels])


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_risk_coverage(
    curves: Mapping[str, Mapping[str, RiskCoverage]],
    path: str | os.PathLike,
    *,
    target_accuracy: float | None = None,
    operating_points: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> Path:
    """Risk (error on accepted reports) against coverage, per task; e.g. baseline vs student.

    Args:
        curves: Model name → task → :class:`~reportkd.abstention.metrics.RiskCoverage`.
        path: Output PNG.
        target_accuracy: Draws the allowed risk ``1 - target`` as a dashed line.
        operating_points: Model name → task → ``(coverage, risk)`` at the calibrated threshold (marked).
    """
    tasks = list(dict.fromkeys(t for per_task in curves.values() for t in per_task))
    fig, axes = _figure(len(tasks), "Risk–coverage (lower is better)")
    for ax, task in zip(axes, tasks):
        for i, (name, per_task) in enumerate(curves.items()):
            rc = per_task.get(task)
            if rc is None or len(rc.coverage) == 0:
                continue
            color = f"C{i}"
            ax.step(rc.coverage, rc.risk, where="post", color=color, label=f"{name} (AURC {rc.aurc:.3f})")
            point = (operating_points or {}).get(name, {}).get(task)
            if point is not None and point[0] > 0:
                ax.plot(*point, "o", color=color, markersize=5)
        if target_accuracy is not None:
            ax.axhline(1 - target_accuracy, color="grey", linestyle="--", linewidth=0.8)
        ax.set(title=task, xlabel="coverage", ylabel="risk", xlim=(0, 1))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_reliability(bins: Mapping[str, Mapping[str, ReliabilityBins]], path: str | os.PathLike) -> Path:
    """Reliability diagrams (accuracy against confidence per bin), per task; e.g. baseline vs student.

    Args:
        bins: Model name → task → :class:`~reportkd.abstention.metrics.ReliabilityBins`.
        path: Output PNG.
    """
    tasks = list(dict.fromkeys(t for per_task in bins.values() for t in per_task))
    fig, axes = _figure(len(tasks), "Reliability (diagonal = calibrated)")
    for ax, task in zip(axes, tasks):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
        for i, (name, per_task) in enumerate(bins.items()):
            b = per_task.get(task)
            if b is None:
                continue
            used = b.count > 0
            centers = (b.edges[:-1] + b.edges[1:]) / 2
            ax.plot(
                np.where(used, b.confidence, centers)[used], b.accuracy[used], "o-", color=f"C{i}", markersize=3,
                label=f"{name} (ECE {b.ece:.3f})",
            )  # fmt: skip
        ax.set(title=task, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7)
    return _save(fig, path)


__all__ = ["plot_reliability", "plot_risk_coverage"]
