"""``alexnet predict``: the top-k labels and probabilities of image files."""

from __future__ import annotations

import argparse
import json
import sys

from alexnet.inference.evaluate import classify_images
from alexnet.runtime import DEVICE_HELP, RuntimeSettings, apply_process_settings, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k labels and probabilities of image files",
                       description="Classify image files (JPEG, PNG, BMP, WebP, TIFF; any colour mode, EXIF-rotated) "
                                   "with a checkpoint's own preprocessing. A file that is not a readable image gets a "
                                   "one-line error, the others are still classified, and the exit code is 1.")
    p.add_argument("--checkpoint", required=True, metavar="C", help="checkpoint file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="labels per image (default 5)")
    p.add_argument("--views", type=int, choices=(1, 10), default=1, help="1: centre crop; 10: the paper's ten views averaged")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto)")
    p.add_argument("--json", action="store_true",
                   help='print JSON: [{"image", "predictions": [{"index", "label", "probability"}]} or {"image", "error"}]')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    apply_process_settings(RuntimeSettings(str(device)))
    results = classify_images(args.images, args.checkpoint, topk=args.topk, views=args.views, device=device)
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"alexnet: error: {r.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            if r.error is not None:
                continue
            print(format_prediction(r))
    return 1 if failed else 0


def format_prediction(r) -> str:
    """``IMAGE`` then one line per label, most probable first: ``  97.31 %  cat`` (what demo prints too)."""
    lines = [r.image] + [f"  {100 * p['probability']:6.2f} %  {p['label']}" for p in r.predictions]
    return "\n".join(lines)
