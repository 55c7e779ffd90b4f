"""DistributedDataParallel through torchrun: set-up from its environment, all-reduce, rank 0 writes.

``torchrun --nproc_per_node N -m alexnet train ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several
machines) sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process. The
backend is NCCL on CUDA and gloo otherwise.

A process waits for the others at most :func:`timeout` (``ALEXNET_DIST_TIMEOUT`` seconds, 10 minutes
by default: NCCL's own default, where gloo's is 30) to connect and in each collective, then fails
with one line, so that torchrun's ``--max-restarts`` can start another round instead of a hang.

Restarts (``--max-restarts``): torchrun's c10d rendezvous shares one TCP store with the workers of
every round (``TORCHELASTIC_USE_AGENT_STORE``), and torch's env:// rendezvous adds no per-round prefix
(torch/distributed/rendezvous.py, ``_create_c10d_store``: "We create a new TCPStore for every retry",
which the shared store does not do). A restarted worker can then read the address a worker of the
previous round published and fail to connect ("Connection refused") or wait on the wrong peer
(pytorch/pytorch issue 135712 is the NCCL form). With one agent (``--standalone``, one node), whose
workers all see the same ``TORCHELASTIC_RESTART_COUNT``, :func:`setup` keys its process group by that
count. Several nodes' agents can count restarts differently (the same issue), so there the fix is
torch's: ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` in torchrun's environment (docs/TRAINING.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from alexnet.errors import AlexNetError

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
        backend, store = "nccl" if device.type == "cuda" else "gloo", round_store(world)
        if store is None:
            dist.init_process_group(backend, timeout=timeout())
        else:
            dist.init_process_group(backend, store=store, rank=world.rank, world_size=size, timeout=timeout())
    return world


def round_store(world: World) -> dist.Store | None:
    """The agent's shared store under a prefix of this restart round, where one agent started every
    worker (module doc); None elsewhere: torch's env:// rendezvous as it is."""
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or env.get("GROUP_WORLD_SIZE", "1") != "1":
        return None
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world.world_size, is_master=False, timeout=timeout())
    return dist.PrefixStore(f"alexnet/restart_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


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
