"""Part ``infer``: latency at batch 1 and throughput at batch 64 (configurable), in eval mode.

Each model runs three ways: eager PyTorch (the reference layout, fp32 NCHW, and the fast path:
channels_last at the chosen precisions), ``torch.compile`` (only with ``--compile``: on a 2-core CPU
compiling AlexNet takes about a minute), and ONNX Runtime's CPU provider on a file exported with a
dynamic batch axis. Rows that cannot run here say why in ``note`` instead of failing the bench.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from alexnet import models, runtime
from alexnet.tools.bench.step import REFERENCE, reference_model
from alexnet.tools.bench.timing import measure
from alexnet.tools.interop.export import export_onnx

log = logging.getLogger(__name__)


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(cfg, device: torch.device) -> list[dict]:
    rows: list[dict] = []
    runtime.apply_process_settings(runtime.RuntimeSettings(str(device), tune_allocator=cfg.tune_allocator))
    batches = {"latency": 1, "throughput": cfg.infer_batch}

    def add(label: str, impl: str, model_name: str, engine: str, precision: str, fn_for: Callable[[int], Callable[[], object]] | None,
            dev: torch.device, note: str = "") -> None:
        for kind, batch in batches.items():
            r = {"part": "infer", "label": label, "impl": impl, "model": model_name, "engine": engine, "precision": precision,
                 "kind": kind, "batch_size": batch, "note": note}
            if fn_for is not None:
                m = measure(fn_for(batch), dev, warmup=cfg.warmup, reps=cfg.infer_reps if batch == 1 else cfg.reps)
                r.update(m.to_dict(), ms=m.median * 1e3, images_per_s=batch / m.median)
            rows.append(r)

    names = [(REFERENCE, "reference")] + [(n, "ours") for n in cfg.infer_models]
    for name, impl in names:
        torch.manual_seed(0)
        model = reference_model() if impl == "reference" else models.create(name)
        model.eval()
        size, channels = model.input_size, model.in_channels
        data = torch.randn(cfg.infer_batch, channels, size, size)
        on_device = data.to(device)  # eager rows time the forward pass, not a host-to-device copy
        layouts = [("fp32", False)] + [(p, cfg.channels_last) for p in cfg.precisions if (p, cfg.channels_last) != ("fp32", False)]
        for precision, cl in layouts:
            fast = runtime.RuntimeSettings(device=str(device), precision=precision, channels_last=cl)
            m = runtime.prepare_model(model, fast)
            label = f"{name} eager {precision}{' channels_last' if cl else ''}"
            log.info("infer: %s", label)
            add(label, impl, name, "eager", precision, lambda b, m=m, fast=fast, x=on_device: (lambda: runtime.predict(m, x[:b], fast)), device)
            if cfg.compile:
                mc = torch.compile(m)
                add(label.replace("eager", "compiled"), impl, name, "compiled", precision,
                    lambda b, mc=mc, fast=fast, x=on_device: (lambda: runtime.predict(mc, x[:b], fast)), device)
        if not cfg.compile:
            add(f"{name} compiled", impl, name, "compiled", "fp32", None, device, note="skipped: pass --compile")
        add_onnx(cfg, model, name, impl, data, add)
    for kind in batches:  # ratio to the reference's eager fp32 NCHW row of the same kind
        ref = next(r for r in rows if r["kind"] == kind and r["impl"] == "reference" and r["label"].endswith("eager fp32"))
        for r in rows:
            if r["kind"] == kind and "images_per_s" in r:
                r["ratio"] = r["images_per_s"] / ref["images_per_s"]
    return rows


def add_onnx(cfg, model: nn.Module, name: str, impl: str, data: torch.Tensor, add) -> None:
    label = f"{name} onnxruntime cpu fp32"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        add(label, impl, name, "onnxruntime", "fp32", None, torch.device("cpu"), note="skipped: onnxruntime is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        try:
            log.info("infer: exporting %s to ONNX", name)
            export_onnx(model, path, overwrite=True, input_size=data.shape[-1], channels=data.shape[1])
            session = ort_session(path, torch.get_num_threads())
        except Exception as e:  # an exporter gap is a result to report, not a crash of the bench
            add(label, impl, name, "onnxruntime", "fp32", None, torch.device("cpu"), note=f"skipped: export failed: {type(e).__name__}: {e}"[:200])
            return
        inputs = data.numpy()
        add(label, impl, name, "onnxruntime", "fp32", lambda b: (lambda: session.run(None, {"images": inputs[:b]})), torch.device("cpu"))
