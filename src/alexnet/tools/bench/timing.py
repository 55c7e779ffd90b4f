"""Timing, peak memory and a description of the machine, the same way for every part of the bench.

A measurement runs ``warmup`` calls that are not timed (allocator, oneDNN/cuDNN kernel selection,
compilation), then ``reps`` timed calls, each between device synchronisations; it reports the
median and keeps every repetition. Rows that are compared with each other are timed interleaved
(:func:`measure_interleaved`), so a shared machine's changing load affects them alike. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA
(reset before each measurement) and the process's peak resident set size on the CPU
(``getrusage``: a high-water mark over the whole process, which cannot be reset).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alexnet.checkpoint.provenance import torchvision_version
from alexnet.runtime import cpu_name


@dataclass(frozen=True)
class Measurement:
    """Seconds per call: the median of ``times`` after ``warmup`` untimed calls."""

    times: list[float]
    warmup: int
    peak_memory_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict:
        return {"median_s": self.median, "times_s": self.times, "warmup": self.warmup, "peak_memory_mb": self.peak_memory_mb}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """CUDA: the peak allocated since the last reset; CPU: the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def measure(fn: Callable[[], object], device: torch.device, *, warmup: int, reps: int) -> Measurement:
    """Call ``fn`` ``warmup`` times, then time ``reps`` calls one by one (synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    reset_peak_memory(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Measurement(times, warmup, peak_memory_mb(device))


def measure_interleaved(fns: list[Callable[[], object]], device: torch.device, *, warmup: int, reps: int) -> list[Measurement]:
    """Warm each of ``fns`` up, then time them round-robin, ``reps`` rounds: on a shared machine
    whose load drifts, each sees the same conditions, so their ratios hold even when the absolute
    times do not."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    synchronize(device)
    reset_peak_memory(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            synchronize(device)
            t.append(time.perf_counter() - start)
    peak = peak_memory_mb(device)
    return [Measurement(t, warmup, peak) for t in times]


def matmul_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 4096) -> float:
    """The rate of an n×n by n×n matrix product on ``device`` (median of 5 after 2): the ceiling a
    training step's TFLOP/s is measured against (on a CPU oneDNN's for bf16, MKL's for fp32)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / measure(lambda: a @ b, device, warmup=2, reps=5).median / 1e12


def machine(device: torch.device) -> dict:
    """What the figures were measured on: device, processor, threads, load, versions."""
    info = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if version := torchvision_version():  # read without importing it (a second of torch._dynamo and sympy)
        info["torchvision"] = version
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info
