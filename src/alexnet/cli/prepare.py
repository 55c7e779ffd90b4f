"""``alexnet prepare SRC OUT``: decode, validate and down-sample every image once into a packed store."""

from __future__ import annotations

import argparse

from alexnet.data.images import MAX_PIXELS
from alexnet.data.jpeg import DEFAULT_QUALITY, ENCODINGS
from alexnet.data.prepare import PrepareConfig, prepare
from alexnet.errors import AlexNetError, worker_count


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="decode, validate and down-sample a data set once into a packed, memory-mapped store",
        description="Decode every image of SRC once, validate it, down-sample it as the paper did (§2: shorter "
                    "side to S, central S×S crop) and write a packed store to OUT: uint8 images for "
                    "np.memmap, labels, class names, training-set statistics (mean image, channel mean/std, RGB "
                    "eigenvalues/eigenvectors) and manifest.json. Work happens in OUT.partial; an interrupted run "
                    "resumes when the same command is given again. Use the store with --data OUT.",
        epilog="Bad images (unreadable, zero-byte, not an image, truncated, corrupt, decompression bombs) are "
               "reported with their path and reason; without --skip-bad the run stops after the scan, naming the "
               "first and the count (the good images are kept for the rerun). See docs/DATA.md.")
    p.add_argument("source", metavar="SRC",
                   help="the data to pack: an image folder in ImageNet layout (ROOT/train/CLASS/*.jpg, val/, test/, "
                        "or ImageNet's flat val/ with its label file), a cifar-10-batches-py folder, a folder of "
                        "MNIST/Fashion-MNIST IDX files, 'digits', or another store")
    p.add_argument("out", metavar="OUT", help="the store folder to create (must not exist unless --force)")
    p.add_argument("--size", type=int, default=256, metavar="S",
                   help="side of the stored square images: shorter side to S, central S×S crop (default: 256, §2)")
    p.add_argument("--encoding", choices=ENCODINGS, default="raw",
                   help="raw: uint8 images read by np.memmap, the fastest to load (196,608 bytes a 256² image); "
                        "jpeg: JPEG records and an offsets index, decoded by the loader (about 1/13 the size at "
                        "quality 90: for data sets that do not fit in RAM) (default: raw)")
    p.add_argument("--quality", type=int, default=None, metavar="Q",
                   help=f"JPEG quality 1-100 of --encoding jpeg (default: {DEFAULT_QUALITY}, as FFCV)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="processes that decode and down-sample; 0 decodes in the main process (default: 2)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave bad images out and record each (path, reason) in manifest.json instead of stopping")
    p.add_argument("--force", action="store_true",
                   help="replace an existing store at OUT, and start over if OUT.partial is from a different "
                        "source or size (never removes a file that prepare did not write)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"reject images with more pixels as decompression bombs (default: {MAX_PIXELS:,})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.quality is not None and args.encoding != "jpeg":
        raise AlexNetError(f"--quality {args.quality}: only --encoding jpeg has a quality (the raw store is lossless)")
    worker_count("--workers", args.workers)
    config = PrepareConfig(source=args.source, out=args.out, size=args.size, workers=args.workers,
                           skip_bad=args.skip_bad, force=args.force, max_pixels=args.max_pixels,
                           progress=not args.no_progress, encoding=args.encoding,
                           quality=DEFAULT_QUALITY if args.quality is None else args.quality)
    manifest = prepare(config)
    counts = ", ".join(f"{name} {entry['count']:,}" for name, entry in manifest["splits"].items())
    encoding = f", JPEG quality {manifest['quality']}" if manifest["encoding"] == "jpeg" else ""
    print(f"wrote {args.out}: {counts} images of {manifest['size']}×{manifest['size']}×{manifest['channels']}{encoding}, "
          f"{len(manifest['classes'])} classes")
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} bad images (listed in {args.out}/manifest.json), e.g. "
              f"{manifest['skipped'][0]['path']}: {manifest['skipped'][0]['reason']}")
    return 0
