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

from clirkit.errors import ClirkitError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (``rank 0 of 1`` without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1  #: processes on this node

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_env() -> DistEnv:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` as set by torchrun."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistEnv(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), local_rank,
                   int(os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1))))


def check_job(env: DistEnv, device: torch.device, *, trains: bool, batch_size: int,
              visible_gpus: int | None = None) -> None:
    """Reject a torchrun job that cannot run, on every rank and before anything is written.

    Args:
        env: this process's place in the job.
        device: the resolved device (on CUDA each process takes the GPU of its ``LOCAL_RANK``).
        trains: whether the run trains (``--loss zero-shot`` does not: there is nothing to share out).
        batch_size: pairs per optimizer step over all processes.
        visible_gpus: the CUDA devices this node has (default: what torch sees).

    Raises:
        ClirkitError: a zero-shot run under torchrun, more processes per node than GPUs, or a
            batch size the processes cannot share equally.
    """
    if not env.distributed:
        return
    if not trains:
        raise ClirkitError(f"--loss zero-shot trains nothing, so it cannot run under torchrun ({env.world} processes)",
                           fix="run it as one process: clirkit distill ... without torchrun")
    if device.type == "cuda":
        gpus = torch.cuda.device_count() if visible_gpus is None else visible_gpus
        if env.local_world > gpus:
            raise ClirkitError(f"torchrun starts {env.local_world} processes on this node but torch sees {gpus} "
                               "CUDA device(s); each process needs a GPU of its own",
                               fix=f"use --nproc_per_node {gpus} or fewer, or --device cpu")
    if batch_size % env.world:
        raise ClirkitError(f"--batch-size {batch_size} is not divisible by the {env.world} processes",
                           fix=f"use a multiple of {env.world}")


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
