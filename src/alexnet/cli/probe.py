"""``alexnet probe``: a linear (logistic regression) and a k-NN classifier on stored features, top-1/top-5."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from alexnet.inference.probe import METRICS, ProbeConfig, run_probes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="linear and k-NN classifiers on features from alexnet features",
                       description="Train scikit-learn's logistic regression (on standardised features) and a k-NN "
                                   "classifier on TRAIN's rows and labels, and report top-1/top-5 on TEST's. Both files "
                                   "come from alexnet features with the same checkpoint and --layer.")
    p.add_argument("--features", required=True, metavar="TRAIN.npy", help="training features")
    p.add_argument("--features-test", required=True, metavar="TEST.npy", help="test features")
    p.add_argument("--C", dest="c", type=float, default=1.0, help="inverse L2 strength of the logistic regression (default 1)")
    p.add_argument("--max-iter", type=int, default=1000, metavar="N", help="L-BFGS iterations (default 1000)")
    p.add_argument("--k", type=int, default=20, metavar="K", help="neighbours of the k-NN classifier (default 20)")
    p.add_argument("--metric", choices=METRICS, default="cosine", help="k-NN distance (default cosine)")
    p.add_argument("--json", action="store_true",
                   help='print JSON: {"linear": report, "knn": report, "train", "test", "chance"} (reports as alexnet eval --json)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = ProbeConfig(c=args.c, max_iter=args.max_iter, k=args.k, metric=args.metric)
    reports = run_probes(args.features, args.features_test, config)
    classes = len(reports["linear"].classes)
    if args.json:
        out = {name: r.to_dict() for name, r in reports.items()}
        out.update(train=args.features, test=args.features_test, chance_top1_accuracy=1.0 / classes, config=asdict(config))
        print(json.dumps(out, indent=2))
        return 0
    r = reports["linear"]
    print(f"probes trained on {args.features}, tested on {args.features_test}: {r.images} images, {classes} classes "
          f"(chance top-1 accuracy {100 / classes:.2f} %)")
    names = {"linear": f"logistic regression (C={config.c})", "knn": f"{config.k}-NN ({config.metric})"}
    for name, r in reports.items():
        print(f"{names[name]:<28} top-1 error {100 * r.top1_error:6.2f} % (accuracy {100 * r.top1_accuracy:6.2f} %)   "
              f"top-5 error {100 * r.top5_error:6.2f} %")
    return 0
