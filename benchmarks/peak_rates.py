"""What this machine multiplies at: the ceilings the step's ratios are bounded by.

    PYTHONPATH=src python3 benchmarks/peak_rates.py [--device cuda] [--quick]

Times (median of 5 after 2 warm-up calls) a 4096² matrix product in fp32 and bf16, and the
forward pass of the paper's conv3 (batch 128, 256 → 384 maps, 3×3 at 13×13: 38 GFLOP) in fp32
NCHW (the reference's layout), fp32 channels_last and bf16 channels_last, and prints TFLOP/s. On a
CPU the fp32 matrix product is MKL's and the convolutions are oneDNN's; on CUDA both are cuBLAS/cuDNN.
``--quick`` shrinks both (512², batch 8) to check that it runs, in seconds; its rates mean nothing.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from alexnet.runtime import resolve_device
from alexnet.tools.bench.timing import matmul_tflops, measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs; the rates mean nothing")
    args = p.parse_args()
    n, batch = (512, 8) if args.quick else (4096, 128)
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 256, 13, 13, generator=g).to(device)
    w = torch.randn(384, 256, 3, 3, generator=g).to(device)
    conv = 2 * batch * 13 * 13 * 384 * 256 * 9
    cl = torch.channels_last
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for dtype in (torch.float32, torch.bfloat16):
        print(f"{f'matmul {n}² ' + str(dtype).removeprefix('torch.'):<34} {matmul_tflops(device, dtype, n=n):7.3f} TFLOP/s")
    convs = {
        "conv3 forward fp32 NCHW": lambda: F.conv2d(x, w, padding=1),
        "conv3 forward fp32 channels_last": lambda x=x.to(memory_format=cl), w=w.to(memory_format=cl): F.conv2d(x, w, padding=1),
        "conv3 forward bf16 channels_last": lambda x=x.bfloat16().to(memory_format=cl), w=w.bfloat16().to(memory_format=cl):
            F.conv2d(x, w, padding=1),
    }
    for name, fn in convs.items():
        m = measure(fn, device, warmup=2, reps=5)
        print(f"{name:<34} {conv / m.median / 1e12:7.3f} TFLOP/s  ({m.median * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
