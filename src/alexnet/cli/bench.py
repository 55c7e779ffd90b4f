"""``alexnet bench``: time the training step, inference and the data path against the reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet import runtime
from alexnet.atomic import check_output_file, write_json
from alexnet.runtime import DEVICE_HELP
from alexnet.tools import bench

DESCRIPTION = (
    "Measure, in one run on this machine, the training step of each AlexNet variant (synthetic data), inference (batch-1 "
    "latency, batch throughput; eager, compiled, ONNX Runtime) and training from JPEG photographs end to end, against "
    "torchvision's alexnet with pytorch/examples' step and ImageFolder pipeline, and (decode) images/s per CPU core from an "
    "ImageFolder, the raw store and the JPEG store, with their sizes on disk; (serve) `alexnet serve` under load from "
    "concurrent clients on 127.0.0.1, dynamic batching against --max-batch-size 1, and a full queue's 503s. Medians over "
    "repetitions after warm-up; prints ratios ours / reference. See docs/PERFORMANCE.md.")
REPS_HELP = ("timed repetitions (step, decode, features: in rounds over their rows); the median is reported, and step's "
             "like-for-like ratio also by round with its 95 %% interval: where it is wide, the machine drifted, so add reps (default: 5)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure training/inference/data speed against torchvision's AlexNet and pytorch/examples",
                       description=DESCRIPTION)
    p.add_argument("part", nargs="?", default="all", choices=(*bench.PARTS, "all"),
                   help="what to measure: step, infer, data, decode, features, d2l, serve (alexnet serve under load), "
                        "or all (default)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto)")
    p.add_argument("--model", action="append", default=None, metavar="NAME",
                   help="a model to measure (repeatable; default: every AlexNet variant for step, alexnet for infer, "
                        "alexnet and alexnet_owt (torchvision's architecture) end to end in data, alexnet_owt untrained "
                        "for serve)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="training batch for step and data (default: 128)")
    p.add_argument("--infer-batch", type=int, default=64, metavar="N", help="inference throughput batch (default: 64)")
    p.add_argument("--precision", action="append", default=None, choices=runtime.PRECISIONS,
                   help=runtime.PRECISION_HELP + " (our runs; repeatable; default: fp32 and the best the device supports)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="run ours in channels_last (NHWC) layout (default: on)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on a small CPU)")
    p.add_argument("--lrn-kernel", choices=runtime.LRN_KERNELS, default="auto",
                   help="the LRN kernel of our training rows (default: auto, the rule alexnet train uses; step then adds "
                        "the paper's net with the eager kernel where auto compiles)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the naive paper net (F.local_response_norm, NCHW, fp32) in the step part")
    p.add_argument("--no-tune-allocator", dest="tune_allocator", action="store_false",
                   help="CPU: leave glibc's allocator at its defaults for our runs too")
    p.add_argument("--reps", type=int, default=5, metavar="N", help=REPS_HELP)
    p.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed repetitions first (default: 2)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data-loader processes; 0: decode in the main process, as train's --workers 0 (default: one per CPU core)")
    p.add_argument("--photos", type=int, default=512, metavar="N", help="JPEG photographs to make for the data part (default: 512)")
    p.add_argument("--data-batches", type=int, default=3, metavar="N",
                   help="batches in each timed chunk of the data part (default: 3; more on a fast GPU)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="keep the photographs and their packed store here (default: a folder in the temp dir)")
    p.add_argument("--clients", type=int, default=32, metavar="N",
                   help="serve: concurrent clients, each a thread sending its next request when answered (default: 32)")
    p.add_argument("--requests", type=int, default=4, metavar="N",
                   help="serve: requests each client sends in one window; --warmup and --reps count windows (default: 4)")
    p.add_argument("--serve-seconds", type=float, default=300.0, metavar="S",
                   help="serve: start no timed window after this many seconds of timing (default: 300)")
    p.add_argument("--quick", action="store_true", help="tiny batches, one repetition: checks that everything runs (seconds on a CPU)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE.json", help="also write the report (machine, config, rows) as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.json:
        check_output_file(args.json, args.force, ".json", "--json")  # before anything is measured
    config = bench.BenchConfig(
        parts=bench.PARTS if args.part == "all" else (args.part,), device=args.device, models=tuple(args.model or ()),
        batch_size=args.batch_size, infer_batch=args.infer_batch, precisions=tuple(args.precision or ()),
        channels_last=args.channels_last, compile=args.compile, quick=args.quick, warmup=args.warmup, reps=args.reps,
        baseline=args.baseline, tune_allocator=args.tune_allocator, lrn_kernel=args.lrn_kernel, workers=args.workers, photos=args.photos,
        data_batches=args.data_batches, data_dir=args.data_dir, serve_clients=args.clients, serve_requests=args.requests,
        serve_seconds=args.serve_seconds,
    )
    report = bench.run(config)
    print(bench.format_report(report))
    if args.json:
        write_json(args.json, report, overwrite=args.force)  # atomically
        print(f"wrote {args.json}")
    return 0
