"""d2l's LeNet recipe over many seeds, by our path and by d2l's, with the test accuracy just before
the last step as well as after it (issue 23: why 3 seeds showed ours 4.9 points above d2l's code).

    python benchmarks/d2l_last_step.py --seeds 9 --out DIR      # 18 runs of 10 epochs, ~1 min each, one core

Both implementations are ``train_ch6``'s SGD step on the same tensors (our fitted images equal
torchvision's ``Resize`` + ``ToTensor`` bit for bit; our ``TrainStep`` gives ``train_ch6``'s step's
weights, bit for bit on one thread), so only the random draws differ, each drawn as its own path draws it:

* ``ours``: ``alexnet train --preset d2l_lenet``'s initial weights and batch order
  (``models.create`` after ``torch.manual_seed(seed)``, ``loader.epoch_order``); the test checks that
  it ends with the weights ``alexnet train`` ends with (to fp32 rounding);
* ``d2l``: ``train_ch6``'s (``alexnet.tools.bench.d2l.reference_step``'s Xavier re-init, then a
  shuffled 4-worker DataLoader's order, which draws from the same global generator as d2l's does).

d2l's recipe keeps the last partial batch (60,000 = 234 · 256 + 96) and evaluates right after it: one
step of lr 0.9 on 96 images. ``before_last`` is the test accuracy one step earlier. Writes
``d2l_last_step.jsonl`` (a line per run; rerunning skips the runs it holds) and prints the paired table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from alexnet import models  # noqa: E402
from alexnet.atomic import atomic_write  # noqa: E402
from alexnet.data.loader import epoch_order  # noqa: E402
from alexnet.reporting import stats  # noqa: E402
from alexnet.tools.bench.d2l import reference_step  # noqa: E402
from alexnet.training.config import resolve  # noqa: E402
from alexnet.training.loop import load_data  # noqa: E402

IMPLS = ("ours", "d2l")


def tensors(images) -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageSet as ToTensor gives it: [N, 1, 28, 28] in [0, 1], and its labels."""
    x = torch.from_numpy(np.asarray(images.images)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return x, torch.from_numpy(np.asarray(images.labels, dtype=np.int64))


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def train(seed: int, impl: str, epochs: int, data: dict, workers: int = 4) -> tuple[dict, torch.nn.Module]:
    """One run of the recipe: train_ch6's three numbers, and the test accuracy before the last step."""
    (x, y), (xt, yt), batch = data["train"], data["test"], data["batch_size"]
    torch.manual_seed(seed)
    net = models.create("lenet_d2l", num_classes=10)
    kept = {k: v.clone() for k, v in net.state_dict().items()}
    metric = [0.0, 0.0, 0]
    step = reference_step(net, 0.9, metric)  # train_ch6's step; it re-draws the Xavier weights
    if impl == "ours":
        net.load_state_dict(kept)
    loader = (torch.utils.data.DataLoader(_Indices(len(y)), batch, shuffle=True, num_workers=workers,
                                          persistent_workers=workers > 0) if impl == "d2l" else None)

    @torch.no_grad()
    def test_accuracy() -> float:
        net.eval()
        right = sum(int((net(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum()) for i in range(0, len(yt), 1000))
        net.train()
        return right / len(yt)

    before_last, start = None, time.perf_counter()
    for epoch in range(epochs):
        metric[:] = [0.0, 0.0, 0]
        if loader is not None:
            batches = list(loader)
        else:
            order = torch.from_numpy(epoch_order(len(y), shuffle=True, seed=seed, epoch=epoch))
            batches = [order[i:i + batch] for i in range(0, len(order), batch)]
        for j, idx in enumerate(batches):
            if epoch == epochs - 1 and j == len(batches) - 1:
                before_last = test_accuracy()
            step(x[idx], y[idx])
    result = {"seed": seed, "impl": impl, "epochs": epochs, "loss": metric[0] / metric[2], "train_acc": metric[1] / metric[2],
              "before_last": before_last, "test_acc": test_accuracy(), "last_batch": len(batches[-1]),
              "seconds": time.perf_counter() - start}
    return result, net


def ours_minus_d2l(rows: list[dict], key: str) -> str:
    """mean of ours − d2l over the seeds both have, with its 95 % t interval (alexnet.reporting.stats.paired)."""
    d = stats.paired({r["seed"]: r[key] for r in rows if r["impl"] == "d2l"}, {r["seed"]: r[key] for r in rows if r["impl"] == "ours"})
    if d["ci95"] is None:
        return "–"
    return f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"


def table(rows: list[dict]) -> str:
    lines = ["| impl | seeds | train loss | train acc | test acc before the last step | test acc (after it) | test acc per seed |",
             "|---|---|---|---|---|---|---|"]
    for impl in IMPLS:
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["seed"])
        if not mine:
            continue
        cell = [f"{m['mean']:.4f} ± {m['std']:.4f}"
                for m in (stats.mean_std([r[k] for r in mine]) for k in ("loss", "train_acc", "before_last", "test_acc"))]
        per_seed = ", ".join(f"{r['test_acc']:.4f}" for r in mine)
        lines.append(f"| {impl} | {len(mine)} | {' | '.join(cell)} | {per_seed} |")
    lines += ["", f"ours − d2l, paired by seed [95 % CI]: before the last step {ours_minus_d2l(rows, 'before_last')}, "
              f"after it {ours_minus_d2l(rows, 'test_acc')}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=9, help="seeds 0 … N−1 (default 9)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs (default: the recipe's 10)")
    parser.add_argument("--impl", default="ours,d2l", help="ours, d2l or both (default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="folder for d2l_last_step.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # d2l's 4 workers on a 2-core machine, as written
    config = resolve("d2l_lenet", {"device": "cpu", "precision": "fp32"}, [])
    loaded = load_data(config)
    data = {"train": tensors(loaded.train), "test": tensors(loaded.test), "batch_size": config.batch_size}
    path = args.out / "d2l_last_step.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    done = {(r["impl"], r["seed"], r["epochs"]) for r in rows}
    for seed in range(args.seeds):
        for impl in args.impl.split(","):
            if (impl, seed, args.epochs) not in done:
                rows.append(train(seed, impl, args.epochs, data)[0])
                args.out.mkdir(parents=True, exist_ok=True)
                atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
                print(json.dumps(rows[-1]), flush=True)
    print(table([r for r in rows if r["epochs"] == args.epochs]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
