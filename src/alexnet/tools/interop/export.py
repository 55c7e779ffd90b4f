"""A checkpoint's model out to other runtimes: ONNX, TorchScript, safetensors.

* ONNX: the model in eval mode (dropout off), input ``images`` float [batch, C, S, S] already
  preprocessed, output ``logits`` [batch, K]; the batch axis is dynamic. Exported with the
  TorchScript-based exporter (``dynamo=False``), which needs no extra packages; opset 17.
* TorchScript: ``torch.jit.trace`` of the eval-mode model on one [1, C, S, S] input (the model has
  no data-dependent control flow, so the trace is the model).
* safetensors: the checkpoint without its training state, written by
  :func:`alexnet.checkpoint.save_safetensors` (the format is :mod:`alexnet.checkpoint.safetensors`'s:
  the checkpoint package owns both on-disk forms); :func:`alexnet.checkpoint.load` reads it back.

Every export is written atomically (:mod:`alexnet.atomic`).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch
from torch import nn

from alexnet.atomic import atomic_path
from alexnet.checkpoint import Checkpoint, restore_model, save_safetensors
from alexnet.errors import AlexNetError

FORMATS = ("onnx", "torchscript", "safetensors")
ONNX_OPSET = 17


def example_input(model: nn.Module, batch: int = 1, input_size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """A zero batch of the model's input shape (``input_size``/``channels`` for models without those attributes)."""
    size = input_size or model.input_size
    return torch.zeros(batch, channels or model.in_channels, size, size)


def export_onnx(model: nn.Module, out: str | os.PathLike, *, opset: int = ONNX_OPSET, overwrite: bool = False,
                input_size: int | None = None, channels: int | None = None) -> None:
    """ONNX with a dynamic batch axis (the TorchScript exporter: it needs no onnxscript)."""
    if importlib.util.find_spec("onnx") is None:
        raise AlexNetError("--format onnx needs the onnx package: pip install 'alexnet[onnx]' (or pip install onnx)")
    model = model.eval().cpu()

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example_input(model, 2, input_size, channels),), tmp, dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )

    with atomic_path(out, overwrite=overwrite) as tmp:
        write(str(tmp))


def export_torchscript(model: nn.Module, out: str | os.PathLike, *, overwrite: bool = False) -> None:
    model = model.eval().cpu()

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            traced = torch.jit.trace(model, example_input(model))
            traced.save(tmp)

    with atomic_path(out, overwrite=overwrite) as tmp:
        write(str(tmp))


def export(ckpt: Checkpoint, fmt: str, out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write ``ckpt`` in ``fmt`` (onnx, torchscript, safetensors) to ``out``."""
    if fmt not in FORMATS:
        raise AlexNetError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "safetensors":
        save_safetensors(out, ckpt, overwrite=overwrite)
        return
    model = restore_model(ckpt)
    if fmt == "onnx":
        export_onnx(model, out, overwrite=overwrite)
    else:
        export_torchscript(model, out, overwrite=overwrite)
