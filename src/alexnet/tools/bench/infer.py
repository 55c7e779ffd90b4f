"""Part ``infer``: latency at batch 1 and throughput at batch 64 (configurable), in eval mode.

Each model runs three ways: eager PyTorch (the reference layout, fp32 NCHW, and the fast path:
channels_last at the chosen precisions), ``torch.compile`` (only with ``--compile``: on a 2-core CPU
compiling AlexNet takes about a minute), and ONNX Runtime's CPU provider on a file exported with a
dynamic batch axis, in fp32 and quantized to int8 (static QDQ and dynamic, as ``alexnet export --quantize
int8`` does; calibrated on the bench's own random inputs, which is enough for timing). Rows that cannot
run here say why in ``note`` instead of failing the bench.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
from torch import nn

from alexnet import models, runtime
from alexnet.tools.bench.rows import Row, with_ratios
from alexnet.tools.bench.step import REFERENCE, reference_model
from alexnet.tools.bench.timing import measure
from alexnet.tools.interop.export import export_onnx

log = logging.getLogger(__name__)

KINDS = ("latency", "throughput")  # batch 1, and cfg.infer_batch


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def way(label: str, impl: str, model: str, engine: str, precision: str) -> Row:
    """One way of running ``model``, before it is measured at either batch."""
    return Row("infer", label, impl, "", 0, note="", settings={"model": model, "engine": engine, "precision": precision})


def measured_rows(cfg, how: Row, call_for: Callable[[int], Callable[[], object]], device: torch.device) -> list[Row]:
    """The latency row and the throughput row of ``how``: ``call_for(batch)`` is one forward pass at ``batch``."""
    rows = []
    for kind, batch in zip(KINDS, (1, cfg.infer_batch)):
        m = measure(call_for(batch), device, warmup=cfg.warmup, reps=cfg.infer_reps if batch == 1 else cfg.reps)
        rows.append(replace(how, what=kind, batch_size=batch, images_per_call=batch, timing=m))
    return rows


def skipped_rows(cfg, how: Row, note: str) -> list[Row]:
    """``how`` cannot run here: its two rows say why."""
    return [replace(how, what=kind, batch_size=batch, note=note) for kind, batch in zip(KINDS, (1, cfg.infer_batch))]


def eager_rows(cfg, device: torch.device, model: nn.Module, name: str, impl: str, data: torch.Tensor) -> list[Row]:
    """Eager PyTorch in the reference's layout (fp32 NCHW) and the fast path's (channels_last at each precision),
    each also ``torch.compile``'d with ``--compile``; ``data`` already on the device."""
    layouts = [("fp32", False)] + [(p, cfg.channels_last) for p in cfg.precisions if (p, cfg.channels_last) != ("fp32", False)]
    rows = []
    for precision, cl in layouts:
        fast = runtime.RuntimeSettings(device=str(device), precision=precision, channels_last=cl)
        inference = model if precision == "fp32" else runtime.for_inference(copy.deepcopy(model), fast)  # as predict and serve run it
        prepared = runtime.prepare_model(inference, fast)
        label = f"{name} eager {precision}{' channels_last' if cl else ''}"
        log.info("infer: %s", label)
        rows += measured_rows(cfg, way(label, impl, name, "eager", precision), _predict(prepared, data, fast), device)
        if cfg.compile:
            compiled = way(label.replace("eager", "compiled"), impl, name, "compiled", precision)
            rows += measured_rows(cfg, compiled, _predict(torch.compile(prepared), data, fast), device)
    if not cfg.compile:
        rows += skipped_rows(cfg, way(f"{name} compiled", impl, name, "compiled", "fp32"), "skipped: pass --compile")
    return rows


def onnx_rows(cfg, model: nn.Module, name: str, impl: str, data: torch.Tensor) -> list[Row]:
    """ONNX Runtime's CPU provider on ``model`` exported with a dynamic batch axis; an exporter gap is a
    result to report (in ``note``), not a crash of the bench."""
    how = way(f"{name} onnxruntime cpu fp32", impl, name, "onnxruntime", "fp32")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return skipped_rows(cfg, how, "skipped: onnxruntime is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        try:
            log.info("infer: exporting %s to ONNX", name)
            export_onnx(model, path, overwrite=True, input_size=data.shape[-1], channels=data.shape[1])
            session = ort_session(path, torch.get_num_threads())
        except Exception as e:
            return skipped_rows(cfg, how, f"skipped: export failed: {type(e).__name__}: {e}"[:200])
        inputs = data.numpy()
        rows = measured_rows(cfg, how, lambda b: partial(session.run, None, {"images": inputs[:b]}), torch.device("cpu"))
        for mode in ("static", "dynamic"):
            rows += int8_rows(cfg, replace(how, what="", label=f"{name} onnxruntime cpu int8 {mode}",
                                           settings={**how.settings, "precision": f"int8 {mode}"}), path, mode, inputs)
        return rows


class _Calibration:
    """ONNX Runtime's calibration reader over the bench's own inputs, 8 at a time (ranges for timing only:
    the accuracy of int8 is measured on real images by ``alexnet eval``, docs/INTEROP.md)."""

    def __init__(self, inputs, count: int = 32) -> None:
        self._batches = iter([{"images": inputs[i:i + 8]} for i in range(0, min(count, len(inputs)), 8)])

    def get_next(self):
        return next(self._batches, None)


def int8_rows(cfg, how: Row, fp32: str, mode: str, inputs) -> list[Row]:
    """The fp32 file ``fp32`` quantized to int8 by ``alexnet export --quantize int8``'s quantizer
    (:func:`alexnet.tools.interop.quantize.quantize_file`), static (QDQ) or dynamic, then timed as fp32 is."""
    from pathlib import Path

    from alexnet.tools.interop.quantize import quantize_file

    out = Path(fp32).with_name(f"{Path(fp32).stem}.int8-{mode}.onnx")
    try:
        log.info("infer: quantizing %s (int8 %s)", fp32, mode)
        quantize_file(Path(fp32), out, mode, _Calibration(inputs) if mode == "static" else None)
        session = ort_session(str(out), torch.get_num_threads())
    except Exception as e:
        return skipped_rows(cfg, how, f"skipped: int8 {mode} failed: {type(e).__name__}: {e}"[:200])
    return measured_rows(cfg, how, lambda b: partial(session.run, None, {"images": inputs[:b]}), torch.device("cpu"))


def run(cfg, device: torch.device) -> list[Row]:
    """The reference (torchvision's AlexNet) and each of ``cfg.infer_models``, eager, compiled and in ONNX Runtime."""
    rows: list[Row] = []
    runtime.apply_process_settings(runtime.RuntimeSettings(str(device), tune_allocator=cfg.tune_allocator))
    for name, impl in [(REFERENCE, "reference")] + [(n, "ours") for n in cfg.infer_models]:
        torch.manual_seed(0)
        model = (reference_model() if impl == "reference" else models.create(name)).eval()
        data = torch.randn(cfg.infer_batch, model.in_channels, model.input_size, model.input_size)
        rows += eager_rows(cfg, device, model, name, impl, data.to(device))  # the forward pass, not a copy, is timed
        rows += onnx_rows(cfg, model, name, impl, data)
    return with_ratios(rows)  # to the reference's eager fp32 NCHW row of the same kind


def _predict(model: nn.Module, data: torch.Tensor, fast: runtime.RuntimeSettings) -> Callable[[int], Callable[[], object]]:
    """For each batch size, one forward pass of ``model`` on the first rows of ``data``."""
    return lambda batch: partial(runtime.predict, model, data[:batch], fast)
