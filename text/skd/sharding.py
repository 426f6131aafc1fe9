"""A frozen model sharded across processes with FSDP2 (``fully_shard``), for teachers too large to replicate.

Each process then holds ``1/N`` of the weights; every forward gathers them one block (decoder layer) at a time, a
collective, so all processes must run the same number of forwards: the sampler does with ``synced=True``
(:func:`~reportkd.text.skd.sampling.interleaved_sample`), and :class:`~reportkd.text.skd.SKDTrainer` passes it
whenever a model is sharded. Works on CPU with gloo (tested with two processes) and on GPUs with NCCL.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_sharded(model: nn.Module | None) -> bool:
    """Whether ``model`` (or one of its submodules) is sharded with FSDP (``fully_shard`` or the FSDP1 wrapper)."""
    if model is None:
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


def shard_frozen_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Shards ``model`` in place across the processes of the default process group (FSDP2, one unit per block).

    The blocks are the model's ``_no_split_modules`` (its decoder layers for ``transformers`` models); the rest
    (embeddings, final norm, output layer) forms the root unit. Shards are placed on ``device``'s type (``cuda``: the
    current device; ``cpu``). Weights are gathered for each unit's forward and freed after it (the root's too). An
    already sharded model is returned as is.

    Args:
        model: A frozen module (evaluation mode, no gradients), on the CPU or the device.
        device: Where the shards live (``args.device`` of the trainer).
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "Sharding the teacher needs several processes: launch with `accelerate launch --num_processes N` (or "
            "torchrun), or set shard_teacher=False."
        )
    if is_sharded(model):
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in reversed(list(model.modules())):  # inner units before the modules that contain them
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # FSDP2 keeps the root unit's weights gathered after a forward (waiting for a backward a frozen model never
    # runs): free them after each forward, or every process would hold the whole embedding and output layer.
    model.register_forward_hook(_reshard_after_forward)
    return model


def _reshard_after_forward(module: nn.Module, args: object, output: object) -> None:
    module.reshard()


__all__ = ["is_sharded", "shard_frozen_model"]
