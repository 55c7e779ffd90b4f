"""``alexnet bench``: our AlexNets against the reference, in one run on one machine.

Seven parts, each a module: ``step`` (the training step on synthetic data), ``infer`` (latency at
batch 1, throughput at batch 64; eager, compiled, ONNX Runtime), ``data`` (training from real
JPEG photographs end to end, and the data path alone), ``decode`` (images/s per CPU core from an
ImageFolder, the raw store and the JPEG store, and their sizes on disk) and ``features``
(``alexnet features``: fc7 of JPEG photographs against ImageFolder + DataLoader + torchvision's
model), and ``d2l`` (a learner's epoch of d2l's chapter on Fashion-MNIST: d2l's code as written
against ``alexnet train --preset d2l``'s path), and ``serve`` (``alexnet serve`` under load: the real server
in a subprocess on 127.0.0.1, 32 concurrent clients, dynamic batching against ``--max-batch-size 1``,
and a full queue's 503s). Every figure is the median over ``reps`` repetitions after ``warmup`` untimed ones, and
every row (:class:`~alexnet.tools.bench.rows.Row`) carries its ratio to the reference row of its part. The
report (a dict, written as JSON by the CLI) holds the machine, the resolved config and the rows;
docs/PERFORMANCE.md records the figures.

>>> from alexnet.tools.bench import BenchConfig, run
>>> report = run(BenchConfig(parts=("step",), quick=True))
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace

import torch

from alexnet import models, runtime
from alexnet.errors import at_least, not_one_of, unknown, worker_count
from alexnet.tools.bench import d2l, data, decode, features, infer, serve, step
from alexnet.tools.bench.timing import machine, matmul_tflops

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("step", "infer", "data", "decode", "features", "d2l", "serve")
# The AlexNet family of the registry (other families — lenet, vgg, … — can be named with --model).
ALEXNET_VARIANTS: tuple[str, ...] = ("alexnet", "bvlc_alexnet", "caffenet", "alexnet_owt", "alexnet_d2l", "alexnet_small")
COUNT_FLAGS = {"batch_size": ("--batch-size", 1), "reps": ("--reps", 1), "infer_batch": ("--infer-batch", 1),
               "infer_reps": ("infer_reps", 1), "data_batches": ("--data-batches", 1), "serve_clients": ("--clients", 1),
               "serve_requests": ("--requests", 1), "photos": ("--photos", 1), "warmup": ("--warmup", 0)}  # (flag, its least)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how. ``resolve`` fills the defaults that depend on the device."""

    parts: tuple[str, ...] = PARTS
    device: str = "auto"  # "auto": cuda, else mps, else cpu
    models: tuple[str, ...] = ()  # () → step: every AlexNet variant; infer: alexnet; data: alexnet and alexnet_owt
    batch_size: int = 128  # the training batch (§5); the reference runs at the same batch
    precisions: tuple[str, ...] = ()  # () → fp32 and the best autocast precision the device supports
    channels_last: bool = True
    compile: bool = False  # also measure torch.compile (minutes on a small CPU)
    quick: bool = False  # tiny batches and one repetition: checks that everything runs, in seconds
    warmup: int = 2  # untimed calls before timing
    reps: int = 5  # timed repetitions; the median is reported
    infer_batch: int = 64  # the throughput batch of the inference part
    infer_reps: int = 20  # repetitions at batch 1
    baseline: bool = True  # also time the naive paper net (F.local_response_norm, NCHW, fp32)
    tune_allocator: bool = True  # CPU: alexnet.runtime.tune_cpu_allocator for our rows
    lrn_kernel: str = "auto"  # the LRN kernel of our training rows (alexnet.models.lrn); step adds an eager row where auto compiles
    workers: int | None = None  # data-loader processes; None → one per CPU core, 0 → the main process (as train's)
    photos: int = 512  # JPEG photographs made for the data part (at least batch × (data_batches + 1))
    data_batches: int = 3  # batches per timed chunk in the data part
    data_dir: str | None = None  # where the photographs and the store are kept (default: the temp dir)
    serve_clients: int = 32  # concurrent clients of the serve part (the target is at 32)
    serve_requests: int = 4  # requests each client sends in one window of the serve part (a window: clients × this)
    serve_seconds: float = 300.0  # the serve part starts no timed window after this many seconds of timing

    def __post_init__(self) -> None:
        extra = sorted(set(self.parts) - set(PARTS))
        if extra:
            raise ValueError(unknown("bench part", extra[0], PARTS))
        for p in self.precisions:
            if p not in runtime.PRECISIONS:
                raise ValueError(not_one_of("precision ", p, runtime.PRECISIONS))
        for name in self.models:
            models.entry(name)  # raises, listing the valid names
        if self.lrn_kernel not in runtime.LRN_KERNELS:
            raise ValueError(not_one_of("lrn_kernel ", self.lrn_kernel, runtime.LRN_KERNELS))
        for key, (flag, least) in COUNT_FLAGS.items():  # named by the flag a user typed (infer_reps has none: its field name)
            at_least(flag, getattr(self, key), least)
        if self.workers is not None:
            worker_count("--workers", self.workers)
        if not self.serve_seconds > 0:
            raise ValueError(f"--serve-seconds {self.serve_seconds:g}: must be more than 0")

    @property
    def step_models(self) -> tuple[str, ...]:
        return self.models or ALEXNET_VARIANTS

    @property
    def infer_models(self) -> tuple[str, ...]:
        return self.models or ("alexnet",)

    @property
    def data_models(self) -> tuple[str, ...]:
        """What ours trains end to end: the paper's net, and torchvision's architecture (the reference's network)."""
        return self.models or ("alexnet", "alexnet_owt")

    @property
    def serve_models(self) -> tuple[str, ...]:
        """What the serve part serves: torchvision's architecture at 224 px, what a deployment runs."""
        return self.models or ("alexnet_owt",)

    def resolve(self, device: torch.device) -> BenchConfig:
        """The config as run: precisions and workers filled in, the quick mode applied."""
        cfg = self
        if not cfg.precisions:
            best = next((p for p in ("bf16", "fp16") if runtime.precision_supported(device, p)), None)
            cfg = replace(cfg, precisions=("fp32", best) if best else ("fp32",))
        if cfg.workers is None:
            cfg = replace(cfg, workers=data.default_workers())
        if cfg.quick:
            cfg = replace(cfg, batch_size=min(cfg.batch_size, 4), warmup=1, reps=1, infer_batch=min(cfg.infer_batch, 4),
                          infer_reps=2, photos=min(cfg.photos, 12), data_batches=1, workers=min(cfg.workers, 1),
                          models=cfg.models or ("alexnet",), precisions=cfg.precisions if self.precisions else ("fp32",),
                          serve_clients=min(cfg.serve_clients, 8), serve_requests=min(cfg.serve_requests, 3),
                          serve_seconds=min(cfg.serve_seconds, 60.0))
        return cfg


def run(config: BenchConfig) -> dict:
    """Run the asked-for parts; returns {"machine", "config", "results", "seconds"}."""
    device = runtime.resolve_device(config.device)
    cfg = config.resolve(device)
    for p in cfg.precisions:
        runtime.warn_if_emulated(device, p)
    start = time.perf_counter()
    report = {"machine": machine(device), "config": asdict(cfg), "results": []}
    runtime.apply_process_settings(runtime.RuntimeSettings(str(device), tune_allocator=False))  # cudnn.benchmark for every row, the reference's too
    peak = None
    if {"step", "data", "d2l"} & set(cfg.parts):  # the ceiling the training rows are measured against
        dtype = torch.bfloat16 if runtime.precision_supported(device, "bf16") else torch.float32
        peak = matmul_tflops(device, dtype, n=512 if cfg.quick else 8192 if device.type == "cuda" else 4096)
        report["machine"]["matmul_peak"] = {"dtype": str(dtype).removeprefix("torch."), "tflops": peak}
    parts = {"step": step.run, "infer": infer.run, "data": data.run, "decode": decode.run, "features": features.run,
             "d2l": d2l.run, "serve": serve.run}
    for name in PARTS:
        if name in cfg.parts:
            log.info("bench: part %s", name)
            report["results"] += [row.to_dict(peak) for row in parts[name](cfg, device)]
    report["machine"]["load_average_after"] = machine(device).get("load_average")
    report["seconds"] = time.perf_counter() - start
    return report


def format_report(report: dict) -> str:
    """The plain table the CLI prints: one line per row, images/s, ms and the ratio to the reference."""
    m = report["machine"]
    lines = [f"device {m['device']} ({m.get('gpu') or m['cpu']}), torch {m['torch']}, {m['torch_threads']} threads, "
             f"load {m.get('load_average')}"]
    if "matmul_peak" in m:
        lines.append(f"{m['matmul_peak']['dtype']} matrix products here: {m['matmul_peak']['tflops']:.3g} TFLOP/s "
                     "(TFLOP/s: the training arithmetic a row sustained, and its % of that)")
    part = None
    for r in report["results"]:
        if r["part"] != part:
            part = r["part"]
            header = (f"{part:<7} {'what':<70} {'batch':>5} {'img/s':>9} {'ms':>9} {'ratio':>6}  {'peak MB':>8}"
                      f"  {'TFLOP/s':>13}")
            lines += ["", serve.HEADER if part == "serve" else header]
        if part == "serve":
            lines.append(serve.format_row(r))
            continue
        if "images_per_s" not in r:
            lines.append(f"{'':<7} {r['label'] + ' (' + r.get('kind', '') + ')':<70} {r['batch_size']:>5}  {r.get('note', '')}")
            continue
        label = r["label"] + (f" ({r['kind']})" if "kind" in r else "")
        if "like_for_like" in r:
            ci = (r.get("like_for_like_by_round") or {}).get("ci95")
            label += f" [{r['like_for_like']:.2f}× like for like" + (f", by round 95 % {ci[0]:.2f}–{ci[1]:.2f}]" if ci else "]")
        if "minutes_per_epoch" in r:
            label += f", {r['minutes_per_epoch']:.1f} min/epoch"
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else ""
        peak = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") is not None else ""
        rate = f"{r['tflops']:.3g} ({100 * r['of_matmul_peak']:.0f} %)" if "of_matmul_peak" in r else ""
        lines.append(f"{'':<7} {label:<70} {r['batch_size']:>5} {r['images_per_s']:>9.1f} {r['ms']:>9.1f} {ratio:>6}  {peak:>8}"
                     f"  {rate:>13}")
    lines.append(f"\n{report['seconds']:.0f} s in all")
    return "\n".join(lines)
