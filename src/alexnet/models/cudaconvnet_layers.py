"""The layers of Krizhevsky's cuda-convnet that PyTorch does not have: same-map response
normalisation (``type=rnorm``) and the locally connected layer (``type=local``), plus its output-size
rule.

Read in repository akrizhevsky/cuda-convnet2 (``layer.py``, ``cudaconv3/src/conv_util.cu``,
``cudaconvnet/src/layer.cu``) and dnouri/cuda-convnet (the 2012 code: ``layer.py``,
``src/cudaconv2/conv_util.cu``); no code is copied from them.

**Output sizes.** cuda-convnet sizes a convolution or local layer's output as
``modulesX = 1 + ceil((2·padding + imgSize − filterSize) / stride)`` (``layer.py``, ConvLayerParser /
LocalLayerParser) and a pooling layer's as ``ceil((imgSize − start − sizeX) / stride) + 1``
(PoolLayerParser): both round *up*, and the windows that run past the image read zeros (convolution)
or only the pixels inside it (pooling). PyTorch rounds down. :func:`ceil_extra` is the number of zero
rows and columns to add at the bottom and right so that PyTorch's floor rule gives cuda-convnet's
size and the same sums: 3 for AlexNet's conv1 at 224 (11×11, stride 4: 55×55 instead of 54×54).
Pooling uses ``ceil_mode=True``, which PyTorch defines the same way (an average divides by the
pixels inside the image, as cuda-convnet's ``AvgPooler`` does with its clipped ``regionSize``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import alexnet.models.lrn as lrn


def ceil_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """cuda-convnet's rule, 1 + ⌈(2p + size − k) / s⌉ (``layer.py``'s ``modulesX``)."""
    return 1 + math.ceil((2 * padding + size - kernel) / stride)


def ceil_extra(size: int, kernel: int, stride: int, padding: int) -> int:
    """Zero rows/columns to append (bottom/right) so that the floor rule gives :func:`ceil_output_size`."""
    out = ceil_output_size(size, kernel, stride, padding)
    return max(0, (out - 1) * stride + kernel - (size + 2 * padding))


class SameMapResponseNorm(nn.Module):
    """cuda-convnet's ``type=rnorm``: response normalisation over a spatial window of the *same* map.

    For the activity a of one map at (y, x), with the window W(y, x) = rows y − ⌊n/2⌋ … y − ⌊n/2⌋ + n − 1
    and the same columns, clipped at the image borders (nothing outside the image is summed)::

        b = a · (minDiv + (scale / n²) · Σ_{(y', x') ∈ W} a(y', x')²)^(−pow)

    ``scale`` is the value written in the layer-params file; ``layer.py`` (NormLayerParser) divides it
    by size² for ``rnorm`` (by size for ``cmrnorm``) and ``conv_util.cu`` (``kCNorm_fewfilter``) sums
    over the clipped window, adds ``minDiv`` (1 unless given; cuda-convnet's 2012 kernels hard-code
    1) and raises to ``−pow``. The released ImageNet cfg (``cnorm2a``/``cnorm2b``) has size 5,
    scale 0.001, pow 0.75; ``layers-18pct.cfg`` size 3, scale 5e-5. fp16 input is computed in fp32
    (a² overflows fp16 for |a| > 256).

    It runs as the LRN does (:mod:`alexnet.models.lrn`): the window sum one depthwise convolution,
    the elementwise work around it the LRN kernel's fused passes (compiled where the kernel rule
    says so), and a closed-form backward, ∂L/∂a = g·D^(−p) − 2p·(scale/n²)·a·Σ_{transposed window}
    g·a·D^(−p−1), saving D alone (tested against the formula and its autograd gradient in float64).
    """

    def __init__(self, size: int = 5, scale: float = 0.001, power: float = 0.75, min_div: float = 1.0) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"rnorm size must be positive, got {size}")
        self.size, self.scale, self.power, self.min_div = size, scale, power, min_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.device.type == "meta" or lrn._tracing():
            return self.plain(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return lrn.FusedNorm.apply(x, self, lrn.use_compiled_kernel(x))
        with torch.autocast(x.device.type, enabled=False):
            a = x.float() if x.dtype == torch.float16 else x
            return lrn.fused_pass("_scaled", False, a, self.forward_sum(a * a), self.power).to(x.dtype)

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The formula in standard operators (pad, ``avg_pool2d``, ``pow``): what tracing and export see."""
        a = x.float() if x.dtype == torch.float16 else x
        before, after = self.size // 2, self.size - 1 - self.size // 2
        squares = F.pad(a * a, (before, after, before, after))  # zeros outside: the clipped window's sum
        window_sum = F.avg_pool2d(squares, self.size, stride=1) * (self.size * self.size)
        denominator = self.min_div + (self.scale / self.size**2) * window_sum
        return (a * denominator.pow(-self.power)).to(x.dtype)

    @property
    def beta(self) -> float:
        """The exponent, under the name :class:`alexnet.models.lrn.FusedNorm` asks for."""
        return self.power

    def forward_sum(self, squares: torch.Tensor) -> torch.Tensor:
        """D = minDiv + scale/n² · Σ over each pixel's clipped window."""
        return self.window_sum(squares, self.scale / self.size**2, self.min_div)

    def backward_sum(self, terms: torch.Tensor) -> torch.Tensor:
        """−2p·scale/n² · Σ over the transposed window."""
        return self.window_sum(terms, -2.0 * self.power * self.scale / self.size**2, 0.0, transposed=True)

    def window_sum(self, t: torch.Tensor, factor: float, offset: float, transposed: bool = False) -> torch.Tensor:
        """offset + factor · Σ over each pixel's clipped window (the transposed one for the backward), as one
        depthwise convolution."""
        before, after = self.size // 2, self.size - 1 - self.size // 2
        if transposed:
            before, after = after, before
        channels = t.shape[1]
        weight = torch.full((channels, 1, self.size, self.size), factor, dtype=t.dtype, device=t.device)
        bias = torch.full((channels,), offset, dtype=t.dtype, device=t.device) if offset else None
        if before == after:
            return F.conv2d(t, weight, bias, padding=before, groups=channels)
        return F.conv2d(F.pad(t, (before, after, before, after)), weight, bias, groups=channels)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale} (÷size²), pow={self.power}, minDiv={self.min_div}"


class LocallyConnected2d(nn.Module):
    """cuda-convnet's ``type=local``: a convolution whose filters are not shared across positions.

    Every output position (y, x) has its own ``out_channels`` filters of ``in_channels``×k×k and its own
    biases (``LocalUnsharedLayerParser`` makes ``modules × filters`` biases)::

        out[n, o, y, x] = bias[o, y, x] + Σ_{c, i, j} weight[o, y, x, c, i, j] · in_pad[n, c, y·s + i, x·s + j]

    ``weight`` is [out_channels, out_h, out_w, in_channels, k, k], ``bias`` [out_channels, out_h, out_w].
    The output side follows cuda-convnet's ceil rule (:func:`ceil_output_size`), so the layer is built
    for one input side. Weights are N(0, ``init_std``²) and biases 0, as cuda-convnet's ``initW``/``initB``.
    Computed as k² shifted views stacked into one [positions, N, C·k·k] tensor and one batched matrix
    product per position (``torch.bmm`` on contiguous operands; ``F.unfold`` and ``bmm`` on a permuted view
    were slower in a rough check on this 2-core CPU).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_size: int, *,
                 stride: int = 1, padding: int = 0, init_std: float = 0.01) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.input_size = stride, padding, input_size
        self.output_size = ceil_output_size(input_size, kernel_size, stride, padding)
        if self.output_size < 1:
            raise ValueError(f"a {kernel_size}×{kernel_size} local layer does not fit a {input_size}×{input_size} input")
        self.extra = ceil_extra(input_size, kernel_size, stride, padding)
        side = self.output_size
        self.weight = nn.Parameter(torch.empty(out_channels, side, side, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels, side, side))
        self.init_std = init_std
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, self.init_std)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.in_channels, self.input_size, self.input_size):
            raise ValueError(f"local layer built for {self.in_channels}×{self.input_size}×{self.input_size} input, got {tuple(x.shape[1:])}")
        p, e, k, s, side = self.padding, self.extra, self.kernel_size, self.stride, self.output_size
        n, span = x.shape[0], s * (side - 1) + 1
        padded = F.pad(x, (p, p + e, p, p + e)).permute(2, 3, 0, 1)  # [H, W, N, C]
        shifts = [padded[i:i + span:s, j:j + span:s] for i in range(k) for j in range(k)]  # k² × [side, side, N, C]
        patches = torch.stack(shifts, -1).reshape(side * side, n, -1)  # [L, N, C·k·k], c-major as the weight
        w = self.weight.permute(1, 2, 3, 4, 5, 0).reshape(side * side, -1, self.out_channels)  # [L, C·k·k, O]
        out = torch.bmm(patches, w)  # [L, N, O]
        return out.permute(1, 2, 0).reshape(n, self.out_channels, side, side) + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, input {self.input_size}×{self.input_size} → {self.output_size}×{self.output_size}")
