"""Patches of one slide as a torch ``Dataset``; each DataLoader worker opens its own slide handle.

Slide handles are not shared across processes (OpenSlide and tifffile handles are not fork-safe), so the dataset
keeps only the path and opens the slide lazily in whichever process reads, re-opening after a fork. Patches are
read at the grid's pyramid level, resized to ``patch_size`` when needed and passed through the encoder's
transform (PIL image → tensor).

Example::

    ds = PatchDataset.from_grid("slide.svs", grid, transform=bundle.transform, backend="openslide")
    for pixels, index in make_patch_loader(ds, batch_size=64, num_workers=2):
        ...
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .reader import SlideReader, open_slide
from .tiling import PatchGrid


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] (the default transform)."""
    chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32) * np.float32(1 / 255))


class PatchDataset(Dataset):
    """The patches at ``coords`` of one slide; ``dataset[i]`` is ``(transform(patch), i)``.

    Args:
        slide_path: The slide file.
        coords: (N, 2) top-left (x, y) in level-0 pixels.
        level: Pyramid level to read from.
        read_size: Patch side in pixels of ``level``.
        patch_size: Side after resizing (the transform's input).
        transform: PIL image → tensor; :func:`to_tensor` when None.
        backend: Reader backend (the one :func:`open_slide` picked in the main process); None tries all.
        mpp: Passed to :func:`open_slide` (only geometry matters for reading).
    """

    def __init__(
        self,
        slide_path: str | Path,
        coords: np.ndarray,
        *,
        level: int,
        read_size: int,
        patch_size: int,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        backend: str | None = None,
        mpp: float | None = None,
    ) -> None:
        self.slide_path = Path(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.level, self.read_size, self.patch_size = int(level), int(read_size), int(patch_size)
        self.transform = transform or to_tensor
        self.backend, self.mpp = backend, mpp
        self._handle: SlideReader | None = None
        self._pid: int | None = None

    @classmethod
    def from_grid(
        cls,
        slide_path: str | Path,
        grid: PatchGrid,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        backend: str | None = None,
    ) -> PatchDataset:
        """The dataset of a :class:`~reportkd.vlm.wsi.PatchGrid` (backend defaults to the one that made it)."""
        return cls(
            slide_path,
            grid.coords,
            level=grid.level,
            read_size=grid.read_size,
            patch_size=grid.patch_size,
            transform=transform,
            backend=backend or grid.metadata.get("reader"),
            mpp=grid.slide_mpp,
        )

    def open(self) -> SlideReader:
        """This process's slide handle (opened on first use and again after a fork)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle = open_slide(self.slide_path, mpp=self.mpp, backend=self.backend)
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Closes this process's handle."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def read_patch(self, i: int) -> Image.Image:
        """Patch ``i`` as a ``patch_size`` RGB PIL image."""
        x, y = self.coords[i]
        arr = self.open().read_region((int(x), int(y)), self.level, (self.read_size, self.read_size))
        img = Image.fromarray(arr)
        if self.read_size != self.patch_size:
            img = img.resize((self.patch_size, self.patch_size), Image.Resampling.BILINEAR)
        return img

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.read_patch(i)), i

    def __getstate__(self) -> dict[str, Any]:  # spawn/forkserver workers get the path, never a handle
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state


def _open_in_worker(_: int) -> None:
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, PatchDataset):
        info.dataset.open()


def make_patch_loader(
    dataset: PatchDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader over ``dataset`` in order; workers each open their own slide handle at start.

    Args:
        dataset: The patches.
        batch_size: Patches per batch.
        num_workers: Reading processes (0 reads in the main process).
        device: Where batches go; memory is pinned only for CUDA.
        prefetch_factor: Batches each worker reads ahead.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=_open_in_worker, prefetch_factor=prefetch_factor)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        **kwargs,
    )
