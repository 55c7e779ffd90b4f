"""Batches of uint8 images for training and evaluation, in a reproducible order.

The order of an epoch is a permutation drawn from ``seed + epoch``, so a run resumed at batch
``start`` of an epoch sees exactly the batches it would have seen (``start`` counts this rank's
batches). Under DistributedDataParallel each rank takes every ``world_size``-th index of the
permutation after padding it to a multiple of ``world_size`` (as ``DistributedSampler`` does).

In-memory and memory-mapped sets (digits, CIFAR-10, IDX, the packed store) are indexed a whole
batch at a time and travel as uint8, pinned when the target is a GPU; images keep their stored size
(:class:`~alexnet.data.transforms.Preprocess` fits them on the device). Lazy sets (an unpacked image
folder) are decoded and down-sampled to ``size`` by ``workers`` processes.

A JPEG store (:mod:`alexnet.data.jpeg`) is decoded a whole batch at a time: by ``workers``
processes on the CPU (libjpeg-turbo), or, bound for a GPU, on the GPU itself (nvJPEG, one batched
call) from bytes a background thread reads ahead. ``decode`` chooses: "auto" (the target's
device), "cpu" or "device".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from alexnet.data.imageset import ImageSet
from alexnet.data.jpeg import JpegRecords, decode_on_device
from alexnet.data.transforms import downsample
from alexnet.errors import AlexNetError


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                pad: bool = True) -> np.ndarray:
    """The indices this rank visits in this epoch. ``pad``: every rank gets as many (the first few
    indices repeated, as ``DistributedSampler`` does: training needs equal steps); without, each
    index is visited exactly once over all ranks (evaluation counts every image once)."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).numpy()
    else:
        order = np.arange(n)
    if world_size > 1:
        extra = (-n) % world_size if pad else 0
        order = np.concatenate([order, order[:extra]])[rank::world_size]
    return order


def num_batches(n: int, batch_size: int, *, drop_last: bool = False, world_size: int = 1) -> int:
    per_rank = -(-n // world_size)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


class _Decoded(torch.utils.data.Dataset):
    """A lazy ImageSet decoded and down-sampled to ``size`` (for DataLoader workers)."""

    def __init__(self, images: ImageSet, size: int) -> None:
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray | _Failed:
        try:
            return downsample(self.images.load(i), self.size)
        except AlexNetError as e:  # carried back whole: a worker's exception would reach the user as RuntimeError
            return _Failed(str(e))


class _Failed(NamedTuple):
    """A decoding error, passed from a worker process to the main one as data."""

    message: str


def _collate(batch: list[np.ndarray | _Failed]) -> torch.Tensor | _Failed:
    failed = next((b for b in batch if isinstance(b, _Failed)), None)
    if failed is not None:
        return failed
    return torch.from_numpy(np.stack(batch))


class _JpegBatches(torch.utils.data.Dataset):
    """A JPEG store's records for DataLoader workers: ``__getitems__`` decodes a whole batch at once."""

    def __init__(self, records: JpegRecords) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.records.decode_batch(np.array([i]))[0]

    def __getitems__(self, rows: list[int]) -> torch.Tensor:
        return self.records.decode_batch(np.asarray(rows))


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch


def iter_batches(
    images: ImageSet,
    batch_size: int,
    *,
    size: int,
    device: torch.device | str = "cpu",
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    pad: bool = True,
    prefetch: int | None = None,
    decode: str = "auto",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images [B, H, W, C], int64 labels [B]) on ``device``, from batch ``start`` on.

    In-memory sets: ``prefetch`` batches are gathered ahead by a background thread (default: 2 when
    the target is a GPU, whose step then never waits for the CPU's copy; 0 on the CPU, where the
    thread would only take a core from the step). Bound for a GPU, a batch is gathered straight
    into pinned memory (one copy) and moved without blocking. A JPEG store's batches are decoded
    as ``decode`` says (module doc)."""
    device = torch.device(device)
    order = epoch_order(len(images), shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size, pad=pad)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    batches = [order[i : min(i + batch_size, stop)] for i in range(0, stop, batch_size)][start:]
    labels = torch.from_numpy(np.asarray(images.labels, dtype=np.int64))
    pin = device.type == "cuda"
    if images.in_memory:
        depth = (2 if device.type != "cpu" else 0) if prefetch is None else prefetch
        gathered = _ahead(lambda idx: _gather(images.images, idx, pin), batches, depth)
        for idx, x in zip(batches, gathered):
            y = labels[idx].pin_memory() if pin else labels[idx]
            yield x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
        return
    if isinstance(images.loader, JpegRecords):
        yield from _jpeg_batches(images.loader, batches, labels, device, workers, decode, prefetch)
        return
    loader = torch.utils.data.DataLoader(
        _Decoded(images, size), batch_sampler=[list(b) for b in batches], num_workers=workers,
        collate_fn=_collate, pin_memory=pin, persistent_workers=False,
    )
    for idx, x in zip(batches, loader):
        if isinstance(x, _Failed):
            raise AlexNetError(x.message)  # the same "PATH: reason" as with 0 workers
        yield x.to(device, non_blocking=pin), labels[idx].to(device, non_blocking=pin)


def _jpeg_batches(records: JpegRecords, batches: list[np.ndarray], labels: torch.Tensor, device: torch.device,
                  workers: int, decode: str, prefetch: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if decode not in ("auto", "cpu", "device"):
        raise ValueError(f"decode={decode!r}: one of auto, cpu, device")
    pin = device.type == "cuda"
    if decode == "device" or (decode == "auto" and device.type == "cuda"):
        read = lambda idx: [torch.from_numpy(records.read(int(i))) for i in idx]
        for idx, data in zip(batches, _ahead(read, batches, 2 if prefetch is None else prefetch)):
            x = decode_on_device(data, device, records.channels, records.size, [records.name(int(i)) for i in idx])
            yield x, labels[idx].to(device, non_blocking=pin)
        return
    loader = torch.utils.data.DataLoader(
        _JpegBatches(records), batch_sampler=[list(b) for b in batches], num_workers=workers,
        collate_fn=_as_batch, pin_memory=pin, persistent_workers=False,
    )
    for idx, x in zip(batches, loader):
        yield x.to(device, non_blocking=pin), labels[idx].to(device, non_blocking=pin)


def _gather(array: np.ndarray, idx: np.ndarray, pin: bool) -> torch.Tensor:
    """The images at ``idx``, in that order, in one copy: into pinned memory when ``pin``, else into
    numpy's own allocation (a fresh torch buffer of a batch is page-faulted in on every call unless
    the process's allocator is tuned: ≈ 10 ms against 1.5 ms at 128 × 256²)."""
    if not pin:
        return torch.from_numpy(np.take(array, idx, axis=0))
    dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
    out = torch.empty((len(idx), *array.shape[1:]), dtype=dtype, pin_memory=True)  # the caching host allocator
    np.take(array, idx, axis=0, out=out.numpy(), mode="clip")  # "clip" writes straight into out ("raise" buffers); idx is valid
    return out


T = TypeVar("T")
R = TypeVar("R")


def _ahead(fn: Callable[[T], R], items: Sequence[T], depth: int) -> Iterator[R]:
    """fn(item) for each item, in order, with up to ``depth`` results computed ahead by one
    background thread (numpy's and torch's copies release the GIL)."""
    if depth <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="alexnet-batches") as pool:
        pending = deque(pool.submit(fn, item) for item in items[:depth])
        for item in items[depth:]:
            done = pending.popleft().result()
            pending.append(pool.submit(fn, item))
            yield done
        while pending:
            yield pending.popleft().result()
