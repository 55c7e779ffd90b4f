"""``alexnet info CHECKPOINT``: what a checkpoint says about itself."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from alexnet import checkpoint


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a checkpoint: model, classes, input, preprocessing, provenance",
                       description="Print what a checkpoint carries: the architecture and its options, the class "
                                   "names, the input size, the preprocessing and its statistics, and provenance.")
    p.add_argument("checkpoint", help="checkpoint file (.pt from train/import, or an exported .safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON (tensors summarised by shape)")
    p.set_defaults(func=run)


def describe(ckpt: checkpoint.Checkpoint) -> dict[str, Any]:
    """The checkpoint as plain values: tensors of the preprocessing shown by shape and a few values."""
    params = sum(v.numel() for v in ckpt.state_dict.values())
    out: dict[str, Any] = {
        "format_version": ckpt.format_version,  # the file's, not this package's
        "model": ckpt.model,
        "model_options": ckpt.model_options,
        "parameters": params,
        "input_size": ckpt.input_size,
        "num_classes": ckpt.num_classes,
        "classes": ckpt.classes,
        "preprocess": _plain(ckpt.preprocess),
        "provenance": _plain(ckpt.provenance),
    }
    if ckpt.train_state is not None:
        scalars = (int, float, str, bool)  # epoch, step, best, …; optimizer and RNG states are not shown
        out["train_state"] = {k: v for k, v in ckpt.train_state.items() if isinstance(v, scalars)}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 9:
            return [round(float(x), 4) for x in value.flatten()]
        return f"tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    ckpt = checkpoint.load(args.checkpoint)
    d = describe(ckpt)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    options = ", ".join(f"{k}={v}" for k, v in d["model_options"].items())
    print(f"checkpoint  {args.checkpoint} (format {d['format_version']})")
    print(f"model       {d['model']} ({options}), {d['parameters']:,} parameters")
    print(f"input       {ckpt.input_size}×{ckpt.input_size}")
    shown = ", ".join(ckpt.classes[:5]) + (f", … ({ckpt.num_classes} in all)" if ckpt.num_classes > 5 else "")
    print(f"classes     {ckpt.num_classes}: {shown}")
    pipe = d["preprocess"].get("pipeline") or {}
    if pipe:
        print("preprocess  " + ", ".join(f"{k}={v}" for k, v in pipe.items()))
    stats = d["preprocess"].get("stats") or {}
    if stats:
        print(f"statistics  mean image {stats.get('mean_image')}, channel mean {stats.get('channel_mean')}, "
              f"channel std {stats.get('channel_std')}, from {stats.get('count')} images")
    shown = {k: v for k, v in d["provenance"].items() if k != "config" and v is not None}
    if shown:
        print("provenance")
        for key, value in shown.items():
            print(f"  {key.replace('_', ' '):<20} {value}")
    if "train_state" in d:
        print("training    " + ", ".join(f"{k}={v}" for k, v in d["train_state"].items()))
    return 0
