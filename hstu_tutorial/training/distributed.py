"""Data-parallel training under torchrun: process group, each rank's share of the steps, DDP, averages."""

from __future__ import annotations

import os

import torch

from hstu_tutorial.errors import ConfigError

__all__ = ["all_reduce_mean", "broadcast_from_rank0", "rank_steps", "setup_distributed", "wrap_ddp"]


def setup_distributed(device: torch.device) -> tuple[torch.device, int, int]:
    """(device, rank, world size). Under torchrun (env WORLD_SIZE > 1) join the process group (NCCL on
    GPUs, gloo on CPUs) and use GPU LOCAL_RANK; otherwise (device, 0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, 0, 1
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local} but torch sees {torch.cuda.device_count()} GPU(s): start torchrun with "
                "--nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def rank_steps(num_steps: int, rank: int, world: int) -> list[int]:
    """The steps of an epoch that `rank` runs: every world-th one, starting at `rank`. Every rank runs the
    same number of steps (gradients are all-reduced at each), so the last round wraps to the first batches
    (as torch's DistributedSampler pads by repeating samples)."""
    if world == 1:
        return list(range(num_steps))
    per_rank = -(-num_steps // world)
    return [(rank + world * i) % num_steps for i in range(per_rank)]


def all_reduce_mean(value: torch.Tensor, world: int) -> torch.Tensor:
    """Mean of a scalar tensor over ranks (itself when alone)."""
    if world == 1:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel (gradients all-reduced in the backward pass)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def broadcast_from_rank0(compute, rank: int, world: int):
    """`compute()` run on rank 0 only, its (picklable) result sent to every rank (itself when alone)."""
    if world == 1:
        return compute()
    import torch.distributed as dist

    box = [compute() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
