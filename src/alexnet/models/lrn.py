"""Local response normalisation (§3.3), and the kernels that compute it fast.

For the activity a_i of kernel i at one position,

    b_i = a_i / (k + α' · Σ_{j=max(0, i-n//2)}^{min(N-1, i+n//2)} a_j²)^β

with n = 5, k = 2, α = 1e-4, β = 0.75 in the paper. Two conventions exist for α':

* ``"as_run"`` (the default): α' = α / n. This is what Krizhevsky's released 2012 code computes
  (``cmrnorm``: ``scale /= size``), and what Caffe's ``LRN`` and PyTorch's
  ``nn.LocalResponseNorm`` compute, so weights trained by any of them behave as trained.
* ``"as_printed"``: α' = α, the formula as printed in the paper read literally (5× stronger at
  n = 5). TensorFlow's ``local_response_normalization`` also uses α undivided, which is why
  TF ports of AlexNet use α = 2e-5 (= 1e-4 / 5).

``groups`` normalises each group of channels on its own: with ``groups=2`` the window never crosses
the boundary between the two GPU towers (§3.2), as in the paper's two-GPU network, where each GPU
normalised only the maps it held. Caffe's grouped AlexNet normalises across all channels
(``groups=1``).

Two kernels compute the layer's training step, with the same closed-form backward and the same
window sums (a GEMM each way); they differ in the elementwise work around those, which dominates:
the LRN's maps are the network's largest (conv1's: 96×55×55 per image), and each pass over them is
bound by memory. ``eager`` runs PyTorch operators (a², s^(−β), a·r, b/s forward; g·t, w·a + g·r
backward: a dozen passes) and saves r and t; ``compiled`` fuses each side of each GEMM into one
pass with ``torch.compile`` (inductor's C++, no Python in the loop) and saves only s. Which one
runs is the process's choice (:func:`alexnet.runtime.set_lrn_kernel`, from
``RuntimeSettings.lrn_kernel``): ``auto`` takes the compiled kernel for a training step on a CPU
whose maps hold at least :data:`COMPILED_MIN_VALUES` values (one image's at least
:data:`COMPILED_MIN_IMAGE`: ImageNet-size nets), where it measured 2× faster than eager in bf16 and
1.3× in fp32 (conv1's and conv2's LRNs at batch 128, forward + backward, on the AMX Xeon: docs/PERFORMANCE.md;
on the AVX2 EPYC the fp32 step is the same with either, by round 0.97–1.03),
and the eager one elsewhere: in eval (so a server or a page never waits for a compiler), on GPUs
(not measured yet), for small maps (an epoch of the ``fashion`` preset, 28 px, took the same time
with either kernel on the AVX2 EPYC), and for good once compiling has failed (no C++ compiler: logged
once). The first compile takes 5–25 s per dtype, cached on disk by inductor for later runs.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from alexnet import runtime
from alexnet.errors import not_one_of, one_line

log = logging.getLogger(__name__)

LRNConvention = Literal["as_run", "as_printed"]
LRN_CONVENTIONS: tuple[str, ...] = ("as_run", "as_printed")


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN, b = a / (k + α'·Σa²)^β; see the module docstring for α' and groups.

    Runs the fused implementation (:func:`local_response_norm`): the same outputs and gradients
    as the plain formula (:func:`plain_local_response_norm`) at a fraction of its cost.
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        *,
        convention: LRNConvention = "as_run",
        groups: int = 1,
    ) -> None:
        super().__init__()
        if convention not in LRN_CONVENTIONS:
            raise ValueError(not_one_of("LRN convention ", convention, LRN_CONVENTIONS))
        if size < 1 or groups < 1:
            raise ValueError(f"LRN size and groups must be positive, got size={size}, groups={groups}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention, self.groups = convention, groups

    @property
    def alpha_per_term(self) -> float:
        """α', the factor that multiplies each a_j² in the sum."""
        return self.alpha / self.size if self.convention == "as_run" else self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha_per_term, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention}, groups={self.groups}"
        )


class PlainLocalResponseNorm(LocalResponseNorm):
    """The same layer computed by the plain formula (``F.local_response_norm``): the baseline that
    ``alexnet bench`` and the tests compare the fused one against."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return plain_local_response_norm(x, self.size, self.alpha_per_term, self.beta, self.k, self.groups)


def plain_local_response_norm(x: torch.Tensor, size: int, alpha_per_term: float, beta: float, k: float, groups: int = 1) -> torch.Tensor:
    """The formula as PyTorch writes it (pad, ``avg_pool3d``, ``pow``, ``div``), per group of channels."""
    _check_groups(x, groups)
    alpha = alpha_per_term * size  # torch's local_response_norm divides its alpha by size
    if groups == 1:
        return F.local_response_norm(x, size, alpha, beta, k)
    n, c, *spatial = x.shape
    y = F.local_response_norm(x.reshape(n * groups, c // groups, *spatial), size, alpha, beta, k)
    return y.reshape(x.shape)


COMPILED_MIN_VALUES = 2**20  # auto's smallest batch of maps for the compiled kernel: conv1's LRN at batch 4 (1.16 M values)
COMPILED_MIN_IMAGE = 2**16  # ... and smallest map of one image: ImageNet-size nets (conv1's 290 k), not 24–32 px ones (≤ 50 k)


def local_response_norm(x: torch.Tensor, size: int, alpha_per_term: float, beta: float, k: float, groups: int = 1) -> torch.Tensor:
    """Fused LRN of a [N, C, H, W] batch (any memory format, dtype, device); see :class:`_FusedLRN`.

    Under tracing and export (TorchScript, ONNX, torch.export, torch.compile) and on the meta device
    (shape-only summaries) the plain formula is used instead: it is made of standard operators that
    exporters know, the compiler fuses and every device implements.
    """
    _check_groups(x, groups)
    if x.dim() != 4 or x.device.type == "meta" or _tracing():
        return plain_local_response_norm(x, size, alpha_per_term, beta, k, groups)
    spec = _LRNSpec(size, alpha_per_term, beta, k, groups)
    if torch.is_grad_enabled() and x.requires_grad:
        return FusedNorm.apply(x, _ChannelWindow(spec), True) if use_compiled_kernel(x) else _FusedLRN.apply(x, spec)
    return _lrn_forward(x, spec)[0]


def _check_groups(x: torch.Tensor, groups: int) -> None:
    if x.dim() < 2 or x.shape[1] % groups:
        raise ValueError(f"LRN with groups={groups} needs channels divisible by it, got shape {tuple(x.shape)}")


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


class _LRNSpec(NamedTuple):
    size: int
    alpha_per_term: float
    beta: float
    k: float
    groups: int


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the LRN computes in: fp16 input in fp32 (a² overflows fp16's 65,504 for |a| > 256,
    which the paper's 0–255-scale activations reach); everything else, bf16 included, in its own.

    bf16 has fp32's range, and its 8-bit mantissa costs b = a·s^(−β) no more than the bf16 rounding
    of b itself: s ≥ k = 2 is held to ±0.4 %, which moves s^(−β) by ±0.3 %. Computing in bf16 halves
    the memory traffic of the LRN's passes over conv1's and conv2's maps and runs the window sum as a
    bf16 GEMM (docs/PERFORMANCE.md has the figures).
    """
    return torch.float32 if dtype == torch.float16 else dtype


@functools.lru_cache(maxsize=64)
def _window_weights(channels: int, groups: int, front: int, back: int, scale: float, offset: float,
                    dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The window sum over channels as a grouped 1×1 convolution: its weight [C, C/groups, 1, 1],
    weight[o, i] = ``scale`` where input channel i lies in output o's window i ∈ o − front … o + back
    (positions within the group), else 0; and its bias, ``offset`` (None for 0). Built once per
    layer shape, dtype and device: rebuilding them took a handful of small kernels per call."""
    cg = channels // groups
    with torch.inference_mode(False), torch.no_grad():  # plain constants, usable by autograd later
        out_pos = (torch.arange(channels, device=device) % cg)[:, None]
        in_pos = torch.arange(cg, device=device)[None, :]
        inside = (in_pos >= out_pos - front) & (in_pos <= out_pos + back)
        weight = (inside.to(dtype) * scale)[:, :, None, None]
        bias = torch.full((channels,), offset, dtype=dtype, device=device) if offset else None
    return weight, bias


def _window_sum(t: torch.Tensor, groups: int, front: int, back: int, scale: float, offset: float = 0.0) -> torch.Tensor:
    """offset + scale · Σ_{j=i−front}^{i+back} t_j within each group: one grouped 1×1 convolution with a
    banded weight and the offset as its bias, i.e. one matrix product over the maps in their own layout
    (channels_last: a GEMM with no reorder), instead of ``size`` passes over them. Under autocast the
    caller fixes the dtype."""
    weight, bias = _window_weights(t.shape[1], groups, front, back, scale, offset, t.dtype, t.device)
    return F.conv2d(t, weight, bias, groups=groups)


def _as_layout(x: torch.Tensor) -> torch.Tensor:
    """x itself if it is NCHW- or channels_last-contiguous, else an NCHW-contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _lrn_forward(x: torch.Tensor, spec: _LRNSpec, for_backward: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(b, r, t): b = a·r with r = s^(−β), s = k + α'·Σ_window a², in :func:`_compute_dtype`; with
    ``for_backward`` also r and t = a·r/s = a·s^(−β−1), what the backward needs besides a (else None).

    fp16 input is converted once on the way in and once on the way out: mixed-dtype elementwise ops
    would each convert on the fly, which on a CPU costs more than the arithmetic. A few cheap passes
    over the maps (a², s^(−β), a·r, and b/s for the backward) and one GEMM (the window sum, with k as
    its bias).
    """
    front, back = spec.size // 2, (spec.size - 1) // 2  # F.local_response_norm's window: i − n//2 … i + (n−1)//2
    with torch.autocast(x.device.type, enabled=False):
        a = _as_layout(x).to(_compute_dtype(x.dtype))
        s = _window_sum(a * a, spec.groups, front, back, spec.alpha_per_term, offset=spec.k)
        r = _negative_power(s, spec.beta)
        b = a * r
        t = torch.div(b, s, out=torch.empty_like(b)) if for_backward else None  # `b / s` is 2× slower in bf16 here
        return b.to(x.dtype), (r if for_backward else None), t


def _negative_power(s: torch.Tensor, beta: float) -> torch.Tensor:
    """s^(−β). For the paper's β = 0.75 as 1/√(s·√s): three cheap passes instead of one ``pow``, whose
    general exponent costs ~3× as much on a CPU (bf16 and fp32 alike); equal within 2 ulp."""
    if beta == 0.75:
        return s.sqrt().mul_(s).rsqrt_()
    return s.pow(-beta)


# The compiled kernel: each function is one fused pass over the maps (and, uncompiled, its own fallback).

def _square(a: torch.Tensor) -> torch.Tensor:
    return a * a


def _scaled(a: torch.Tensor, s: torch.Tensor, beta: float) -> torch.Tensor:
    """b = a·s^(−β)."""
    return a * _negative_power_pure(s, beta)


def _grad_terms(g: torch.Tensor, a: torch.Tensor, s: torch.Tensor, beta: float) -> torch.Tensor:
    """g·t with t = a·s^(−β−1): what the backward's window sum adds up."""
    return g * a * _negative_power_pure(s, beta) / s


def _grad_input(w: torch.Tensor, a: torch.Tensor, g: torch.Tensor, s: torch.Tensor, beta: float) -> torch.Tensor:
    """∂L/∂a = w·a + g·s^(−β), w the window sum of the terms times −2α'β."""
    return w * a + g * _negative_power_pure(s, beta)


def _negative_power_pure(s: torch.Tensor, beta: float) -> torch.Tensor:
    """s^(−β) without in-place operations (what a compiler fuses); 1/√(s·√s) for β = 0.75."""
    return torch.rsqrt(s * torch.sqrt(s)) if beta == 0.75 else torch.pow(s, -beta)


_PASSES = {f.__name__: f for f in (_square, _scaled, _grad_terms, _grad_input)}


class _Compiled:
    """The torch.compile'd passes, built at first use (dynamic shapes: one compile per dtype and layout,
    any batch); ``failed`` once a compile has failed, after which the eager kernel runs."""

    passes: dict[str, Any] | None = None
    failed = False


def picks_compiled(device: torch.device, shape: tuple[int, ...]) -> bool:
    """Whether ``auto`` picks the compiled kernel for a training step's maps of ``shape`` [N, C, H, W] on
    ``device``: large maps on a CPU. A small-image net's run is too short to repay the compile (the
    digits demo: 13 s of training, which a first compile made 42 s)."""
    per_image = math.prod(shape[1:])
    return device.type == "cpu" and per_image >= COMPILED_MIN_IMAGE and per_image * shape[0] >= COMPILED_MIN_VALUES


def use_compiled_kernel(x: torch.Tensor) -> bool:
    """The kernel rule (module docstring), for a training step's input ``x``."""
    kernel = runtime.lrn_kernel()
    if kernel == "eager" or _Compiled.failed:
        return False
    return kernel == "compiled" or picks_compiled(x.device, tuple(x.shape))


def fused_pass(name: str, compiled: bool, *args: Any) -> torch.Tensor:
    """One elementwise pass of the kernel (``_square``, ``_scaled``, ``_grad_terms``, ``_grad_input``),
    compiled or eager: also what cuda-convnet's same-map norm runs around its spatial window sum."""
    return _run_pass(name, *args) if compiled else _PASSES[name](*args)


def _run_pass(name: str, *args: Any) -> torch.Tensor:
    """The compiled pass ``name``; where compiling fails, the same function run eagerly (same numbers)."""
    if not _Compiled.failed:
        try:
            if _Compiled.passes is None:
                _Compiled.passes = {n: torch.compile(f, dynamic=True, fullgraph=True) for n, f in _PASSES.items()}
            return _Compiled.passes[name](*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # inductor's failures (no C++ compiler, an unsupported platform) have no common type
            _Compiled.failed = True
            log.warning("LRN: its compiled kernel failed to build (%s); the eager kernel runs instead",
                        one_line(e, first_line=True))
    return _PASSES[name](*args)


class _FusedLRN(torch.autograd.Function):
    """LRN with a closed-form backward (the eager kernel). With b_i = a_i·s_i^(−β), s_i = k + α'·Σ_{j∈W(i)} a_j²:

        ∂L/∂a_i = g_i·s_i^(−β) − 2α'β·a_i·Σ_{j: i∈W(j)} g_j·a_j·s_j^(−β−1)

    Forward saves r = s^(−β) and t = a·s^(−β−1) (the input a is kept by the ReLU before it anyway);
    backward is one window sum of g·t over the transposed window (the transposed banded matrix) and
    two elementwise passes, g·t and w·a + g·r. The compiled kernel (:class:`FusedNorm`) saves s alone
    and recomputes r and t inside its fused passes. The plain formula's autograd graph instead keeps
    five maps and runs ``avg_pool3d_backward``, ``pow`` and ``div`` twice.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: _LRNSpec) -> torch.Tensor:
        x = _as_layout(x)
        y, r, t = _lrn_forward(x, spec, for_backward=True)
        ctx.save_for_backward(x, r, t)
        ctx.spec = spec
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, r, t = ctx.saved_tensors
        spec: _LRNSpec = ctx.spec
        g = g.contiguous(memory_format=torch.channels_last if not x.is_contiguous() else torch.contiguous_format)
        with torch.autocast(x.device.type, enabled=False):
            a, g = x.to(r.dtype), g.to(r.dtype)
            w = _ChannelWindow(spec).backward_sum(g * t)
            return w.mul_(a).addcmul_(g, r).to(x.dtype), None


class _ChannelWindow(NamedTuple):
    """The LRN's window over channels, as :class:`FusedNorm` asks for it."""

    spec: _LRNSpec

    @property
    def beta(self) -> float:
        return self.spec.beta

    def forward_sum(self, squares: torch.Tensor) -> torch.Tensor:
        """s = k + α'·Σ over i − n//2 … i + (n−1)//2 (F.local_response_norm's window)."""
        s = self.spec
        return _window_sum(squares, s.groups, s.size // 2, (s.size - 1) // 2, s.alpha_per_term, offset=s.k)

    def backward_sum(self, terms: torch.Tensor) -> torch.Tensor:
        """−2α'β·Σ over the transposed window, i − (n−1)//2 … i + n//2."""
        s = self.spec
        return _window_sum(terms, s.groups, (s.size - 1) // 2, s.size // 2, -2.0 * s.alpha_per_term * s.beta)


class FusedNorm(torch.autograd.Function):
    """b = a·s^(−β) with s a window sum of a² (its constants inside), by the fused passes: the LRN's
    compiled kernel and cuda-convnet's same-map norm (:mod:`alexnet.models.cudaconvnet_layers`).

    ``window`` has ``beta``, ``forward_sum(a²)`` → s and ``backward_sum(terms)`` → the transposed
    window's sum times −2·β·(the per-term factor); the backward is ∂L/∂a = w·a + g·s^(−β). s alone
    is saved; ``compiled`` picks :func:`fused_pass`'s form. fp16 input is computed in fp32.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, window: Any, compiled: bool) -> torch.Tensor:
        x = _as_layout(x)
        ctx.window, ctx.compiled = window, compiled
        with torch.autocast(x.device.type, enabled=False):
            a = x.to(_compute_dtype(x.dtype))
            s = window.forward_sum(fused_pass("_square", compiled, a))
            ctx.save_for_backward(x, s)
            return fused_pass("_scaled", compiled, a, s, window.beta).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, s = ctx.saved_tensors
        window, compiled = ctx.window, ctx.compiled
        g = g.contiguous(memory_format=torch.channels_last if not x.is_contiguous() else torch.contiguous_format)
        with torch.autocast(x.device.type, enabled=False):
            a, g = x.to(s.dtype), g.to(s.dtype)
            w = window.backward_sum(fused_pass("_grad_terms", compiled, g, a, s, window.beta))
            return fused_pass("_grad_input", compiled, w, a, g, s, window.beta).to(x.dtype), None, None
