"""int8 ONNX by ONNX Runtime's quantizer (``alexnet export --format onnx --quantize int8``).

Both modes start from the fp32 export (:func:`alexnet.tools.interop.export.export_onnx`), prepared by
``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference and ONNX Runtime's
graph optimisations, the step the quantizer asks for):

* **static** (the default): ``onnxruntime.quantization.quantize_static`` with
  ``quant_format=QuantFormat.QDQ`` (QuantizeLinear/DequantizeLinear pairs around each quantized
  operator, the form ONNX Runtime's CPU kernels fuse into integer ones, "strongly preferred" there
  since 1.11), activations ``QuantType.QUInt8`` and weights ``QuantType.QInt8`` (U8S8, the
  quantizer's advice for x86-64), weights per output channel, ``CalibrationMethod.MinMax``. The
  activations' ranges come from N images of the calibration data (:func:`calibration_set`: a random
  sample of the split, seed 0, so a split stored class by class calibrates on every class) run
  through the checkpoint's own preprocessing, the centre crop evaluation uses
  (:class:`CalibrationImages`). The calibrator holds every image's intermediate tensors until it
  computes the ranges (AlexNet's layer outputs at 227² are 7.7 MB an image: about 2 GB for 256): its
  ``CalibMaxIntermediateOutputs`` option, which would bound that, drops the data instead of folding
  it into the ranges in onnxruntime 1.32 ("No data is collected"; microsoft/onnxruntime#18893: the fix
  proposed in #20226 is not in it), so it is not used.
* **dynamic**: ``onnxruntime.quantization.quantize_dynamic`` with
  ``op_types_to_quantize=["MatMul", "Gemm"]``: the fully connected layers' weights int8 (QInt8),
  their activations quantized batch by batch at run time, the convolutions left fp32; no
  calibration. The quantizer turns each Gemm into MatMul + Add first (its integer kernel is
  MatMulInteger). For AlexNet, fc6–fc8 hold 58.6 M of its 61 M parameters.

What was done is written into the file's metadata (:class:`alexnet.checkpoint.onnx_model.OnnxMetadata`:
``quantization`` holds :func:`settings`, ``calibration`` the set's description).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data import open_dataset
from alexnet.data.imageset import ImageSet, subset
from alexnet.data.loader import iter_batches
from alexnet.data.transforms import Preprocess
from alexnet.errors import AlexNetError, at_least

MODES = ("static", "dynamic")
DEFAULT_SPLIT = "train"  # calibrate on training images, never on the split the model is measured on
DEFAULT_IMAGES = 256  # activation ranges settle within a few hundred images (MinMax over them)
CALIBRATION_BATCH = 16  # images per calibration run
SEED = 0  # the calibration sample


@dataclass(frozen=True)
class Quantization:
    """What ``--quantize int8`` asks for; :func:`from_flags` checks the flags' combinations."""

    mode: str = "static"  # static | dynamic
    data: str | None = None  # --calibrate: a data spec (static only)
    split: str = DEFAULT_SPLIT
    images: int = DEFAULT_IMAGES


def from_flags(fmt: str, quantize: str | None, mode: str | None, data: str | None, split: str | None,
               images: int | None) -> Quantization | None:
    """The quantization the export flags ask for (None: fp32), or a one-line error for a wrong combination."""
    calibration_flags = [f for f, v in (("--calibrate", data), ("--split", split), ("--images", images)) if v is not None]
    if quantize is None:
        given = (["--mode"] if mode is not None else []) + calibration_flags
        if given:
            raise AlexNetError(f"{given[0]} applies only to int8 quantization: add --format onnx --quantize int8")
        return None
    if fmt != "onnx":
        raise AlexNetError(f"--quantize {quantize} needs --format onnx (ONNX Runtime's quantizer), not --format {fmt}")
    if (mode or "static") == "dynamic":
        if calibration_flags:
            raise AlexNetError(f"--mode dynamic quantizes the weights only and needs no calibration data; leave out "
                               f"{', '.join(calibration_flags)}")
        return Quantization("dynamic")
    if data is None:
        raise AlexNetError("--quantize int8 (--mode static) needs --calibrate DATA, the images that set the activations' "
                           "ranges (e.g. --calibrate digits, or the training data); or pass --mode dynamic")
    if images is not None:
        at_least("--images", images)
    return Quantization("static", data, split or DEFAULT_SPLIT, DEFAULT_IMAGES if images is None else images)


def require_onnxruntime() -> None:
    if importlib.util.find_spec("onnxruntime") is None:
        raise AlexNetError("--quantize int8 needs the onnxruntime package: pip install 'alexnet[onnx]' (or pip install onnxruntime)")


def calibration_set(q: Quantization) -> tuple[ImageSet, dict[str, Any]]:
    """(the images to calibrate on, their description for the metadata); a wrong split is one line."""
    images = open_dataset(q.data).split(q.split)
    if not len(images):
        raise AlexNetError(f"--calibrate {q.data}: its {q.split!r} split holds no images")
    n = min(q.images, len(images))
    index = np.sort(np.random.default_rng(SEED).permutation(len(images))[:n])
    description = {"data": str(q.data), "split": q.split, "images": n, "of": len(images),
                   "selection": f"random sample, seed {SEED}", "preprocessing": "the checkpoint's centre crop (eval, 1 view)"}
    return subset(images, index), description


class CalibrationImages:
    """ONNX Runtime's ``CalibrationDataReader`` protocol (its ``__subclasshook__`` takes any class with
    ``get_next``): ``get_next()`` gives {"images": float32 [B, C, S, S]}, the next batch through the
    checkpoint's own preprocessing (``Preprocess.views(x, 1)``, what ``alexnet eval`` feeds the
    model), and None when the images are done."""

    def __init__(self, images: ImageSet, preprocess: Preprocess, batch_size: int = CALIBRATION_BATCH) -> None:
        self._batches = self._inputs(images, preprocess, batch_size)

    @staticmethod
    def _inputs(images: ImageSet, preprocess: Preprocess, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for x, _ in iter_batches(images, batch_size, size=preprocess.pipeline.resize, device="cpu", pad=False):
            crops = preprocess.views(x, 1).flatten(0, 1)
            yield {"images": np.ascontiguousarray(crops.numpy(), dtype=np.float32)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def settings(mode: str) -> dict[str, Any]:
    """The quantizer's settings as the metadata records them."""
    if mode == "dynamic":
        return {"mode": "dynamic", "dtype": "int8", "api": "onnxruntime.quantization.quantize_dynamic",
                "op_types": ["MatMul", "Gemm"], "weight_type": "QInt8", "per_channel": False}
    return {"mode": "static", "dtype": "int8", "api": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True, "calibrate_method": "MinMax"}


def quantize_file(fp32: Path, out: Path, mode: str, calibration: CalibrationImages | None = None) -> dict[str, Any]:
    """Quantize the fp32 ONNX file ``fp32`` into ``out`` (plain paths: the caller writes the final file
    atomically); returns :func:`settings`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static

    prepared = fp32.with_name(fp32.stem + ".prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))  # shape inference and ORT's graph optimisations, as the quantizer asks
    if mode == "dynamic":
        quantize_dynamic(str(prepared), str(out), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                         per_channel=False)
    else:
        quantize_static(str(prepared), str(out), calibration, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    return settings(mode)
