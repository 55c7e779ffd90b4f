"""Does the process-wide allocator tuning (``alexnet.runtime.tune_cpu_allocator``) help on this machine?

    PYTHONPATH=src python3 benchmarks/allocator.py [--rounds 3] [--batch-size 128] [--json FILE]

The setting cannot be undone inside a process, so each measurement is a fresh process: ``--rounds``
rounds of two processes, glibc's defaults then the tuned thresholds, one after the other so that
a drifting machine affects both alike. Each process times, at ``--batch-size`` (median of 3 steps
after 2 untimed ones): torchvision's AlexNet as pytorch/examples runs it (fp32, NCHW), and the
paper's ``alexnet`` on the step ``alexnet train`` runs, in fp32 and in bf16 (where the CPU has it).
Printed: images/s per row and setting (median over rounds, with every round's), the tuned/default
ratio, and the page faults of one step, which is what the tuning removes. docs/PERFORMANCE.md
("The allocator, measured per machine") has the figures and the rule they support.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE_PROCESS = r"""
import json, resource, sys, time, torch
from alexnet import models, runtime
from alexnet.tools.bench.step import ours_step, reference_model, reference_step, synthetic_batch
tuned, batch = sys.argv[1] == "tuned", int(sys.argv[2])
if tuned:
    assert runtime.tune_cpu_allocator()
def measure(step):
    for _ in range(2):
        step()
    times, faults = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"images_per_s": batch / sorted(times)[1], "page_faults_per_step": sorted(faults)[1]}
out = {}
torch.manual_seed(0)
ref = reference_model()
x, y = synthetic_batch(ref, batch, 1000)
run = reference_step(ref, torch.device("cpu"))
out["torchvision.alexnet fp32 NCHW (pytorch/examples)"] = measure(lambda: run(x, y))
del ref, run
precisions = ["fp32"] + (["bf16"] if runtime.precision_supported(torch.device("cpu"), "bf16") else [])
for precision in precisions:
    torch.manual_seed(0)
    model = models.create("alexnet")
    x, y = synthetic_batch(model, batch, model.num_classes)
    fast = runtime.RuntimeSettings(precision=precision, tune_allocator=tuned)
    out[f"alexnet {precision} channels_last (alexnet train's step)"] = measure(ours_step(model, fast, x, y))
    del model
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for i in range(args.rounds):
        for setting in runs:
            done = subprocess.run([sys.executable, "-c", ONE_PROCESS, setting, str(args.batch_size)], cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {i + 1}, {setting}: " + ", ".join(f"{k.split(' (')[0]} {v['images_per_s']:.1f}"
                                                            for k, v in runs[setting][-1].items()), flush=True)
    summary = {}
    print(f"\nbatch {args.batch_size}, {args.rounds} rounds: images/s, median [every round]; page faults of one step")
    for row in runs["default"][0]:
        rates = {s: [r[row]["images_per_s"] for r in runs[s]] for s in runs}
        faults = {s: statistics.median(r[row]["page_faults_per_step"] for r in runs[s]) for s in runs}
        ratio = statistics.median(rates["tuned"]) / statistics.median(rates["default"])
        summary[row] = {"default": rates["default"], "tuned": rates["tuned"], "tuned_over_default": ratio,
                        "page_faults": faults}
        print(f"  {row:<55} default {statistics.median(rates['default']):6.1f} {[round(v, 1) for v in rates['default']]}"
              f"  tuned {statistics.median(rates['tuned']):6.1f} {[round(v, 1) for v in rates['tuned']]}"
              f"  {ratio:.2f}×  faults {faults['default']:.0f} → {faults['tuned']:.0f}")
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch_size, "rounds": args.rounds, "rows": summary}) + "\n")


if __name__ == "__main__":
    main()
