"""``alexnet demo``: the main job (``make demo``) on the embedded digits.

Trains the ``digits`` preset, evaluates the trained checkpoint on the test split as ``alexnet eval``
does, classifies a few test digits written out as PNG files as ``alexnet predict`` does, and ends
with a short table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.errors import AlexNetError
from alexnet.runtime import DEVICE_HELP, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: train the digits preset, evaluate it, classify a few images (make demo)",
                       description="The main job on the embedded digits: `alexnet train --preset digits`, then "
                                   "`alexnet eval` on the test split and `alexnet predict` on a few test digits.")
    p.add_argument("--out", type=Path, help="run folder (default: runs/demo-TIME)")
    p.add_argument("--epochs", type=int, help="epochs (default: the digits preset's)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.atomic import atomic_path, make_folder
    from alexnet.cli.predict import format_prediction
    from alexnet.cli.train import EpochLines
    from alexnet.data import open_dataset
    from alexnet.inference.evaluate import EvalConfig, classify_images, evaluate_checkpoints
    from alexnet.reporting.html_report import TrainingReport
    from alexnet.training.config import resolve
    from alexnet.training.loop import RunOptions, train
    from alexnet.training.run_folder import RunFolder

    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = resolve("digits", {"epochs": args.epochs, "device": args.device}, [])
    resolve_device(config.device)  # a mistyped --device, before the first line
    if out.exists() and not out.is_dir():
        raise AlexNetError(f"--out {out}: a file, not a folder; choose another --out")
    if out.is_dir() and RunFolder(out, write=False).holds_run():  # train's advice (--resume, --force) is not demo's
        raise AlexNetError(f"--out {out} already holds a run; choose another --out (without one demo writes runs/demo-TIME)")
    print(f"alexnet demo: training {config.model.name} ({config.description}) → {out}")
    started = time.time()
    report = train(config, RunOptions(out=out, progress_bar=False, callbacks=[EpochLines(), TrainingReport()])).report
    final = RunFolder(out).last  # the final weights, as in report.json

    test = open_dataset("digits").splits["test"]
    result = evaluate_checkpoints([final], test, EvalConfig(views=1, batch_size=256, device=str(report["hardware"]["device"])))

    samples = out / "samples"
    make_folder(samples)
    paths = []
    for i in np.linspace(0, len(test) - 1, 6).astype(int):
        path = samples / f"test{i:03d}_label{test.classes[test.labels[i]]}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(test.images[i][..., 0]).save(tmp, format="PNG")
        paths.append(str(path))
    print(f"\nalexnet predict --checkpoint {final} --topk 3 {samples}/*.png")
    for p in classify_images(paths, final, topk=3):
        print(format_prediction(p))

    print(f"\n{'digits test split':<20} {'':>8}")
    print(f"{'images':<20} {result.images:>8}")
    print(f"{'top-1 error':<20} {100 * result.top1_error:>7.2f}%")
    print(f"{'top-5 error':<20} {100 * result.top5_error:>7.2f}%")
    print(f"{'top-1 accuracy':<20} {100 * result.top1_accuracy:>7.2f}%")
    print(f"{'epochs':<20} {report['epochs']:>8}")
    print(f"{'time':<20} {time.time() - started:>7.0f}s")
    print(f"run folder: {out}  (report.html to look at; report.json, metrics.jsonl, curves.png, checkpoints/)")
    return 0
