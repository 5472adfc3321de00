"""Multi-process training with torchrun: this process's rank, the process group, barriers.

One process per device, joined by ``torch.distributed`` (gloo on CPU, nccl on CUDA); the model is
wrapped in :class:`torch.nn.parallel.DistributedDataParallel` by the trainer. Rank 0 alone
writes the run directory and computes the teacher cache; the other ranks wait at barriers.
Reference: Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
VLDB 2020 (arXiv:2006.15704).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (``rank 0 of 1`` without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_env() -> DistEnv:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by torchrun."""
    return DistEnv(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(env: DistEnv, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPU, nccl on CUDA); return this process's device.

    ``device`` is already resolved (:func:`clirkit.device.resolve_runtime`); on CUDA each
    process of a torchrun job takes the GPU of its ``LOCAL_RANK``, whatever index was asked for.
    """
    if not env.distributed:
        return device
    import torch.distributed as dist

    cuda = device.type == "cuda"
    if cuda:
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def barrier(env: DistEnv) -> None:
    """Wait for every process of the job (nothing without torchrun)."""
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_gather(env: DistEnv, obj):
    """``obj`` of every rank, in rank order (``[obj]`` without torchrun); collective: every rank must call it."""
    if not env.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def share_from_main(env: DistEnv, obj):
    """Rank 0's ``obj`` on every rank, then leave the process group (the end of a job)."""
    if not env.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    dist.barrier()
    dist.destroy_process_group()
    return box[0]
