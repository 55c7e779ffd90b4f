"""A checkpoint's model out to other runtimes: ONNX, TorchScript, safetensors.

* ONNX: the model in eval mode (dropout off), input ``images`` float [batch, C, S, S] already
  preprocessed, output ``logits`` [batch, K]; the batch axis is dynamic. Exported with the
  TorchScript-based exporter (``dynamo=False``), which needs no extra packages; opset 17. The file
  carries the checkpoint's metadata (architecture, classes, input size, channels, preprocessing with
  its statistics, the checkpoint file's sha256, the quantization) in its ``metadata_props``
  (:class:`alexnet.checkpoint.onnx_model.OnnxMetadata`), so ``alexnet eval`` and ``predict`` run it
  as they run the checkpoint. ``--quantize int8``: ONNX Runtime's quantizer on that export, static
  (QDQ, calibrated) or dynamic (:mod:`alexnet.tools.interop.quantize`).
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
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from alexnet import checkpoint
from alexnet.atomic import atomic_path, refuse_existing
from alexnet.checkpoint import Checkpoint, OnnxMetadata, restore_model, save_safetensors
from alexnet.checkpoint.onnx_model import stamp
from alexnet.data.transforms import Preprocess
from alexnet.errors import AlexNetError, not_one_of
from alexnet.inference.features import file_sha256
from alexnet.tools.interop import quantize
from alexnet.tools.interop.quantize import Quantization

FORMATS = ("onnx", "torchscript", "safetensors")
ONNX_OPSET = 17


def example_input(model: nn.Module, batch: int = 1, input_size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """A zero batch of the model's input shape (``input_size``/``channels`` for models without those attributes)."""
    size = input_size or model.input_size
    return torch.zeros(batch, channels or model.in_channels, size, size)


def require_onnx() -> None:
    if importlib.util.find_spec("onnx") is None:
        raise AlexNetError("--format onnx needs the onnx package: pip install 'alexnet[onnx]' (or pip install onnx)")


def export_onnx(model: nn.Module, out: str | os.PathLike, *, opset: int = ONNX_OPSET, overwrite: bool = False,
                input_size: int | None = None, channels: int | None = None, metadata: OnnxMetadata | None = None) -> None:
    """ONNX with a dynamic batch axis (the TorchScript exporter: it needs no onnxscript); ``metadata``
    goes into its metadata_props."""
    require_onnx()
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
        if metadata is not None:
            stamp_file(tmp, tmp, metadata)


def stamp_file(src: Path, out: Path, metadata: OnnxMetadata) -> None:
    """``src`` with ``metadata`` in its metadata_props, saved as ``out`` (one self-contained file)."""
    import onnx

    proto = onnx.load(str(src))
    stamp(proto, metadata)
    onnx.save(proto, str(out))


def export_torchscript(model: nn.Module, out: str | os.PathLike, *, overwrite: bool = False) -> None:
    model = model.eval().cpu()

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            traced = torch.jit.trace(model, example_input(model))
            traced.save(tmp)

    with atomic_path(out, overwrite=overwrite) as tmp:
        write(str(tmp))


def export(source: str | os.PathLike, fmt: str, out: str | os.PathLike, *, overwrite: bool = False,
           quantization: Quantization | None = None) -> OnnxMetadata | None:
    """Write the checkpoint file ``source`` in ``fmt`` (onnx, torchscript, safetensors) to ``out``;
    ONNX is fp32, or int8 as ``quantization`` says. Returns an ONNX file's metadata."""
    if fmt not in FORMATS:
        raise AlexNetError(not_one_of("--format ", fmt, FORMATS))
    if quantization is not None and fmt != "onnx":
        raise AlexNetError(f"--quantize int8 needs --format onnx (ONNX Runtime's quantizer), not --format {fmt}")
    if fmt == "onnx" and Path(out).suffix.lower() != ".onnx":  # eval, predict and serve know an ONNX model by its name
        raise AlexNetError(f"--out {out}: give an ONNX model a name ending in .onnx (eval, predict and serve run it by that)")
    ckpt = checkpoint.load(source)
    if fmt == "safetensors":
        save_safetensors(out, ckpt, overwrite=overwrite)
        return None
    model = restore_model(ckpt, source=str(source))
    if fmt == "torchscript":
        export_torchscript(model, out, overwrite=overwrite)
        return None
    require_onnx()
    if quantization is not None:
        return export_int8(ckpt, model, source, out, quantization, overwrite=overwrite)
    meta = OnnxMetadata.of_checkpoint(ckpt, channels=model.in_channels, source_sha256=file_sha256(source))
    export_onnx(model, out, overwrite=overwrite, metadata=meta)
    return meta


def export_int8(ckpt: Checkpoint, model: nn.Module, source: str | os.PathLike, out: str | os.PathLike,
                quantization: Quantization, *, overwrite: bool = False) -> OnnxMetadata:
    """The fp32 export quantized by ONNX Runtime (:mod:`alexnet.tools.interop.quantize`), with the
    metadata; the calibration set is opened and checked before anything is written."""
    quantize.require_onnxruntime()
    refuse_existing(out, overwrite)
    reader, description = None, {}
    if quantization.mode == "static":
        preprocess = Preprocess.from_checkpoint(ckpt.preprocess, source, "static int8 calibrates on images through it "
                                                "(pass --mode dynamic)")
        images, description = quantize.calibration_set(quantization)
        reader = quantize.CalibrationImages(images, preprocess)
    with tempfile.TemporaryDirectory(prefix="alexnet-int8-") as folder:
        fp32, int8 = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        export_onnx(model, fp32)
        settings = quantize.quantize_file(fp32, int8, quantization.mode, reader)
        meta = OnnxMetadata.of_checkpoint(ckpt, channels=model.in_channels, source_sha256=file_sha256(source),
                                          quantization=settings, calibration=description)
        with atomic_path(out, overwrite=overwrite) as tmp:
            stamp_file(int8, tmp, meta)
    return meta
