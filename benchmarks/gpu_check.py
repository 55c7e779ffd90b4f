"""The prepared device check (issue 18): every GPU figure the project still owes, in one run.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT            # on the lent GPU, < 8 minutes
    PYTHONPATH=src python3 benchmarks/gpu_check.py --out /tmp/c --cpu-dry-run   # every part on the CPU, toy sizes

It drives the real commands (``python3 -m alexnet bench/prepare/train/eval``,
``benchmarks/peak_rates.py``, ``benchmarks/profile_step.py``, ``pytest``) in subprocesses, each
with a time limit, cheapest part first:

1. ``1_env.json``: GPU, driver, torch/CUDA/cuDNN versions; ``peak_rates.py`` (the ceilings);
2. ``2_step.json``: ``bench step`` of the paper's ``alexnet`` against the reference (torchvision's
   AlexNet, pytorch/examples' step) in bf16, fp16 and fp32 at batch 128 and 256, fp32 with TF32
   matrix products (``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``), ``torch.compile``, and
   ``profile_step.py --like-for-like`` (where a bf16 step's time goes, beside torchvision's net on the
   same step: every ``bench step`` run also has those like-for-like rows) and ``layer_forms.py``
   (issue 24: the towers as one grouped or two convolutions, the LRN's window sum and kernels);
3. ``3_end_to_end.json``: generated photographs (in parallel) → ``bench data`` (the packed store →
   ``iter_batches`` → the paper's augmentation on the GPU → the bf16 step, against ImageFolder +
   DataLoader with ``workers`` processes) with the GPU's utilisation sampled by ``nvidia-smi``, the
   share of time the step waits for data (1 − end-to-end / step-only images/s), ``prepare
   --encoding jpeg`` and ``bench decode`` (nvJPEG against the CPU decoders);
4. ``4_train.json``: ``train --preset paper`` for a bounded number of steps from the raw store and
   from the JPEG store (checkpoints, the deferred loss check and nvJPEG in the real command), then
   ``eval --views 10``;
5. ``5_towers_tests.json``: the two-tower placement with both towers on ``cuda:0`` against the
   grouped model, and tests/core/test_devices.py's ``cuda`` tests, an error unless every one of them ran
   and passed (on a machine whose GPU torch cannot see they would all skip);

then ``summary.json`` (the headline figures against the issue's targets) and ``gpu_check.log``
(every command's output): 7 files. Each part's JSON is rewritten as each of its commands finishes,
so whatever the run reaches comes back; a command that fails or runs out of time is recorded with
its exit status and the end of its output, and the script goes on. No part needs the network.

The bf16 rows (the profile, ``layer_forms``' second table, ``bench data``) run in fp32 in a dry run on a
CPU that only emulates bf16 (part 1's ``versions`` says which: ``runtime.precision_supported``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from alexnet.atomic import write_json  # noqa: E402  (stdlib only: the check's own process never imports torch)

PARTS = ("1_env", "2_step", "3_end_to_end", "4_train", "5_towers_tests")
PAPER_TRAIN_GFLOP = 4.14  # GFLOP per training image of the paper's alexnet (forward + backward, bench's count)
IMAGENET_TRAIN = 1_281_167


@dataclass(frozen=True)
class Sizes:
    """What the check runs at: the lent GPU's sizes, or the dry run's toy ones."""

    device: str
    quick: bool  # bench --quick, peak_rates --quick: sizes that only check that things run
    step_batches: tuple[int, ...]  # batches of the bench step rows
    precisions: tuple[str, ...]  # of the bench step rows (a CPU emulates bf16 and fp16, slowly)
    precision: str  # train --precision
    compile_batch: int  # the batch of the torch.compile rows; 0: none
    profile_batch: int
    photos: int  # training photographs of the end-to-end rows and the stores
    val_photos: int  # a val split, for eval --views 10
    data_batches: int  # batches per timed chunk in bench data
    decode_photos: int  # photographs of bench decode (its CPU rows pass over all of them, 6 times)
    workers: int  # DataLoader / prepare processes
    train_steps: int  # train --preset paper --set max_steps=N from the raw store
    jpeg_train_steps: int  # ... and from the JPEG store
    train_batch: int
    budget_s: float  # no command starts after this; each one's limit is cut to what is left
    device_tests: str  # pytest -k of tests/core/test_devices.py: the device's own tests (the dry run: its cheap ones)
    lrn_kernel: str  # --lrn-kernel of the step, data and train commands: on a GPU auto is eager; the dry run skips
    # the CPU's first compile of the kernel (tests/models/test_perf_lrn.py tests that one)


GPU = Sizes(device="cuda", quick=False, step_batches=(128, 256), precisions=("bf16", "fp16", "fp32"), precision="bf16",
            compile_batch=256, profile_batch=256,
            photos=20_000, val_photos=1_000, data_batches=20, decode_photos=1_024, workers=15,
            train_steps=300, jpeg_train_steps=100, train_batch=128, budget_s=440, device_tests="cuda", lrn_kernel="auto")
DRY = Sizes(device="cpu", quick=True, step_batches=(2,), precisions=("fp32",), precision="fp32", compile_batch=0, profile_batch=2,
            photos=12, val_photos=4, data_batches=1, decode_photos=8, workers=1,
            train_steps=1, jpeg_train_steps=0, train_batch=4, budget_s=420,
            device_tests="cpu and (batches or lrn)", lrn_kernel="eager")


class Check:
    """Runs the commands, keeps the log, writes each part's JSON as it fills."""

    def __init__(self, out: Path, work: Path, sizes: Sizes) -> None:
        self.out, self.work, self.sizes = out, work, sizes
        self.start = time.monotonic()
        self.fast_precision = "bf16"  # the precision of the bf16 rows: fp32 on a CPU that only emulates bf16 (part 1 finds out)
        self.log = open(out / "gpu_check.log", "a", buffering=1)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
                    "PYTHONUNBUFFERED": "1"}

    def left(self) -> float:
        return self.sizes.budget_s - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self, part: dict, name: str, argv: list[str], limit: float, env: dict | None = None,
            stdout_json: bool = False) -> dict:
        """Run ``argv`` (at most ``limit`` s, and never past the budget); record it under part["steps"][name],
        with its standard output parsed as JSON under "json" when ``stdout_json``."""
        timeout = min(limit, self.left())
        if timeout < 5:
            step = {"status": "skipped", "reason": f"out of time ({self.sizes.budget_s:.0f} s budget)", "argv": argv}
            return self._record(part, name, step)
        self.say(f"{part['part']}/{name}: {' '.join(argv)}  (limit {timeout:.0f} s)")
        started = time.monotonic()
        stdout = ""
        try:  # a session of its own, so that a timeout ends its DataLoader and Pool workers too
            proc = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as e:
            rc, output = "not run", str(e)
        else:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
                rc, output = proc.returncode, stdout + stderr
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
                rc, output, stdout = "timeout", stdout + stderr, ""
        seconds = time.monotonic() - started
        self.log.write(output if output.endswith("\n") else output + "\n")
        step = {"status": "ok" if rc == 0 else "error", "rc": rc, "seconds": round(seconds, 1), "argv": argv,
                "limit_s": round(timeout), "tail": output[-3000:]}
        if stdout_json and rc == 0:
            try:
                step["json"] = json.loads(stdout)
            except json.JSONDecodeError as e:
                step |= {"status": "error", "json_error": str(e)}
        self.say(f"{part['part']}/{name}: {step['status']} (rc {rc}) in {seconds:.1f} s")
        return self._record(part, name, step)

    def alexnet(self, part: dict, name: str, args: list[str], limit: float, env: dict | None = None,
                stdout_json: bool = False) -> dict:
        return self.run(part, name, [sys.executable, "-m", "alexnet", *args], limit, env, stdout_json)

    def bench(self, part: dict, name: str, args: list[str], limit: float, env: dict | None = None) -> dict:
        """``alexnet bench ... --json``, its report kept in the step."""
        report = self.work / f"{name}.json"
        report.unlink(missing_ok=True)
        quick = ["--quick"] if self.sizes.quick else []
        step = self.alexnet(part, name, ["bench", *args, "--device", self.sizes.device, *quick, "--json", str(report)],
                            limit, env)
        if report.is_file():
            step["report"] = json.loads(report.read_text())
            self.write(part)
        return step

    def _record(self, part: dict, name: str, step: dict) -> dict:
        part["steps"][name] = step
        self.write(part)
        return step

    def write(self, part: dict) -> None:
        status = {s["status"] for s in part["steps"].values()}
        if part.get("error") or "error" in status:
            part["status"] = "error"
        elif "skipped" in status:  # out of time
            part["status"] = "skipped" if status == {"skipped"} else "partial"
        else:
            part["status"] = "ok"
        part["seconds"] = round(time.monotonic() - part["_start"], 1)
        write_json(self.out / f"{part['part']}.json", {k: v for k, v in part.items() if not k.startswith("_")})


def _json_line(output: str) -> dict:
    """The last line of a command's output that is a JSON object (warnings may follow it)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


# -- the parts ------------------------------------------------------------------------------------

def part_env(c: Check, part: dict) -> None:
    part["sizes"] = asdict(c.sizes)
    if shutil.which("nvidia-smi") is None:
        c._record(part, "nvidia_smi", {"status": "ok", "note": "no nvidia-smi on this machine"})
    else:
        c.run(part, "nvidia_smi", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                               "--format=csv"], 20)
    c.run(part, "versions", [sys.executable, "-c", VERSIONS], 60)
    if part["steps"]["versions"]["status"] == "ok":
        part["versions"] = _json_line(part["steps"]["versions"]["tail"])
        if not part["versions"]["bf16_native"]:  # the dry run on an AVX2 CPU: emulated bf16 is 20× slower, and
            c.fast_precision = "fp32"  # tells nothing a GPU would (the CPU's own bf16 paths are tests/core/test_devices.py's)
    quick = ["--quick"] if c.sizes.quick else []
    c.run(part, "peak_rates", [sys.executable, "benchmarks/peak_rates.py", "--device", c.sizes.device, *quick], 90)


VERSIONS = """
import json, os, platform, torch, torchvision
from alexnet.runtime import precision_supported
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(), "bf16_native": precision_supported(device, "bf16")}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info |= {"gpu": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
             "multiprocessors": p.multi_processor_count}
print(json.dumps(info))
"""


def part_step(c: Check, part: dict) -> None:
    s = c.sizes
    for batch in s.step_batches:  # bf16, fp16, fp32 (cuDNN's TF32 convolutions, PyTorch's default), channels_last
        precisions = [a for p in s.precisions for a in ("--precision", p)]
        c.bench(part, f"step_b{batch}", ["step", "--model", "alexnet", "--batch-size", str(batch), *precisions,
                                         "--no-baseline", "--lrn-kernel", s.lrn_kernel], 120)
    if s.device == "cuda":  # fp32 with TF32 matrix products too (cuBLAS override: the fc layers)
        c.bench(part, f"step_b{s.step_batches[-1]}_tf32", ["step", "--model", "alexnet", "--batch-size",
                str(s.step_batches[-1]), "--precision", "fp32", "--no-baseline"], 90,
                env={"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"})
    if s.compile_batch:
        c.bench(part, f"step_b{s.compile_batch}_compiled", ["step", "--model", "alexnet", "--batch-size",
                str(s.compile_batch), "--precision", "bf16", "--compile", "--no-baseline"], 150)
    c.run(part, f"profile_{c.fast_precision}", [sys.executable, "benchmarks/profile_step.py", "--device", s.device, "--batch-size",
                                      str(s.profile_batch), "--precision", c.fast_precision, "--rows", "25", "--like-for-like"], 90)
    quick = ["--quick"] if s.quick else []  # issue 24: towers grouped or split, the LRN's window sum and kernels, on cuDNN
    precisions = [a for p in dict.fromkeys(("fp32", c.fast_precision)) for a in ("--precision", p)]
    c.run(part, "layer_forms", [sys.executable, "benchmarks/layer_forms.py", "--device", s.device, "--batch-size",
                                str(s.step_batches[0]), *precisions, *quick], 90)


def part_end_to_end(c: Check, part: dict) -> None:
    s = c.sizes
    started = time.monotonic()
    root = c.work / f"photos-{s.photos}"
    make_photos(root, s.photos, s.val_photos, s.workers)
    part["steps"]["photos"] = {"status": "ok", "seconds": round(time.monotonic() - started, 1), "train": s.photos,
                               "val": s.val_photos, "folder_bytes": _bytes(root)}
    c.write(part)
    sampler = GpuSampler(c.work / "nvidia-smi.csv") if shutil.which("nvidia-smi") else None
    try:
        data = c.bench(part, "bench_data", ["data", "--model", "alexnet", "--precision", c.fast_precision, "--photos",
                                            str(s.photos), "--workers", str(s.workers), "--data-batches",
                                            str(s.data_batches), "--data-dir", str(c.work), "--lrn-kernel", s.lrn_kernel], 240)
    finally:
        part["gpu_utilisation"] = sampler.stop() if sampler else "nvidia-smi not found"
    if "report" in data:
        part["figures"] = end_to_end_figures(data["report"], c.out / "2_step.json")
    c.write(part)
    c.alexnet(part, "prepare_jpeg", ["prepare", str(root), str(c.work / "store-jpeg"), "--encoding", "jpeg",
                                     "--workers", str(s.workers), "--no-progress", "--force"], 120)
    make_photos(c.work / f"photos-{s.decode_photos}", s.decode_photos, 0, s.workers)
    c.bench(part, "bench_decode", ["decode", "--photos", str(s.decode_photos), "--workers", str(s.workers),
                                   "--data-dir", str(c.work)], 120)
    for name, store in (("raw", c.work / f"store-{s.photos}"), ("jpeg", c.work / "store-jpeg")):
        if store.is_dir():
            part.setdefault("store_bytes", {})[name] = _bytes(store)
    c.write(part)


def part_train(c: Check, part: dict) -> None:
    s = c.sizes
    for name, store, steps in (("raw", c.work / f"store-{s.photos}", s.train_steps),
                               ("jpeg", c.work / "store-jpeg", s.jpeg_train_steps)):
        if steps == 0:  # the dry run: tests/data/test_data_jpeg.py trains from a JPEG store already
            part.setdefault("runs", {})[name] = {"status": "skipped in the dry run"}
            continue
        run = c.work / f"run-{name}"
        c.alexnet(part, f"train_{name}", ["train", "--preset", "paper", "--data", str(store), "--out", str(run),
                                          "--device", s.device, "--precision", s.precision, "--batch-size", str(s.train_batch),
                                          "--checkpoint-every", str(max(1, steps // 2)), "--set", f"max_steps={steps}",
                                          "--lrn-kernel", s.lrn_kernel, "--force", "--quiet"], 150)
        part.setdefault("runs", {})[name] = run_summary(run)
        c.write(part)
    c.alexnet(part, "eval_10_views", ["eval", "--checkpoint", str(c.work / "run-raw" / "checkpoints" / "last.pt"),
                                      "--data", str(c.work / f"store-{s.photos}"), "--split", "val", "--views", "10",
                                      "--device", s.device, "--json"], 90, stdout_json=True)


def part_towers_tests(c: Check, part: dict) -> None:
    c.run(part, "two_towers", [sys.executable, "-c", TOWERS, c.sizes.device], 90)
    if part["steps"]["two_towers"]["status"] == "ok":
        part["two_towers"] = _json_line(part["steps"]["two_towers"]["tail"])
        c.write(part)
    device_tests(c, part)


DEVICE_TESTS = "tests/core/test_devices.py"  # every test with a device branch, parametrised over cpu and cuda


def device_tests(c: Check, part: dict) -> dict:
    """The device's tests of :data:`DEVICE_TESTS`, recorded with pytest's counts; an error unless at least
    one ran and none was skipped: a run of nothing but skips is a failure here, not a pass."""
    report = c.work / "device_tests.xml"
    report.unlink(missing_ok=True)
    step = c.run(part, "pytest_devices", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", c.sizes.device_tests,
                                          "--junitxml", str(report), DEVICE_TESTS], 150)
    if step["status"] == "skipped":  # out of time: nothing ran
        return step
    step["tests"] = counts = junit_counts(report)
    if step["status"] == "ok" and (not counts.get("passed") or counts.get("skipped")):
        step |= {"status": "error", "reason": f"-k {c.sizes.device_tests!r}: {counts.get('passed', 0)} passed, "
                                              f"{counts.get('skipped', 0)} skipped; every device test must run"}
    return c._record(part, "pytest_devices", step)


def junit_counts(report: Path) -> dict:
    """Tests, failures, errors, skipped and passed of a pytest ``--junitxml`` report ({} when there is none)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return counts | {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}


TOWERS = """
import json, sys, torch
from alexnet import models
from alexnet.models.towers import TwoTowerAlexNet
device = sys.argv[1] if sys.argv[1] == "cpu" else "cuda:0"
torch.manual_seed(0)
grouped = models.create("alexnet").eval()
towers = TwoTowerAlexNet(grouped, [device, device]).eval()
x = torch.randn(8, 3, 227, 227)
with torch.no_grad():
    ref = grouped.to(device)(x.to(device)).double()
    out = towers(x.to(device)).double().to(ref.device)
err = ((out - ref).norm() / ref.norm()).item()
print(json.dumps({"devices": [device, device], "relative_error": err, "max_abs_diff": (out - ref).abs().max().item(),
                  "equal_within_1e-4": err < 1e-4}))
sys.exit(0 if err < 1e-4 else 1)
"""


# -- the photographs, the GPU's load and the figures ----------------------------------------------

def make_photos(root: Path, train: int, val: int, workers: int) -> None:
    """ImageNet-layout JPEG photographs as :func:`alexnet.tools.bench.photos.make_photo_folder` makes them, in
    parallel; ``train/.complete`` lets ``bench data`` take them as its own."""
    done = root / "train" / ".complete"
    if done.is_file() and done.read_text() == str(train):
        return
    jobs = [(root / "train", i) for i in range(train)] + [(root / "val", train + i) for i in range(val)]
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"  # this process holds no torch
    with multiprocessing.get_context(context).Pool(max(1, workers)) as pool:
        pool.starmap(_photo, jobs, chunksize=64)
    done.write_text(str(train))


_PICTURES: list | None = None


def _photo(folder: Path, i: int, classes: int = 4) -> None:
    import numpy as np

    from alexnet.tools.bench.photos import random_photo, source_pictures

    global _PICTURES
    if _PICTURES is None:
        _PICTURES = source_pictures()
    path = folder / f"class_{i % classes}" / f"{i:06d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    random_photo(_PICTURES[i % len(_PICTURES)], np.random.default_rng([0, i])).save(path, format="JPEG", quality=90)


class GpuSampler:
    """``nvidia-smi`` sampling the GPU's utilisation every 200 ms while it lives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w")
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                      "-lms", "200"], stdout=self.file, stderr=subprocess.DEVNULL)

    def stop(self) -> dict:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.file.close()
        values = []
        for line in self.path.read_text().splitlines():
            try:
                values.append([float(v) for v in line.split(",")])
            except ValueError:
                continue
        if not values:
            return {"samples": 0}
        util = sorted(v[0] for v in values)
        return {"samples": len(values), "period_ms": 200, "util_mean": sum(util) / len(util),
                "util_median": util[len(util) // 2], "util_max": util[-1], "memory_used_mib_max": max(v[1] for v in values),
                "note": "over the whole bench data run: photograph preparation and the reference included"}


def end_to_end_figures(report: dict, step_json: Path) -> dict:
    """Ours and the reference end to end, their ratio, the share of time the step waits for data."""
    rows = report["results"]
    ours = next((r for r in rows if r["impl"] == "ours" and r["what"] == "end_to_end"), None)
    ref = next((r for r in rows if r["impl"] == "reference" and r["what"] == "end_to_end"), None)
    figures: dict = {"ours_images_per_s": ours and ours["images_per_s"], "reference_images_per_s": ref and ref["images_per_s"]}
    if ours and ref:
        figures["ratio"] = ours["images_per_s"] / ref["images_per_s"]
    step = ours and _step_row(step_json, ours["precision"], report["config"]["batch_size"])
    if step:
        figures["step_only_images_per_s"] = step["images_per_s"]
        figures["data_wait_share"] = max(0.0, 1 - ours["images_per_s"] / step["images_per_s"])
    return figures


def _step_row(step_json: Path, precision: str, batch: int, compiled: bool = False) -> dict | None:
    if not step_json.is_file():
        return None
    for step in json.loads(step_json.read_text())["steps"].values():
        for r in step.get("report", {}).get("results", []):
            if (r["impl"] == "ours" and r.get("model") == "alexnet" and r["precision"] == precision
                    and r["batch_size"] == batch and ("compiled" in r["label"]) == compiled):
                return r
    return None


def run_summary(run: Path) -> dict:
    """What a train run left: its files, and the last metrics line and report figures."""
    summary: dict = {"files": sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())} if run.is_dir() else {}
    metrics = run / "metrics.jsonl"
    if metrics.is_file() and metrics.read_text().strip():
        summary["last_metrics"] = json.loads(metrics.read_text().strip().splitlines()[-1])
    report = run / "report.json"
    if report.is_file():
        kept = ("final", "steps", "epochs", "seconds")
        summary["report"] = {k: v for k, v in json.loads(report.read_text()).items() if k in kept}
    return summary


def summary(out: Path) -> dict:
    """The headline figures against the issue's targets, from the parts' files."""
    env = _load(out / "1_env.json")
    e2e = _load(out / "3_end_to_end.json")
    result: dict = {"parts": {p: _load(out / f"{p}.json").get("status", "not run") for p in PARTS},
                    "gpu": env.get("versions", {}).get("gpu")}
    steps = [r for step in _load(out / "2_step.json").get("steps", {}).values()
             for r in step.get("report", {}).get("results", []) if r.get("model") == "alexnet" and r["impl"] == "ours"]
    if steps:
        best = max(steps, key=lambda r: r["images_per_s"])
        result["best_step"] = {k: best.get(k) for k in ("label", "batch_size", "images_per_s", "tflops", "of_matmul_peak")}
    fig = e2e.get("figures", {})
    rate = fig.get("ours_images_per_s")
    if rate:
        peak = next((s["report"]["machine"].get("matmul_peak", {}).get("tflops")
                     for s in e2e["steps"].values() if "report" in s), None)
        result["end_to_end"] = {
            **fig, "target_30000_images_per_s": rate >= 30_000, "target_10x_reference": (fig.get("ratio") or 0) >= 10,
            "sustained_tflops": rate * PAPER_TRAIN_GFLOP / 1e3,
            "of_bf16_matmul_peak": rate * PAPER_TRAIN_GFLOP / 1e3 / peak if peak else None,
            "hours_for_90_imagenet_epochs": 90 * IMAGENET_TRAIN / rate / 3600,
            "paper": "five to six days on two GTX 580 3GB GPUs (§5)"}
    return result


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the parts' JSON, summary.json and gpu_check.log ($OUT)")
    p.add_argument("--work", default=None, help="scratch folder for photographs, stores and runs (default: a temp folder)")
    p.add_argument("--cpu-dry-run", action="store_true", help="every part on the CPU at toy sizes (seconds to a minute)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run (default: all: {','.join(PARTS)})")
    p.add_argument("--budget", type=float, default=None, help="seconds after which no command starts (default: 440 on a GPU)")
    args = p.parse_args()
    unknown = sorted(set(args.parts.split(",")) - set(PARTS))
    if unknown:
        p.error(f"unknown part {', '.join(unknown)}; valid: {', '.join(PARTS)}")
    sizes = DRY if args.cpu_dry_run else GPU
    if args.budget:
        sizes = Sizes(**{**asdict(sizes), "budget_s": args.budget})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or Path(os.environ.get("TMPDIR", "/tmp")) / "alexnet-gpu-check")
    work.mkdir(parents=True, exist_ok=True)
    check = Check(out, work, sizes)
    check.say(f"gpu check on {sizes.device}, budget {sizes.budget_s:.0f} s, out {out}, work {work}")
    functions = {"1_env": part_env, "2_step": part_step, "3_end_to_end": part_end_to_end, "4_train": part_train,
                 "5_towers_tests": part_towers_tests}
    for name in PARTS:
        if name not in args.parts.split(","):
            continue
        part = {"part": name, "status": "running", "steps": {}, "_start": time.monotonic()}
        try:
            functions[name](check, part)
        except Exception as e:  # a part that breaks is recorded; the next one still runs
            part["error"] = f"{type(e).__name__}: {e}"
            part["traceback"] = traceback.format_exc()[-3000:]
            check.say(f"{name}: failed: {part['error']}")
        check.write(part)
    write_json(out / "summary.json", summary(out))
    check.say(f"done: {json.dumps(summary(out)['parts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
