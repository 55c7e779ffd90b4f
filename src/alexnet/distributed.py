"""DistributedDataParallel through torchrun: set-up from its environment, all-reduce, rank 0 writes.

``torchrun --nproc_per_node N -m alexnet train ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several
machines) sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process. The
backend is NCCL on CUDA and gloo otherwise.

A process waits for the others at most :func:`timeout` (``ALEXNET_DIST_TIMEOUT`` seconds, 10 minutes
by default: NCCL's own default, where gloo's is 30) to connect and in each collective, then fails
with one line, so that torchrun's ``--max-restarts`` can start another round instead of a hang:
gloo's pair connection after an elastic restart sometimes never completes (``Pair::connect``
waiting on a peer that is gone; pytorch/gloo issue 520 is a relative).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import AlexNetError

TIMEOUT_ENV = "ALEXNET_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> World:
    """Join the process group torchrun described (if any); pin this process to its local GPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout())
    return world


def timeout() -> timedelta:
    """How long a rank waits for the others (module doc): ``$ALEXNET_DIST_TIMEOUT`` seconds, or 10 minutes."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise AlexNetError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds, e.g. 600")
    return timedelta(seconds=seconds)


def local_device(device: torch.device, world: World) -> torch.device:
    """cuda → cuda:LOCAL_RANK under torchrun; other devices unchanged."""
    return torch.device("cuda", world.local_rank) if device.type == "cuda" and world.enabled else device


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op for a single process)."""
    if world.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def cleanup(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()
