"""``alexnet visualize``: the paper's figures, training curves, the confusion matrix, the run report."""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.atomic import check_output_file, refuse_existing
from alexnet.cli.help import ShowDefaults, seed
from alexnet.data.sources import SPEC_HELP
from alexnet.errors import AlexNetError, at_least
from alexnet.runtime import DEVICE_HELP, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="figures: conv1 kernels, neighbours, predictions, curves, confusion; report.html",
                       description="Draw a figure as a PNG (or rewrite a run's report.html). Existing files are not "
                                   "overwritten without --force.")
    figures = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)

    def figure(name: str, help: str, *, data: bool) -> argparse.ArgumentParser:
        f = figures.add_parser(name, help=help, description=help, formatter_class=ShowDefaults)
        f.add_argument("checkpoint", type=Path, help="a checkpoint (e.g. RUN/checkpoints/best.pt)")
        if data:
            f.add_argument("--data", help=SPEC_HELP + " (default: the data the checkpoint was trained on)")
            f.add_argument("--device", default="cpu", help=DEVICE_HELP)
        f.add_argument("--out", type=Path, required=True, help="PNG file to write")
        f.add_argument("--force", action="store_true", help="overwrite --out if it exists")
        return f

    figure("filters", "conv1's kernels as colour patches, one block per tower (the paper's Fig. 3)", data=False) \
        .set_defaults(func=run_filters)
    f = figure("neighbors", "test images and the training images nearest to each in fc7 (Euclidean; Fig. 4, right)", data=True)
    f.add_argument("--queries", type=int, default=5, help="query images, drawn at random from the test split")
    f.add_argument("-k", "--neighbors", type=int, default=6, help="training images shown per query")
    f.add_argument("--split", help="split to draw queries from (default: test, else val)")
    f.add_argument("--train-limit", type=int, default=0, metavar="N", help="search only the first N training images (0: all)")
    f.add_argument("--seed", type=seed, default=0, help="which images are drawn")
    f.set_defaults(func=run_neighbors)
    f = figure("predictions", "test images with their top-5 labels and probabilities as bars, the true one red (Fig. 4, left)",
               data=True)
    f.add_argument("--images", type=int, default=8, help="images shown, drawn at random")
    f.add_argument("--split", help="split to draw from (default: test, else val)")
    f.add_argument("--seed", type=seed, default=0, help="which images are drawn")
    f.set_defaults(func=run_predictions)
    f = figure("confusion", "the confusion matrix of the centre-crop predictions on a split", data=True)
    f.add_argument("--split", help="split (default: test, else val)")
    f.set_defaults(func=run_confusion)

    f = figures.add_parser("curves", help="loss and error per epoch of a training run (its metrics.jsonl)",
                           description="Loss and error per epoch of a training run (its metrics.jsonl).")
    f.add_argument("run", type=Path, help="a run folder")
    f.add_argument("--out", type=Path, required=True, help="PNG file to write")
    f.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    f.set_defaults(func=run_curves)
    f = figures.add_parser("report", help="(re)write a run folder's self-contained report.html",
                           description="Write RUN/report.html: final numbers, curves, conv1 kernels, confusion matrix, "
                                       "sample predictions and the configuration, with every image embedded.")
    f.add_argument("run", type=Path, help="a run folder")
    f.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default: cpu)")
    f.add_argument("--force", action="store_true", help="rewrite report.html (and its figures) if the run has one")
    f.set_defaults(func=run_report)


def _out(args: argparse.Namespace) -> Path:
    return check_output_file(args.out, args.force, ".png", "--out")


def _loaded_split(args: argparse.Namespace):
    from alexnet.inference import samples

    loaded = samples.load_checkpoint(args.checkpoint, str(resolve_device(args.device)))
    splits = samples.open_splits(loaded, args.data, str(args.checkpoint))
    name, images = samples.pick_split(splits, getattr(args, "split", None), args.data or loaded.data_spec)
    return loaded, splits, name, images


def run_filters(args: argparse.Namespace) -> int:
    from alexnet.inference.samples import load_checkpoint
    from alexnet.reporting import figures

    out = _out(args)
    figures.write_figure(figures.filters_figure(load_checkpoint(args.checkpoint).model), out)
    print(out)
    return 0


def run_neighbors(args: argparse.Namespace) -> int:
    from alexnet.inference.samples import sample_neighbours
    from alexnet.reporting import figures

    out = _out(args)
    at_least("--queries", args.queries)
    at_least("--neighbors", args.neighbors)
    at_least("--train-limit", args.train_limit, 0)
    loaded, splits, name, images = _loaded_split(args)
    if "train" not in splits:
        raise AlexNetError(f"{args.data or loaded.data_spec}: no train split to search")
    searched = min(args.train_limit or len(splits["train"]), len(splits["train"]))
    if args.neighbors > searched:
        raise AlexNetError(f"--neighbors {args.neighbors}: more than the {searched:,} training images searched")
    found = sample_neighbours(loaded, images, splits["train"], count=args.queries, k=args.neighbors, seed=args.seed,
                              limit=args.train_limit)
    figures.write_figure(figures.neighbours_figure(found.queries, found.neighbours, found.distances, found.query_labels,
                                                   found.neighbour_labels), out)
    print(f"{out}: {len(found.queries)} {name} images and their {args.neighbors} nearest training images"
          f"{f' (of the first {searched:,})' if searched < len(splits['train']) else ''}")
    return 0


def run_predictions(args: argparse.Namespace) -> int:
    from alexnet.inference.samples import sample_predictions
    from alexnet.reporting import figures

    out = _out(args)
    at_least("--images", args.images)
    loaded, _, name, images = _loaded_split(args)
    sample = sample_predictions(loaded, images, count=args.images, seed=args.seed)
    figures.write_figure(figures.predictions_figure(sample.images, sample.probabilities, sample.labels, loaded.classes), out)
    print(f"{out}: top-5 predictions for {min(args.images, len(images))} {name} images")
    return 0


def run_confusion(args: argparse.Namespace) -> int:
    from alexnet.inference.samples import split_probabilities
    from alexnet.reporting import figures

    out = _out(args)
    loaded, _, name, images = _loaded_split(args)
    figures.plot_confusion(*split_probabilities(loaded, images), loaded.classes, out)
    print(f"{out}: confusion matrix on {len(images)} {name} images")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from alexnet.reporting.figures import plot_curves
    from alexnet.reporting.html_report import read_history

    out = _out(args)
    plot_curves(read_history(args.run), out)
    print(out)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from alexnet.reporting.html_report import write_report_html
    from alexnet.training.run_folder import RunFolder

    page = RunFolder(args.run, write=False).report_html
    refuse_existing(page, args.force, None)
    print(write_report_html(args.run, device=str(resolve_device(args.device))))
    return 0
