"""``alexnet search``: the nearest images of a feature bank to image files (§6.1), as text and a grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alexnet.atomic import check_output_file
from alexnet.inference.neighbours import METRICS
from alexnet.inference.search import ENGINES, SearchResult, search_images
from alexnet.runtime import DEVICE_HELP, RuntimeSettings, apply_process_settings, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="the nearest images of a feature bank to image files (§6.1)",
                       description="Run image files through the bank's checkpoint and layer and list the K bank images "
                                   "nearest to each (Euclidean distance on fc7 as in §6.1, or cosine); --grid draws them "
                                   "as Fig. 4 (right) does. The bank is OUT.npy from alexnet features.")
    p.add_argument("--features", required=True, metavar="BANK.npy", help="the bank: features from alexnet features")
    p.add_argument("--checkpoint", default=None, metavar="C",
                   help="the checkpoint the bank was made with (default: the path its record names)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--k", type=int, default=5, metavar="K", help="neighbours per image (default 5)")
    p.add_argument("--metric", choices=METRICS, default="euclidean", help="distance (default euclidean, §6.1)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="exact (torch), faiss (pip install 'alexnet[faiss]'), or auto: faiss for banks of 100,000 rows or more")
    p.add_argument("--grid", metavar="OUT.png", type=Path, default=None, help="write the queries and their neighbours as an image grid")
    p.add_argument("--force", action="store_true", help="replace an existing --grid file")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto)")
    p.add_argument("--json", action="store_true",
                   help='print JSON: [{"image", "neighbours": [{"rank", "row", "distance", "label", "class", "path"}]}]')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.grid is not None:
        check_output_file(args.grid, args.force, ".png", "--grid")
    device = str(resolve_device(args.device))
    apply_process_settings(RuntimeSettings(device))
    result = search_images(args.features, args.images, checkpoint_path=args.checkpoint, k=args.k, metric=args.metric,
                           engine=args.engine, device=device)
    if args.grid is not None:
        _draw_grid(result, Path(args.grid), overwrite=args.force)
    if args.json:
        print(json.dumps(result.to_dicts(), indent=2))
        return 0
    for r in result.to_dicts():
        print(r["image"])
        for n in r["neighbours"]:
            where = n["path"] or f"row {n['row']}"
            print(f"  {n['rank']:>2}. {n['distance']:10.4f}  {n['class']}  {where}")
    if args.grid:
        print(f"wrote {args.grid}")
    return 0


def _draw_grid(result: SearchResult, out: Path, *, overwrite: bool) -> None:
    """Fig. 4 (right): one row per query file, then its neighbours in the bank, nearest first."""
    from alexnet.reporting import figures

    title = f"nearest by {result.bank.record['layer']} ({Path(result.bank.path).name})"
    fig = figures.neighbours_figure(result.decoded, result.neighbour_images(), result.found.distances,
                                    [Path(name).name[:18] for name in result.images], result.neighbour_labels(), title=title)
    figures.write_figure(fig, out, overwrite=overwrite)
