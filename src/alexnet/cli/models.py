"""``alexnet models`` and ``alexnet summary``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from alexnet import models
from alexnet.atomic import atomic_write, check_output_file
from alexnet.errors import at_least, one_line
from alexnet.models.summary import format_macs, format_shape
from alexnet.reporting.architecture import architecture_svg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models with input size, parameters and MACs",
                       description="List the registered models: input size, parameters and multiply-accumulates per image.")
    p.set_defaults(func=run_models)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and MACs of a model",
                       description="Per-layer output shape, parameters and multiply-accumulates, with totals, "
                                   "as in the paper's walk-through (55×55×96 → 27×27×96 → … → 6×6×256).")
    p.add_argument("name", help=f"model name: {', '.join(models.names())}")
    p.add_argument("--input-size", type=int, default=None, metavar="N", help="square input side (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N", help="classes of the last layer (default: the model's own)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: model, input_size, layers[name, output_shape, params, macs, groups], totals")
    p.add_argument("--svg", type=Path, metavar="FILE", help="also draw the network as Figure 2 does (a box per layer, the two "
                                                            "towers side by side, where they exchange maps) into FILE")
    p.add_argument("--force", action="store_true", help="overwrite --svg's FILE if it exists")
    p.set_defaults(func=run_summary)


log = logging.getLogger(__name__)


def describe(name: str, num_classes: int | None = None, input_size: int | None = None) -> models.Summary:
    """The summary of a registered model, built on PyTorch's "meta" device: shapes without weights.

    Counting needs only shapes, and allocating and initialising VGG-19's 144 M weights and running
    it at 224 takes seconds on a CPU. A model whose layers have no meta kernels is built on the CPU.
    """
    try:
        try:
            with torch.device("meta"):
                return models.summarize(models.create(name, num_classes=num_classes), input_size)
        except NotImplementedError as e:
            log.debug("%s: no meta-device summary (%s); building it on the CPU", name, e)
            return models.summarize(models.create(name, num_classes=num_classes), input_size)
    except RuntimeError as e:  # PyTorch's shape errors, e.g. a map pooled to nothing
        size = input_size or models.create(name).input_size
        raise ValueError(f"{name} cannot take {size}×{size} input: {one_line(e, first_line=True)}") from None


def run_models(args: argparse.Namespace) -> int:
    names = models.names()
    width = max(len(n) for n in names)
    print(f"{'model':<{width}} {'input':>11} {'params':>12} {'MACs':>9}  description")
    for name in names:
        s = describe(name)
        size = f"{s.in_channels}×{s.input_size}×{s.input_size}"
        print(f"{name:<{width}} {size:>11} {s.total_params:>12,} {format_macs(s.total_macs):>9}  {models.entry(name).summary}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    if args.input_size is not None:
        at_least("--input-size", args.input_size)
    if args.num_classes is not None:
        at_least("--num-classes", args.num_classes)
    if args.svg is not None:
        check_output_file(args.svg, args.force, ".svg", "--svg")
    s = describe(args.name, args.num_classes, args.input_size)
    if args.svg is not None:
        atomic_write(args.svg, architecture_svg(s))
    if args.json:
        print(json.dumps(s.to_dict(), indent=2))
    else:
        print_summary(s)
    if args.svg is not None:  # on stderr under --json, whose stdout is the JSON alone
        print(f"wrote {args.svg}", file=sys.stderr if args.json else sys.stdout)
    return 0


def print_summary(s: models.Summary) -> None:
    """The layer table: output shape, parameters and multiply-accumulates per layer, then the totals."""
    width = max([10, *(len(r.name) for r in s.layers)])  # GoogLeNet's names: inception3a.branch2.1.conv
    print(f"{s.model}: input {s.in_channels}×{s.input_size}×{s.input_size}")
    print(f"{'layer':<{width}} {'output':>14} {'params':>12} {'MACs':>14}")
    for r in s.layers:
        print(f"{r.name:<{width}} {format_shape(r.output_shape):>14} {r.params:>12,} {r.macs:>14,}")
    print(f"{'total':<{width}} {'':>14} {s.total_params:>12,} {s.total_macs:>14,}  ({format_macs(s.total_macs)} MACs)")
    print(f"training: {2 * s.training_macs / 1e9:.3g} GFLOP per image (forward, input and weight gradients)")
