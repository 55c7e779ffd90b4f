"""d2l's chapter on Fashion-MNIST, the whole table (issue 23): each recipe trained by ours and, where
asked, by d2l's code as written, over seeds, beside the figures d2l's build printed.

    PYTHONPATH=src python3 benchmarks/d2l_chapter.py --out $OUT                 # the lent GPU: 8 recipes, ours bf16
    python benchmarks/d2l_chapter.py --presets d2l_lenet --impl d2l,fp32,bf16 --seeds 5 --out DIR   # parity, a CPU
    python benchmarks/d2l_chapter.py --cpu-dry-run --out /tmp/d                 # every recipe, 2 steps, toy data

Implementations: ``d2l`` is d2l's code as written (``alexnet.tools.bench.d2l.train_ch6``: its
DataLoader over torchvision's FashionMNIST, Resize + ToTensor, ``train_ch6``'s loop, fp32); ``fp32``,
``bf16`` and ``fp16`` are ``alexnet train --preset P --data fashion-mnist --precision X``'s own path.
Each run's three numbers are computed train_ch6's way (``alexnet.reporting.d2l``). Seeds are paired by
number: seed s seeds both implementations (their random streams differ, so the pairing is of runs, not
of draws); the table gives each implementation's mean ± std and, against ``d2l``, the paired
difference of test accuracy with its 95 % t interval.

The data is the real Fashion-MNIST (``--data fashion-mnist``'s search, ``$ALEXNET_FASHION_MNIST``
first). The GPU machine has no network and no Debian package: carry the four ``.gz`` files (30 MB)
in the ignored ``.data/fashion-mnist`` and point ``$ALEXNET_FASHION_MNIST`` at it (benchmarks/README.md). The dry run writes a toy copy
(the first 256 training and 64 test images) and runs every recipe for 2 steps of 16 on it.

Writes ``d2l_chapter.json`` (every run, rewritten after each) and ``d2l_chapter.md`` (the table) in
``--out``; rerunning with the same ``--out`` skips the runs it holds. Run folders go to ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alexnet import models, runtime  # noqa: E402
from alexnet.atomic import atomic_write, write_json  # noqa: E402
from alexnet.data import open_dataset  # noqa: E402
from alexnet.data.idx import FASHION_MNIST_ENV, write_idx  # noqa: E402
from alexnet.data.sources import FASHION_MNIST  # noqa: E402
from alexnet.reporting.d2l import PUBLISHED, train_ch6_numbers  # noqa: E402
from alexnet.reporting.stats import format_mean_std, mean_std, paired  # noqa: E402
from alexnet.tools.bench.d2l import torchvision_root, train_ch6  # noqa: E402
from alexnet.training.config import TrainConfig, resolve  # noqa: E402
from alexnet.training.loop import RunOptions, train  # noqa: E402

# cheapest first, so that a budget that runs out leaves the dearest undone
PRESETS = ("d2l_lenet", "d2l_bn_lenet", "d2l_resnet", "d2l_googlenet", "d2l_densenet", "d2l", "d2l_nin", "d2l_vgg")
IMPLS = ("d2l", "fp32", "bf16", "fp16")


def config_for(preset: str, impl: str, seed: int, args) -> TrainConfig:
    flags = {"seed": seed, "device": args.device, "epochs": args.epochs, "max_steps": args.max_steps or None,
             "batch_size": args.batch_size,
             "precision": impl if impl != "d2l" else "fp32"}
    return resolve(preset, flags, [])


def run_one(preset: str, impl: str, seed: int, args) -> dict:
    """One training run: its three numbers, epochs, and seconds of training."""
    config = config_for(preset, impl, seed, args)
    device = runtime.resolve_device(config.device)
    start = time.perf_counter()
    if impl == "d2l":
        torch.manual_seed(seed)
        net = models.create(config.model.name, **config.model.options)
        numbers = train_ch6(net, config, torchvision_root(args.work), device, max_steps=config.max_steps)
    else:
        result = train(config, RunOptions(out=args.work / f"{preset}-{impl}-s{seed}", force=True, progress_bar=False))
        numbers = train_ch6_numbers(result.history, result.report["final"])
    seconds = time.perf_counter() - start
    epochs = config.epochs
    return {"preset": preset, "net": config.model.name, "impl": impl, "seed": seed, "epochs": epochs,
            "max_steps": config.max_steps, "device": str(device), **numbers, "seconds": seconds,
            "minutes_per_epoch": seconds / 60 / max(epochs, 1)}


def table(rows: list[dict]) -> str:
    """Per preset and implementation: d2l's printed numbers, ours as mean ± std, and the paired
    difference from d2l's code where both ran."""
    lines = ["| preset | net | d2l's build printed (loss, train acc, test acc) | impl | runs | loss | train acc "
             "| test acc | Δ test acc vs d2l's code, paired [95 % CI] | min/epoch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        printed = ", ".join(f"{v:.3f}" for v in PUBLISHED.get(preset, ())) or "—"
        reference = {r["seed"]: r["test_acc"] for r in mine if r["impl"] == "d2l"}
        for impl in dict.fromkeys(r["impl"] for r in mine):
            runs = [r for r in mine if r["impl"] == impl]
            stat = {k: mean_std([r[k] for r in runs]) for k in ("loss", "train_acc", "test_acc", "minutes_per_epoch")}
            diff = "—"
            if impl != "d2l" and reference:
                d = paired(reference, {r["seed"]: r["test_acc"] for r in runs})
                diff = f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] (n={d['n']})" if d.get("ci95") else "one pair"
            epochs = runs[0]["epochs"] if not runs[0]["max_steps"] else f"{runs[0]['max_steps']} steps"
            lines.append(f"| `{preset}` | `{runs[0]['net']}` | {printed} | {impl} | {len(runs)} × {epochs} "
                         f"| {_pm(stat['loss'])} | {_pm(stat['train_acc'])} | {_pm(stat['test_acc'])} | {diff} "
                         f"| {stat['minutes_per_epoch']['mean']:.2f} |")
    return "\n".join(lines) + "\n"


def _pm(stat: dict) -> str:
    return format_mean_std(stat, digits=4)


def toy_copy(folder: Path) -> Path:
    """The first 256 training and 64 test images of the real set (or of what the tests wrote), as IDX."""
    data = open_dataset(FASHION_MNIST)
    for split, prefix, n in (("train", "train", 256), ("test", "t10k", 64)):
        images = data.split(split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.asarray(images.images[:n])[..., 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(images.labels[:n], dtype=np.uint8))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="where d2l_chapter.json and .md go")
    p.add_argument("--work", type=Path, help="run folders and torchvision's copy of the data (default: a temporary folder)")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated, cheapest first by default")
    p.add_argument("--impl", default="bf16", help=f"comma-separated of {', '.join(IMPLS)}")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0 … N−1 per preset and implementation")
    p.add_argument("--epochs", type=int, help="epochs per run (each preset's 10 otherwise)")
    p.add_argument("--max-steps", type=int, default=0, help="stop each run after this many steps (0: the epochs)")
    p.add_argument("--batch-size", type=int, help="images per step (each preset's otherwise)")
    p.add_argument("--device", default="auto")
    p.add_argument("--budget-s", type=float, default=280.0, help="no run starts after this many seconds")
    p.add_argument("--cpu-dry-run", action="store_true", help="every recipe on a toy copy of the data, 2 steps, on the CPU")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # d2l's 4 workers on a 2-core machine
    impls = args.impl.split(",")
    if bad := [i for i in impls if i not in IMPLS] + [n for n in args.presets.split(",") if n not in PRESETS]:
        p.error(f"unknown --impl or --presets value(s): {', '.join(bad)}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or Path(tempfile.mkdtemp(prefix="d2l_chapter-"))
    if args.cpu_dry_run:
        os.environ[FASHION_MNIST_ENV] = str(toy_copy(args.work / "fashion-mnist-toy"))
        args.device, args.max_steps, args.epochs, args.batch_size = "cpu", 2, 1, 16
    record = args.out / "d2l_chapter.json"
    rows = json.loads(record.read_text())["rows"] if record.exists() else []
    start = time.monotonic()
    for preset in args.presets.split(","):
        for impl in impls:
            for seed in range(args.seeds):
                key = (preset, impl, seed, config_for(preset, impl, seed, args).epochs, args.max_steps)
                if any((r["preset"], r["impl"], r["seed"], r["epochs"], r["max_steps"]) == key for r in rows):
                    continue
                if time.monotonic() - start > args.budget_s:
                    print(f"{preset} {impl} seed {seed}: not run, past --budget-s {args.budget_s:.0f}", flush=True)
                    continue
                rows.append(row := run_one(preset, impl, seed, args))
                print(f"{preset} {impl} seed {seed}: loss {row['loss']:.3f}, train acc {row['train_acc']:.3f}, "
                      f"test acc {row['test_acc']:.3f} ({row['seconds']:.0f} s)", flush=True)
                write_json(record, {"torch": torch.__version__, "rows": rows})
                atomic_write(args.out / "d2l_chapter.md", table(rows).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
