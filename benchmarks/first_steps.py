"""The training loss step by step over a preset's first steps: does its model, init and ε leave ln(classes)?

    PYTHONPATH=src python3 benchmarks/first_steps.py [--preset paper] [--data digits] [--steps 60]
        [--batch-size 128] [--seeds 0 1 2 3] [--set model.options.dropout_scaling=inverted ...] [--amp bf16]

For each seed it prints the mean training loss of every ``--every`` steps, then one line per seed:
the largest loss in the first 20 steps (the blow-up of a too-large first update) and the mean of
the last ``--every`` steps. It builds the model, data and optimiser as ``alexnet train`` does
(``alexnet.training.loop.load_data``, the base learning rate, which every schedule starts from) and
takes its step (``alexnet.training.step.make_train_step``) on the CPU; what it
leaves out is the validation, the checkpoints and the run folder. The
figures in docs/TRAINING.md ("Does the paper's recipe learn?") were made with it.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from alexnet import models
from alexnet.data import iter_batches
from alexnet.runtime import apply_process_settings
from alexnet.training.config import resolve
from alexnet.training.loop import load_data
from alexnet.training.step import make_train_step


def run(config, seed: int, steps: int, every: int, data) -> list[float]:
    torch.manual_seed(seed)
    model = models.create(config.model.name, num_classes=len(data.classes), **config.model.options).train()
    step = make_train_step(model, config, config.runtime_settings("cpu"))  # the step alexnet train runs
    aug = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    epoch, start = 0, time.time()
    while len(losses) < steps:
        for x, y in iter_batches(data.train, config.batch_size, size=data.preprocess.pipeline.resize, shuffle=True,
                                 seed=seed, epoch=epoch, drop_last=True):
            losses.append(step(data.preprocess.augment(x, aug), y)[1].item())
            if len(losses) % every == 0:
                print(f"  seed {seed} step {len(losses):4d}  loss {sum(losses[-every:]) / every:7.3f}  ({time.time() - start:.0f} s)",
                      flush=True)
            if len(losses) >= steps:
                break
        epoch += 1
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=5, help="print the mean loss of every this many steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--amp", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as alexnet train --set")
    args = p.parse_args()
    config = resolve(args.preset, {"data.spec": args.data, "batch_size": args.batch_size, "precision": args.amp,
                                   "channels_last": True, "device": "cpu"}, args.set)
    apply_process_settings(config.runtime_settings("cpu"))
    data = load_data(config)
    chance = math.log(len(data.classes))
    print(f"{config.preset}: {config.model.name} {config.model.options}, batch {config.batch_size}, lr {config.optim.lr}, "
          f"precision {config.precision}; ln {len(data.classes)} = {chance:.3f}")
    summary = []
    for seed in args.seeds:
        losses = run(config, seed, args.steps, args.every, data)
        summary.append((seed, max(losses[:20]), sum(losses[-args.every:]) / args.every))
    for seed, peak, last in summary:
        verdict = "learns" if last < 0.5 * chance else ("flat at ln C" if abs(last - chance) < 0.05 else "neither")
        print(f"seed {seed}: largest loss in steps 1–20 {peak:.2f}; last {args.every} steps {last:.3f}: {verdict}")


if __name__ == "__main__":
    main()
