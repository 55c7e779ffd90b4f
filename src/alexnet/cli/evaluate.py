"""``alexnet eval``: top-1/top-5 error of a checkpoint or an ensemble (§4.1, §6)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alexnet.atomic import refuse_existing
from alexnet.data.sources import SPEC_HELP
from alexnet.errors import AlexNetError, at_least, counted, file_above, worker_count
from alexnet.inference.evaluate import EvalConfig, evaluate_checkpoints
from alexnet.reporting.figures import save_confusion_plot
from alexnet.runtime import DEVICE_HELP, RuntimeSettings, apply_process_settings, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 error of checkpoints (several: an ensemble) on a data split",
                       description="Top-1 and top-5 error and accuracy, images, per-class accuracy. Several "
                                   "checkpoints form an ensemble that averages their softmax outputs (§6's 5- and 7-CNN "
                                   "results); --views 10 averages the paper's ten crops (§4.1).")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="C", help="checkpoint file(s); several are an ensemble")
    p.add_argument("--data", metavar="PATH",
                   help="data set: " + SPEC_HELP + " (default: the one the first checkpoint was trained on)")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="split to evaluate (default: val, the split ImageNet's results are reported on; where there is none, or it is "
                        "empty, test)")
    p.add_argument("--views", type=int, choices=(1, 10), default=1, help="1: centre crop; 10: four corners + centre and their reflections")
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="images per batch (default 128)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="decoding processes for image folders (default 0)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: top1_error, top5_error, top1_accuracy, top5_accuracy, images, views, checkpoints, per_class")
    p.add_argument("--plots", metavar="DIR", default=None, help="write confusion_matrix.png into DIR")
    p.add_argument("--force", action="store_true", help="overwrite DIR/confusion_matrix.png if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.data import open_dataset
    from alexnet.inference.samples import trained_on

    plot = Path(args.plots) / "confusion_matrix.png" if args.plots else None
    if plot is not None:
        if above := file_above(plot):
            raise AlexNetError(f"--plots {args.plots}: {above} is a file; give a folder")
        if plot.is_dir():  # even --force cannot write the figure there: say so before the evaluation
            raise AlexNetError(f"--plots {args.plots}: {plot} is a folder; remove it or choose another --plots")
        refuse_existing(plot, args.force, None)
    at_least("--batch-size", args.batch_size)
    worker_count("--workers", args.workers)
    args.data = args.data or trained_on(args.checkpoint[0])
    dataset = open_dataset(args.data)
    split = args.split or ("val" if len(dataset.splits.get("val") or ()) else "test")
    images = dataset.split(split)
    config = EvalConfig(views=args.views, batch_size=args.batch_size, device=str(resolve_device(args.device)), workers=args.workers)
    apply_process_settings(RuntimeSettings(config.device))  # the tuned allocator: 10 views of batch 128 are 1,280 images a call
    scores = evaluate_checkpoints(args.checkpoint, images, config)
    scores.extra.update({"data": args.data, "split": split})
    if args.plots:
        save_confusion_plot(scores, plot)
    if args.json:
        print(json.dumps(scores.to_dict(), indent=2))
        return 0
    kind = f"ensemble of {len(args.checkpoint)}" if len(args.checkpoint) > 1 else args.checkpoint[0]
    print(f"{kind} on {args.data} [{split}], {scores.images} images, {counted(scores.views, 'view')}")
    print(f"top-1 error {100 * scores.top1_error:6.2f} %   accuracy {100 * scores.top1_accuracy:6.2f} %")
    print(f"top-5 error {100 * scores.top5_error:6.2f} %   accuracy {100 * scores.top5_accuracy:6.2f} %")
    if len(scores.classes) <= 30:
        print(f"{'class':<24} {'images':>7} {'top-1 acc':>10}")
        for name, n, acc in zip(scores.classes, scores.per_class_images, scores.per_class_accuracy):
            print(f"{name[:24]:<24} {n:>7} {'-' if acc is None else f'{100 * acc:.2f} %':>10}")
    else:
        print("per-class accuracy: --json lists all classes")
    if args.plots:
        print(f"wrote {Path(args.plots) / 'confusion_matrix.png'}")
    return 0
