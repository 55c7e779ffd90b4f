"""Where a training step's time goes: torch.profiler over one step of ours and of the reference.

    PYTHONPATH=src python3 benchmarks/profile_step.py --batch-size 64 [--precision bf16] [--plain] [--device cuda]

``--plain`` profiles the naive version of the paper's net (F.local_response_norm, NCHW, fp32, SGD
loop): the profile that showed ~40 % of the step in LRN's avg_pool3d, pow, mul and div.
``--like-for-like`` profiles torchvision's net on our step at the same precision and layout instead
of pytorch/examples' fp32 NCHW step (issue 24's comparison), and ``--shapes`` splits each operator by
its input shapes (which layer it is).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from alexnet import models, runtime
from alexnet.tools.bench.step import plain_lrn, reference_model, reference_step, synthetic_batch, train_step

# the operators that do the multiply-accumulates (their self time; the wrappers around them have next to none)
GEMM_OPS = {"aten::mkldnn_convolution", "aten::cudnn_convolution", "aten::convolution_backward", "aten::mm", "aten::addmm", "aten::bmm"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default="alexnet")
    p.add_argument("--precision", default="fp32", choices=runtime.PRECISIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--plain", action="store_true", help="the naive version instead of the fast path")
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--like-for-like", action="store_true", help="torchvision's net on our step, at --precision")
    p.add_argument("--shapes", action="store_true", help="one row per operator and input shapes")
    p.add_argument("--steps", type=int, default=1, help="profile this many steps; the table's times are their sum")
    args = p.parse_args()
    device = runtime.resolve_device(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"

    runtime.apply_process_settings(runtime.RuntimeSettings(str(device)))  # as alexnet train: the allocator, cudnn.benchmark
    ref = reference_model()
    x, y = synthetic_batch(ref, args.batch_size, 1000)
    if args.like_for_like:
        ref_step = train_step(ref, runtime.RuntimeSettings(device=str(device), precision=args.precision))
        x = x.contiguous(memory_format=torch.channels_last)
        runs = {f"torchvision's net on our step, {args.precision} channels_last": lambda: ref_step(x, y)}
    else:
        step = reference_step(ref, device)
        runs = {"reference (torchvision, fp32 NCHW)": lambda: step(x, y)}

    model = models.create(args.model)
    ox, oy = synthetic_batch(model, args.batch_size, model.num_classes)
    if args.plain:
        ours = reference_step(plain_lrn(model), device)
        runs[f"{args.model} plain"] = lambda: ours(ox, oy)
    else:
        fast = runtime.RuntimeSettings(device=str(device), precision=args.precision)
        train = train_step(model, fast)  # the step alexnet train runs
        ox = ox.contiguous(memory_format=torch.channels_last)
        runs[f"{args.model} fast path {args.precision}"] = lambda: train(ox, oy)

    for name, fn in runs.items():
        fn(), fn()  # warm-up: allocator, oneDNN/cuDNN primitive selection
        with profile(activities=activities, record_shapes=args.shapes) as prof:
            for _ in range(args.steps):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        print(f"== {name}, batch {args.batch_size}, {args.steps} step(s)")
        events = prof.key_averages(group_by_input_shape=args.shapes)
        print(events.table(sort_by=sort, row_limit=args.rows))
        total = sum(getattr(e, sort) for e in events)
        gemm = sum(getattr(e, sort) for e in events if e.key in GEMM_OPS)
        print(f"convolutions and matrix products (the LRN's window sums included): {gemm / 1e3 / args.steps:.0f} ms "
              f"of {total / 1e3 / args.steps:.0f} ms a step ({100 * gemm / total:.0f} %)\n")


if __name__ == "__main__":
    main()
