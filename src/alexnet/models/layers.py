"""Building blocks of the AlexNet family: local response normalisation and the initialisers.

Local response normalisation (§3.3). For the activity a_i of kernel i at one position,

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
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

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
            raise ValueError(f"LRN convention {convention!r} is not one of {', '.join(LRN_CONVENTIONS)}")
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
        return _FusedLRN.apply(x, spec)
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


class _FusedLRN(torch.autograd.Function):
    """LRN with a closed-form backward. With b_i = a_i·s_i^(−β), s_i = k + α'·Σ_{j∈W(i)} a_j²:

        ∂L/∂a_i = g_i·s_i^(−β) − 2α'β·a_i·Σ_{j: i∈W(j)} g_j·a_j·s_j^(−β−1)

    Forward saves r = s^(−β) and t = a·s^(−β−1) (the input a is kept by the ReLU before it anyway);
    backward is one window sum of g·t over the transposed window (the transposed banded matrix) and
    two elementwise passes, g·t and w·a + g·r. The plain formula's autograd graph instead keeps five
    maps and runs ``avg_pool3d_backward``, ``pow`` and ``div`` twice.
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
        # the transposed window of j ∈ i − n//2 … i + (n−1)//2 is j ∈ i − (n−1)//2 … i + n//2
        front, back = (spec.size - 1) // 2, spec.size // 2
        with torch.autocast(x.device.type, enabled=False):
            a, g = x.to(r.dtype), g.to(r.dtype)
            w = _window_sum(g * t, spec.groups, front, back, -2.0 * spec.alpha_per_term * spec.beta)
            grad = w.mul_(a).addcmul_(g, r).to(x.dtype)
        return grad, None


# ---------------------------------------------------------------------------------------------
# Dropout (§4.2) in the paper's scaling and in the inverted one every framework uses.

DROPOUT_SCALINGS: tuple[str, ...] = ("paper", "inverted")


class PaperDropout(nn.Dropout):
    """Dropout as §4.2 describes it: in training each output is zeroed with probability p and the
    others pass *unscaled*; at test time "we use all the neurons but multiply their outputs by 0.5"
    (by 1 − p).

    ``nn.Dropout`` (and Caffe's, torchvision's, d2l's) is *inverted*: the survivors are multiplied by
    1/(1 − p) in training and nothing is done at test time. The two have the same expected output, but
    not the same training: with the paper's init (biases of 1 in fc6/fc7, so the fc6/fc7 codes are
    all positive) inverted dropout doubles what fc7 sees, and fc8 sees twice fc7's larger output: at
    init the fc7 code's squared norm is 7× the paper's and the first SGD step moves the logits 14× as
    far, enough at ε = 0.01 to blow the first steps up and leave the loss flat at ln(classes)
    (docs/TRAINING.md, measured). With this scaling the paper's init and ε
    learn. Weights trained one way run the other way after halving the weights of the layers that read
    the dropped outputs (fc7 and fc8 in the paper's placement).

    In training it draws the same mask as ``nn.Dropout`` with the same generator state
    (``F.dropout`` then × (1 − p): exact for p = 0.5).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.dropout(x, self.p, True) * (1.0 - self.p)
        return x * (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, scaling=paper"


def dropout_layer(p: float, scaling: str) -> nn.Dropout:
    """The dropout module for ``scaling`` "paper" (:class:`PaperDropout`) or "inverted" (``nn.Dropout``)."""
    if scaling not in DROPOUT_SCALINGS:
        raise ValueError(f"dropout scaling {scaling!r} is not one of {', '.join(DROPOUT_SCALINGS)}")
    return PaperDropout(p) if scaling == "paper" else nn.Dropout(p)


# ---------------------------------------------------------------------------------------------
# Initialisers. Each takes the model's named layers (name -> Conv2d/Linear) and fills them in place.

InitName = Literal["paper", "alexnet2012", "bvlc_alexnet", "caffenet", "xavier", "kaiming", "torch"]
INITS: tuple[str, ...] = ("paper", "alexnet2012", "bvlc_alexnet", "caffenet", "xavier", "kaiming", "torch")


@torch.no_grad()
def init_gaussian(layers: dict[str, nn.Module], std: dict[str, float], bias: dict[str, float]) -> None:
    """Weights ~ N(0, std[name]²) and constant biases, the form of every Caffe/cuda-convnet filler."""
    for name, layer in layers.items():
        nn.init.normal_(layer.weight, mean=0.0, std=std[name])
        nn.init.constant_(layer.bias, bias.get(name, 0.0))


def paper_init(layers: dict[str, nn.Module]) -> None:
    """§5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 in the others.

    The bias of 1 "accelerates the early stages of learning by providing the ReLUs with positive
    inputs". Layers are addressed by the paper's names, so the same function serves every variant
    that uses them (a model without, say, conv4 simply has no entry for it).
    """
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, {n: 0.01 for n in layers}, {n: 1.0 for n in layers if n in ones})


def alexnet2012_init(layers: dict[str, nn.Module]) -> None:
    """Krizhevsky's layers-145.cfg: as the paper, but conv3–conv5 weights with std 0.03 (reference §3)."""
    std = {n: (0.03 if n in {"conv3", "conv4", "conv5"} else 0.01) for n in layers}
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, std, {n: 1.0 for n in layers if n in ones})


def bvlc_alexnet_init(layers: dict[str, nn.Module]) -> None:
    """Caffe's models/bvlc_alexnet fillers: std 0.01, fc6/fc7 std 0.005; biases 0.1 where the paper has 1."""
    std = {n: (0.005 if n in {"fc6", "fc7"} else 0.01) for n in layers}
    point_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, std, {n: 0.1 for n in layers if n in point_one})


def caffenet_init(layers: dict[str, nn.Module]) -> None:
    """Caffe's bvlc_reference_caffenet fillers: std 0.01, fc6/fc7 std 0.005; biases 1 as in the paper."""
    std = {n: (0.005 if n in {"fc6", "fc7"} else 0.01) for n in layers}
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, std, {n: 1.0 for n in layers if n in ones})


@torch.no_grad()
def xavier_init(layers: dict[str, nn.Module]) -> None:
    """d2l's ``init_cnn``: Xavier-uniform weights for every Conv2d and Linear; biases keep torch's default."""
    for layer in layers.values():
        nn.init.xavier_uniform_(layer.weight)


@torch.no_grad()
def kaiming_init(layers: dict[str, nn.Module]) -> None:
    """He-normal weights (fan-in, ReLU gain) and zero biases: keeps activations at unit scale in small nets."""
    for layer in layers.values():
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)


def torch_init(layers: dict[str, nn.Module]) -> None:
    """PyTorch's layer defaults (Kaiming-uniform with a=√5), which torchvision's AlexNet keeps."""
    for layer in layers.values():
        layer.reset_parameters()


INITIALISERS = {
    "paper": paper_init,
    "alexnet2012": alexnet2012_init,
    "bvlc_alexnet": bvlc_alexnet_init,
    "caffenet": caffenet_init,
    "xavier": xavier_init,
    "kaiming": kaiming_init,
    "torch": torch_init,
}


def initialise(layers: dict[str, nn.Module], scheme: str) -> None:
    """Apply the named scheme (one of ``INITS``) to the model's conv and fc layers."""
    try:
        fn = INITIALISERS[scheme]
    except KeyError:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}") from None
    fn(layers)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch's floor rule, 1 + ⌊(size + 2p − k) / s⌋ (Caffe's pooling rounds up; AlexNet's sizes divide evenly)."""
    return 1 + math.floor((size + 2 * padding - kernel) / stride)
