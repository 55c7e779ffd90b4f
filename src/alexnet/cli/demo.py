"""``alexnet demo``: the main job on the embedded default data (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

from . import models as models_cmd


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default data (make demo)",
                       description="The main job on the embedded default data.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.name, args.input_size, args.num_classes, args.json = "alexnet", None, None, False
    return models_cmd.run_summary(args)
