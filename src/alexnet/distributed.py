"""DistributedDataParallel through torchrun: set-up from its environment, all-reduce, rank 0 writes.

``torchrun --nproc_per_node N -m alexnet train ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several
machines) sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process. The
backend is NCCL on CUDA and gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> Dist:
    """Join the process group torchrun described (if any); pin this process to its local GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    info = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def local_device(device: torch.device, info: Dist) -> torch.device:
    """cuda → cuda:LOCAL_RANK under torchrun; other devices unchanged."""
    return torch.device("cuda", info.local_rank) if device.type == "cuda" and info.enabled else device


def all_reduce_sum(t: torch.Tensor, info: Dist) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op for a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool, info: Dist, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (e.g. "stop: the loss is not finite")."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
