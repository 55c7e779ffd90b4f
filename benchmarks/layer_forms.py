"""The paper net's two costly layers, each computed the ways it can be, timed on one machine (issue 24).

    PYTHONPATH=src python3 benchmarks/layer_forms.py [--device cpu|cuda] [--batch-size 128] [--precision fp32 --precision bf16]
        [--part towers|window|layer|rnorm ...] [--reps 5] [--quick] [--json FILE]

* **Towers** (§3.2): conv2, conv4 and conv5 of the paper's ``alexnet`` (channels_last, forward +
  backward) as one ``groups=2`` convolution (what the model runs), as two convolutions on the
  halves, concatenated, and, for the arithmetic's price, one ungrouped convolution with the same
  multiply-accumulates (half the input channels). Grouped ≈ dense says the towers cost no more
  than their arithmetic.
* **The LRN's window sum**: the grouped 1×1 convolution with a banded weight (what the model runs),
  an ungrouped 1×1 with the block-diagonal weight, ``addmm`` on the [N·H·W, C] view, ``avg_pool1d``
  along the channels, and shifted adds; forward only, on conv1's and conv2's maps.
* **cuda-convnet's same-map rnorm** (``alexnet_cudaconvnet``'s rnorm2): the formula through autograd
  against the layer with each kernel, forward + backward.
* **The LRN layer** (:mod:`alexnet.models.lrn`), forward + backward through autograd, with the
  eager and the compiled kernel, a compiled one-pass stencil (CPU, not with --quick; rejected:
  slower), and **one pass** over the same map (``x + 1``: read it, write it),
  the memory floor each pass of the LRN pays.

Every form but those marked "for scale" is checked equal to the model's before it is timed (fp32: 1e-4; bf16: 2e-2, relative to
the largest value). Times are medians of ``--reps`` after two untimed calls, in ms; rows of one table
are timed one after the other on a quiet machine (compare ratios within a run). The JSON line at the
end holds every figure; docs/PERFORMANCE.md has the results and the rule they gave.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alexnet import runtime
from alexnet.models import lrn
from alexnet.tools.bench.timing import measure

TOWERS = {"conv2": (96, 256, 5, 2, 27), "conv4": (384, 384, 3, 1, 13), "conv5": (384, 256, 3, 1, 13)}  # C_in, C_out, k, pad, size
PARTS = ("towers", "window", "layer", "rnorm")
LRNS = {"norm1": (96, 55), "norm2": (256, 27)}  # channels, size of the maps the paper's two LRNs see
CL = torch.channels_last


def timed(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median ms of ``reps`` synchronised calls after two untimed ones (the bench's ``measure``)."""
    return measure(fn, device, warmup=2, reps=reps).median * 1e3


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    return bool(((a.float() - b.float()).abs().max() <= tol * b.float().abs().max()).item())


def tower_forms(name: str, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    """Forward + backward of one grouped layer three ways; each returns the input's gradient."""
    c_in, c_out, k, pad, size = TOWERS[name]
    x = torch.randn(batch, c_in, size, size, device=device).to(memory_format=CL)
    w = torch.randn(c_out, c_in // 2, k, k, device=device) * 0.02
    g = torch.randn(batch, c_out, size, size, device=device).to(memory_format=CL)
    half = torch.randn(batch, c_in // 2, size, size, device=device).to(memory_format=CL)

    def run(forward: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            leaf = inp.detach().requires_grad_(True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = forward(leaf)
            out.backward(g.to(out.dtype))
            return leaf.grad
        return call

    grouped = run(lambda t: F.conv2d(t, w, padding=pad, groups=2), x)
    split = run(lambda t: torch.cat([F.conv2d(t[:, : c_in // 2], w[: c_out // 2], padding=pad),
                                     F.conv2d(t[:, c_in // 2:], w[c_out // 2:], padding=pad)], 1), x)
    dense = run(lambda t: F.conv2d(t, w, padding=pad), half)
    return {"grouped (the model)": grouped, "two convolutions": split, "one dense conv, same MACs (for scale)": dense}


def window_forms(name: str, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    """The LRN's window sum over channels (n = 5, groups 2) five ways, forward; each returns [N, C, H, W] or its view."""
    channels, size = LRNS[name]
    t = torch.rand(batch, channels, size, size, device=device).to(memory_format=CL).to(dtype)
    weight, bias = lrn._window_weights(channels, 2, 2, 2, 1.0, 2.0, dtype, device)
    block = torch.block_diag(weight[: channels // 2, :, 0, 0], weight[channels // 2:, :, 0, 0])
    rows = t.shape[0] * size * size
    flat = lambda: t.permute(0, 2, 3, 1).reshape(rows, channels)
    as_map = lambda v: v.reshape(t.shape[0], size, size, channels).permute(0, 3, 1, 2)

    def pooled() -> torch.Tensor:
        v = flat().reshape(rows * 2, 1, channels // 2)
        return as_map(F.avg_pool1d(v, 5, 1, 2, count_include_pad=True).reshape(rows, channels) * 5 + 2.0)

    def shifted() -> torch.Tensor:
        v = F.pad(flat().reshape(rows * 2, channels // 2), (2, 2))
        out = v[:, 0:-4] + v[:, 1:-3]
        for i in range(2, 5):
            out += v[:, i: v.shape[1] - 4 + i]
        return as_map((out + 2.0).reshape(rows, channels))

    return {
        "grouped 1×1 conv (the model)": lambda: F.conv2d(t, weight, bias, groups=2),
        "ungrouped 1×1 conv, block-diagonal": lambda: F.conv2d(t, block[:, :, None, None], bias),
        "addmm on the [N·H·W, C] view": lambda: as_map(torch.addmm(bias, flat(), block.t())),
        "avg_pool1d along channels": pooled,
        "shifted adds": shifted,
    }


def lrn_forms(name: str, batch: int, dtype: torch.dtype, device: torch.device, quick: bool = False) -> dict[str, Callable[[], torch.Tensor]]:
    """The paper's LRN layer, forward + backward, with each kernel; and one pass over the map."""
    channels, size = LRNS[name]
    x = (torch.rand(batch, channels, size, size, device=device) * 30).to(memory_format=CL).to(dtype)
    g = torch.randn_like(x)
    layer = lrn.LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)
    forms = {"eager kernel": with_kernel("eager", layer, x, g), "compiled kernel": with_kernel("compiled", layer, x, g)}
    if device.type == "cpu" and not quick:  # a CPU question (inductor's C++), and two compiles the dry runs can skip
        forms["compiled stencil, one pass each way"] = with_kernel("eager", _StencilLRN.apply, x, g)
    return forms | {"one pass (x + 1) (for scale)": lambda: x + 1}


def _stencil_sum(t: torch.Tensor, front: int, back: int, groups: int = 2) -> torch.Tensor:
    """The window sum over channels as shifted slices of the [N·H·W, C] view, zero across group edges:
    under torch.compile a stencil inside the elementwise pass, with no GEMM and no map of a² written."""
    n, c, h, w = t.shape
    rows = F.pad(t.permute(0, 2, 3, 1).reshape(-1, c), (front, back))
    pos = torch.arange(c, device=t.device) % (c // groups)
    out = torch.zeros((), dtype=t.dtype, device=t.device)
    for i in range(front + back + 1):
        inside = ((pos + i - front >= 0) & (pos + i - front < c // groups)).to(t.dtype)
        out = out + rows[:, i:i + c] * inside
    return out.reshape(n, h, w, c).permute(0, 3, 1, 2)


def _stencil_forward(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = 2.0 + 2e-5 * _stencil_sum(a * a, 2, 2)  # the paper's k, α/n; n = 5, groups 2
    return a * torch.rsqrt(s * torch.sqrt(s)), s


def _stencil_backward(g: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r = torch.rsqrt(s * torch.sqrt(s))
    return -2 * 2e-5 * 0.75 * _stencil_sum(g * a * r / s, 2, 2) * a + g * r


class _StencilLRN(torch.autograd.Function):
    """The LRN as one compiled pass forward (s and b from a) and one backward (the terms recomputed at
    each neighbour): 4 map reads and writes instead of the compiled kernel's 18, if inductor's stencil
    code ran at the memory's rate. Measured slower (docs/PERFORMANCE.md), so not the model's."""

    compiled: dict = {}

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        if not _StencilLRN.compiled:
            _StencilLRN.compiled = {"f": torch.compile(_stencil_forward, dynamic=True),
                                    "b": torch.compile(_stencil_backward, dynamic=True)}
        y, s = _StencilLRN.compiled["f"](x)
        ctx.save_for_backward(x, s)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        return _StencilLRN.compiled["b"](g.contiguous(memory_format=CL), x, s)


def with_kernel(kind: str, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: torch.Tensor
                ) -> Callable[[], torch.Tensor]:
    """A call of ``forward`` + backward on ``x`` under the LRN kernel ``kind``; it returns x's gradient."""
    def call() -> torch.Tensor:
        runtime.set_lrn_kernel(kind)
        leaf = x.detach().requires_grad_(True)
        forward(leaf).backward(g)
        return leaf.grad
    return call


def same_map_forms(batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    """cuda-convnet's same-map rnorm of ``alexnet_cudaconvnet`` (on conv2's 256 maps of 27×27), forward +
    backward: the formula through autograd, and the layer with each kernel."""
    from alexnet.models.cudaconvnet_layers import SameMapResponseNorm

    x = (torch.randn(batch, 256, 27, 27, device=device) * 30).to(memory_format=CL).to(dtype)
    g = torch.randn_like(x)
    layer = SameMapResponseNorm(5, 0.001, 0.75, 1.0)
    return {"formula (pad, avg_pool2d, pow; autograd)": with_kernel("eager", layer.plain, x, g),
            "eager kernel": with_kernel("eager", layer, x, g), "compiled kernel": with_kernel("compiled", layer, x, g)}


def table(title: str, forms: dict[str, Callable[[], torch.Tensor]], dtype: torch.dtype, device: torch.device,
          reps: int, check: bool = True) -> dict[str, float | None]:
    """Check each form against the first (but those "for scale"), time it; print and return ms per form (None: not equal, not timed)."""
    first = next(iter(forms.values()))()
    out: dict[str, float | None] = {}
    print(f"\n{title}")
    for label, fn in forms.items():
        try:
            result = fn()
            if check and not label.endswith("(for scale)") and not close(result, first, dtype):
                print(f"  {label:<40} NOT EQUAL to the model's form: not timed")
                out[label] = None
                continue
            out[label] = timed(fn, device, reps)
            print(f"  {label:<40} {out[label]:9.1f} ms")
        except Exception as e:  # a form a backend lacks (e.g. avg_pool1d in bf16) is reported, not fatal
            print(f"  {label:<40} failed: {str(e).splitlines()[0][:80]}")
            out[label] = None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", action="append", choices=("fp32", "bf16"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--part", action="append", choices=PARTS, help="tables to run (default: all)")
    p.add_argument("--quick", action="store_true", help="batch 2, one repetition: checks that every form runs")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args()
    device = runtime.resolve_device(args.device)
    batch, reps = (2, 1) if args.quick else (args.batch_size, args.reps)
    runtime.apply_process_settings(runtime.RuntimeSettings(str(device)))
    before, parts = runtime.lrn_kernel(), set(args.part or PARTS)
    results: dict = {"device": str(device), "batch": batch, "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        for precision in args.precision or ["fp32", "bf16"]:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            if "towers" in parts:
                for name in TOWERS:
                    results[f"{precision} {name} towers"] = table(f"{precision}, batch {batch}: {name}, forward + backward",
                                                                  tower_forms(name, batch, dtype, device), dtype, device, reps)
            for name in LRNS:
                if "window" in parts:
                    results[f"{precision} {name} window sum"] = table(
                        f"{precision}, batch {batch}: {name}'s window sum, forward", window_forms(name, batch, dtype, device),
                        dtype, device, reps)
                if "layer" in parts:
                    results[f"{precision} {name} layer"] = table(
                        f"{precision}, batch {batch}: {name}, the layer forward + backward", lrn_forms(name, batch, dtype, device, args.quick),
                        dtype, device, reps)
            if "rnorm" in parts:
                results[f"{precision} rnorm2 layer"] = table(
                    f"{precision}, batch {batch}: alexnet_cudaconvnet's rnorm2, forward + backward", same_map_forms(batch, dtype, device),
                    dtype, device, reps)
    finally:
        runtime.set_lrn_kernel(before)
    line = json.dumps(results)
    if args.json:
        args.json.write_text(line + "\n")
    print("\n" + line)


if __name__ == "__main__":
    main()
