"""``alexnet features``: one row per image of a layer's activations (fc7 by default), an index and a record."""

from __future__ import annotations

import argparse
import sys
import time

from alexnet import runtime
from alexnet.data.sources import SPEC_HELP
from alexnet.inference.features import DEFAULT_LAYER, DTYPES, FeatureConfig, FeaturePaths, extract
from alexnet.inference.samples import trained_on
from alexnet.runtime import DEVICE_HELP, PRECISION_HELP, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="write a layer's activations (fc7 by default) for every image of a split",
                       description="Run a checkpoint over a data set's split (its own centre-crop preprocessing) and "
                                   "write OUT.npy (float32 [images, D], memory-mappable), OUT.csv (row, path, label, "
                                   "class) and OUT.json (what made it). Interrupted runs continue where they stopped "
                                   "when run again with the same arguments; finished files are kept unless --force.")
    p.add_argument("--checkpoint", required=True, metavar="C", help="checkpoint file")
    p.add_argument("--data", metavar="PATH",
                   help="data set: " + SPEC_HELP + " (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default=None, help="split to read (default: train, else val, else test)")
    p.add_argument("--layer", default=DEFAULT_LAYER,
                   help="features (the model's forward_features: fc7 for AlexNets, the default), fc6, fc7, conv5, pool5, … "
                        "(convN/fcN: after their ReLU); a wrong name lists the valid ones")
    p.add_argument("--out", required=True, metavar="OUT.npy", help="the features file; OUT.csv and OUT.json go beside it")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored precision (default float32)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="images per batch (default 128)")
    p.add_argument("--precision", choices=runtime.PRECISIONS, default="fp32",
                   help=PRECISION_HELP + " (default: fp32; other precisions are not bit-equal)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="decoding processes for image folders (default 0)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="the model's threads on a CPU (default: torch's, one per core); beside --workers, "
                        "fewer can pay where decoding is the bottleneck (docs/TRANSFER.md)")
    p.add_argument("--force", action="store_true",
                   help="replace this feature set's finished files (and start over from an unfinished run of other "
                        "features); no other file is removed")
    p.set_defaults(func=run)


def default_split(data: str) -> str:
    from alexnet.data import open_dataset

    splits = open_dataset(data).splits
    return next((s for s in ("train", "val", "test") if s in splits), "train")


class Progress:
    """A tqdm bar in images with images/s on a terminal; a line every 10 % otherwise. The first call says
    where the job starts, so a resumed job's rate counts only the images computed now."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.shown = label, None, -1
        self.start, self.first, self.done = time.perf_counter(), None, 0

    @property
    def computed(self) -> int:
        """Images computed by this process."""
        return self.done - (self.first or 0)

    def __call__(self, done: int, total: int) -> None:
        if self.first is None:  # where the job starts: nothing computed yet to show
            self.first, self.start, self.done = done, time.perf_counter(), done
            return
        self.done = done
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=self.first, unit="img", desc=self.label, file=sys.stderr)
            self.bar.update(done - self.bar.n)
            return
        tenth = 10 * done // total
        if tenth > self.shown:
            self.shown = tenth
            print(f"{self.label}: {done}/{total} images ({self.rate():.1f} images/s)", file=sys.stderr)

    def rate(self) -> float:
        return self.computed / max(time.perf_counter() - self.start, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    config = FeatureConfig(layer=args.layer, dtype=args.dtype, batch_size=args.batch_size, device=str(resolve_device(args.device)),
                           precision=args.precision, workers=args.workers,
                           threads=args.threads)
    FeaturePaths.of(args.out)  # a wrong name is an error before the data set is opened
    runtime.apply_process_settings(config.runtime_settings())
    args.data = args.data or trained_on(args.checkpoint)
    split = args.split or default_split(args.data)
    progress = Progress(f"features {split}")
    try:
        record = extract(args.checkpoint, args.data, split, args.out, config, overwrite=args.force, on_batch=progress)
    except KeyboardInterrupt:  # said once, by the CLI's handler
        raise KeyboardInterrupt(f"interrupted after {progress.done} rows; run the same command again to continue from "
                                f"{FeaturePaths.of(args.out).progress}") from None
    finally:
        progress.close()
    seconds = time.perf_counter() - progress.start
    paths = FeaturePaths.of(args.out)
    rows, dim = record["shape"]
    resumed = f", {progress.computed} of them now" if progress.computed != rows else ""
    print(f"{args.checkpoint} {record['layer']} on {args.data} [{split}]: {rows} × {dim} {record['dtype']}{resumed} "
          f"in {seconds:.1f} s ({progress.rate():.1f} images/s)")
    print(f"wrote {paths.array}, {paths.index}, {paths.record}")
    return 0
