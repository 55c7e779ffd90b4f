"""How a model runs: device, precision, memory layout and the process-wide speed settings, in one place.

What makes the paper's network fast, measured on a 2-core CPU and written to run unchanged on CUDA
(figures in docs/PERFORMANCE.md):

* the fused LRN (:mod:`alexnet.models.lrn`): always on; its training step runs an eager or a compiled
  kernel (:func:`set_lrn_kernel`: ``auto`` picks by a measured rule);
* ``channels_last``: oneDNN's (and cuDNN's) native layout for convolutions, grouped ones
  included (the two towers of §3.2 stay one ``groups=2`` convolution: faster than two convs, and
  the state dict keeps conv2.weight [256, 48, 5, 5]); the fused LRN then slides its window along
  contiguous memory;
* autocast to bf16 (or fp16 with a gradient scaler): one AMP code path for every device; for
  inference only, :func:`for_inference` casts the weights once where autocast would at every call;
* a fused (or foreach) SGD step instead of one small kernel per parameter tensor
  (:func:`alexnet.training.optim.make_optimizer`, inside the one training step, :mod:`alexnet.training.step`);
* on CPU, :func:`tune_cpu_allocator`: glibc otherwise returns every freed activation (all of them
  are above its 32 MiB mmap ceiling at batch 128) to the kernel and page-faults it back on the next
  step, which costs more than the arithmetic of an elementwise layer;
* on CUDA, ``torch.backends.cudnn.benchmark``: the input shapes are fixed, so cuDNN's timed choice
  of algorithm per convolution is made once and pays for the rest of the run (process-wide);
* ``torch.compile`` optionally (it may pay on GPUs; on the 2-core CPU it is slower, measured);
* :func:`intra_op_threads`: fewer model threads beside decoding workers, where the user asks.

:class:`RuntimeSettings` names these choices for one model; the process-wide ones (the allocator
and its arenas, ``cudnn.benchmark``, the LRN kernel) take effect only through
:func:`apply_process_settings`, which the entry points call. Each choice keeps the outputs equal to
the plain path within the precision's tolerance (tests/core/test_perf_fastpath.py).
"""

from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import AlexNetError, not_one_of

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")  # the one precision vocabulary: train, bench, eval, features
PRECISION_HELP = ("fp32, or autocast to bf16 or fp16; bf16 pays on GPUs and on CPUs with AVX512-BF16 or AMX, and is "
                  "emulated, ~20× slower, on an AVX2-only CPU (a warning says so)")  # every --precision's help

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # anything else ("off", "fp32"): no autocast

LRN_KERNELS = ("auto", "eager", "compiled")  # the LRN's training-step kernel: alexnet.models.lrn's docstring


DEVICE_HELP = "auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps"  # every --device's help: resolve_device


def cpu_name() -> str:
    """The processor's model name as Linux reports it ("AMD EPYC 9R14 …"; ``platform.processor()`` says only
    "x86_64" there): what report.json and the bench record a figure was measured on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AlexNetError(f"--device {name!r}: not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlexNetError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AlexNetError(f"--device {name}: MPS is not available on this machine")
    return device


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on ``device``, or a disabled context for ``off``."""
    dtype = AMP_DTYPES.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)



@dataclass(frozen=True)
class RuntimeSettings:
    """How a model runs: where, at which precision, in which layout, and the process settings with it.

    The one description of it: training makes it from its config's keys
    (:meth:`alexnet.training.config.TrainConfig.runtime_settings`), features from its own
    (:meth:`alexnet.inference.features.FeatureConfig.runtime_settings`), the bench directly.
    The last two fields are process-wide: :func:`apply_process_settings` applies them, called once by
    an entry point (``alexnet train``'s setup, a CLI command, the bench), never by building a model
    or a step.
    """

    device: str = "cpu"  # a torch device string; see resolve_device for "auto"
    precision: str = "fp32"  # "fp32", or autocast to "bf16" / "fp16" (parameters stay fp32)
    channels_last: bool = True  # NHWC activations and weights (oneDNN / cuDNN native)
    compile: bool = False  # torch.compile the model
    fused_optimizer: bool = True  # SGD(fused=True) where the device has it, else foreach
    tune_allocator: bool = True  # CPU only: keep freed activations in the process (tune_cpu_allocator)
    cudnn_benchmark: bool = True  # CUDA only: let cuDNN time its algorithms for each conv shape (process-wide)
    lrn_kernel: str = "auto"  # the LRN's training step: eager, compiled (torch.compile'd passes), auto: by the measured rule (process-wide)
    malloc_arenas: int = 0  # glibc's malloc arenas (limit_malloc_arenas); 0: glibc's default (a server sets 1)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(not_one_of("precision ", self.precision, PRECISIONS))
        if self.malloc_arenas < 0:
            raise ValueError(f"malloc_arenas {self.malloc_arenas}: must be ≥ 0 (0: glibc's default)")
        if self.lrn_kernel not in LRN_KERNELS:
            raise ValueError(not_one_of("LRN kernel ", self.lrn_kernel, LRN_KERNELS))

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def memory_format(self) -> torch.memory_format:
        """The one place the layout flag becomes a memory format (model, step input, features)."""
        return torch.channels_last if self.channels_last else torch.contiguous_format


def precision_supported(device: torch.device, precision: str) -> bool:
    """Whether autocast at ``precision`` runs natively on ``device`` (bf16 on a CPU needs AVX512-BF16/AMX)."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if precision == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def warn_if_emulated(device: torch.device, precision: str) -> bool:
    """Log one line where ``precision`` has no native kernels on ``device`` (bf16 on a CPU without
    AVX512-BF16 or AMX, e.g. an AVX2 laptop): it still runs, but measured 20–27× slower than fp32 on
    the 2-core AVX2 EPYC (docs/PERFORMANCE.md). True if it warned."""
    if precision_supported(device, precision):
        return False
    log.warning("%s is not native on this %s (a CPU needs AVX512-BF16 or AMX): it runs emulated, ~20× slower "
                "than fp32 on an AVX2 CPU (docs/PERFORMANCE.md); --precision fp32 is the fast choice here",
                precision, device.type)
    return True


_ALLOCATOR_TUNED = False


def tune_cpu_allocator(limit_bytes: int = 2**30) -> bool:
    """Let glibc keep freed blocks up to ``limit_bytes`` instead of unmapping them (process-wide).

    Every activation of AlexNet at batch 128 is larger than glibc's largest mmap threshold (32 MiB),
    so by default each one is mmap'd fresh and page-faulted in on every step: on the 2-core test
    machine that makes ``relu`` of a conv1-sized map ~5× slower than the arithmetic. With
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD raised the same memory is reused step after step. The
    setting is the process's (it speeds up any model in it); on non-glibc systems it does nothing
    and returns False.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    ok = _mallopt((m_mmap_threshold, limit_bytes), (m_trim_threshold, limit_bytes))
    _ALLOCATOR_TUNED = ok
    log.info("glibc allocator: mmap/trim thresholds %s to %d bytes", "set" if ok else "NOT set", limit_bytes)
    return ok


def limit_malloc_arenas(arenas: int) -> bool:
    """Let glibc's malloc use at most ``arenas`` arenas in this process (M_ARENA_MAX); it must come
    before threads start allocating. For a server, whose request bodies are allocated by the event
    loop's thread and its batches by a worker and OpenMP's threads: with one arena per thread, and
    freed blocks kept (:func:`tune_cpu_allocator`), each arena grows to its own high-water mark and RSS
    climbed about 100 MB over 2,000 requests at batch 1; with one arena it stayed within 4 MB
    (docs/SERVING.md). On non-glibc systems it does nothing and returns False."""
    m_arena_max = -8  # from glibc's malloc.h
    ok = _mallopt((m_arena_max, arenas))
    log.info("glibc allocator: at most %d arena(s) %s", arenas, "set" if ok else "NOT set")
    return ok


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's ``mallopt(option, value)`` for each pair; False where there is no glibc or one is refused."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(bool(mallopt(option, value)) for option, value in settings)


def allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has tuned this process's allocator (the bench's rows say which they ran under)."""
    return _ALLOCATOR_TUNED


_LRN_KERNEL = "auto"


def set_lrn_kernel(kind: str) -> None:
    """Which kernel the LRN's training step runs from now on in this process (:mod:`alexnet.models.lrn`)."""
    global _LRN_KERNEL
    if kind not in LRN_KERNELS:
        raise ValueError(not_one_of("LRN kernel ", kind, LRN_KERNELS))
    _LRN_KERNEL = kind


def lrn_kernel() -> str:
    """The LRN kernel choice in force: ``auto``, ``eager`` or ``compiled``."""
    return _LRN_KERNEL


def apply_process_settings(settings: RuntimeSettings) -> None:
    """The process-wide half of ``settings``, called once by each entry point (``alexnet train``'s
    setup, the CLI commands that run a model, the bench): glibc's malloc arenas where asked
    (:func:`limit_malloc_arenas`, first: before threads allocate), on a CPU the glibc allocator
    (:func:`tune_cpu_allocator`), on CUDA ``cudnn.benchmark`` (the input shapes are fixed, so cuDNN's
    timed choice of algorithm per convolution is made once), and the LRN's kernel (:func:`set_lrn_kernel`);
    a precision the device only emulates is said in one warning (:func:`warn_if_emulated`).
    The first three cannot be undone in the process."""
    warn_if_emulated(settings.torch_device, settings.precision)
    if settings.malloc_arenas:
        limit_malloc_arenas(settings.malloc_arenas)
    set_lrn_kernel(settings.lrn_kernel)
    device = settings.torch_device
    if device.type == "cpu" and settings.tune_allocator:
        tune_cpu_allocator()
    if device.type == "cuda" and settings.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True


@contextmanager
def intra_op_threads(threads: int) -> Iterator[int]:
    """Inside the block the model runs on ``threads`` intra-op threads (0: as it was); yields the count.

    For a CPU shared with decoding workers: OpenMP threads that wait for work spin, and a decoder
    then runs on a core that spins. Whether fewer threads pay depends on which side is the
    bottleneck, so it is the user's choice (``alexnet features --threads``), not a default: on the
    2-core Xeon with 2 workers, bf16 features (a cheap model, decode-bound) went from 267 to 322
    images/s with 1 thread, and fp32 (model-bound) from 151 to 104 (docs/TRANSFER.md).
    """
    before = torch.get_num_threads()
    if threads <= 0 or threads == before:
        yield before
        return
    torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are one device (an index left out is the first)."""
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def placement(model: nn.Module) -> tuple[torch.device, ...]:
    """The devices a model placed itself on (its declared ``placement``: §3.2's two towers,
    :class:`alexnet.models.towers.TwoTowerAlexNet`); () for a model the runtime places."""
    return tuple(getattr(model, "placement", ()))


def place(model: nn.Module, settings: RuntimeSettings) -> nn.Module:
    """``model`` (in place) on the device and in the layout of ``settings``; a model that places
    itself (:func:`placement`) is only put in the layout, and its inputs go to its first device,
    which must be the device of ``settings``."""
    devices = placement(model)
    if not devices:
        return model.to(device=settings.torch_device, memory_format=settings.memory_format)
    if not same_device(devices[0], settings.torch_device):
        raise AlexNetError(f"device {settings.device}: the model places itself on {', '.join(map(str, devices))}; "
                           f"set device={devices[0]} (its inputs go to its first device)")
    return model.to(memory_format=settings.memory_format)


CAST_ONCE = (nn.Conv2d, nn.Linear)  # the layers whose weights autocast casts to its dtype at every call


def for_inference(model: nn.Module, settings: RuntimeSettings) -> nn.Module:
    """``model`` (in place) placed by :func:`place` for inference only; at bf16 or fp16 its weights are cast
    once to autocast's dtype where autocast would cast them at every call to the same values: when
    every module holding parameters is a convolution or a linear layer (run by autocast in the lower
    precision, bias included), so the outputs stay bit-equal to autocast's (tests/core/test_perf_fastpath.py).
    A model with other parameterised layers (batch norm, cuda-convnet's local layers) keeps fp32
    weights under autocast. Never for a model that trains on: its fp32 master weights would be lost.
    Measured on the 2-core Xeon (alexnet_owt, bf16, images/s): batch 1 18 → 56, batch 32 297 → 507
    (docs/SERVING.md)."""
    place(model, settings)
    dtype = AMP_DTYPES.get(settings.precision)
    holders = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    if dtype is not None and holders and all(isinstance(m, CAST_ONCE) for m in holders):
        model.to(dtype)
    return model


def prepare_model(model: nn.Module, settings: RuntimeSettings) -> nn.Module:
    """:func:`place` ``model`` and compile it if ``settings`` asks (the process settings are not touched)."""
    place(model, settings)
    return torch.compile(model) if settings.compile else model


def to_input(images: torch.Tensor, settings: RuntimeSettings) -> torch.Tensor:
    """A float batch [N, C, H, W] in the layout of ``settings`` on its device."""
    return images.to(device=settings.device, memory_format=settings.memory_format, non_blocking=True)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, settings: RuntimeSettings) -> torch.Tensor:
    """Inference logits (fp32) under the precision and layout of ``settings``; the model should be in eval mode."""
    with autocast(settings.torch_device, settings.precision):
        return model(to_input(images, settings)).float()
