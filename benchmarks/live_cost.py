"""What following a run live costs the run: live.json's writes and the per-step check (issue 27).

    python benchmarks/live_cost.py [--epochs 3]

Times ``RunFolder.write_live`` alone (median of 5 × 20 writes), the per-step check (one
``time.monotonic()`` comparison), and a digits run with every live.json write timed, as a share of
the run's wall time (docs/EXPLORE.md, "Following a run live").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from alexnet.training import loop
from alexnet.training.config import resolve
from alexnet.training.run_folder import RunFolder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="live_cost-"))
    folder = RunFolder(work / "alone")
    folder.root.mkdir()
    record = {"state": "training", "epoch": 3, "epochs": 10, "batch": 120, "per_epoch": 429, "steps": 978,
              "total_steps": 4290, "lr": 0.01, "images_per_second": 1234.5, "time": time.time(), "loss": 0.5}
    writes = [timeit.timeit(lambda: folder.write_live(record), number=20) / 20 for _ in range(5)]
    check = timeit.timeit("time.monotonic() >= 0.0", setup="import time", number=1_000_000) / 1e6
    print(f"write_live: median {statistics.median(writes) * 1e3:.2f} ms; the per-step check: {check * 1e9:.0f} ns")
    spent, original = [], RunFolder.write_live

    def timed(self, r):
        start = time.perf_counter()
        original(self, r)
        spent.append(time.perf_counter() - start)

    RunFolder.write_live = timed
    config = resolve("digits", {"epochs": args.epochs, "device": "cpu"}, ["data.workers=0"])
    start = time.perf_counter()
    result = loop.train(config, loop.RunOptions(out=work / "run", progress_bar=False))
    wall = time.perf_counter() - start
    print(f"digits, {args.epochs} epochs: {result.steps} steps in {wall:.1f} s; live.json written {len(spent)} times, "
          f"{sum(spent) * 1e3:.1f} ms in all = {sum(spent) / wall * 100:.3f} % of the run")


if __name__ == "__main__":
    main()
