"""An exported ``.onnx`` file as a model: our metadata in its ``metadata_props``, read back
validated, and an ONNX Runtime session that evaluation calls as it calls a torch model.

``alexnet export --format onnx`` (fp32, or int8: :mod:`alexnet.tools.interop.quantize`) writes one
self-contained file: input ``images`` float [batch, C, S, S] already preprocessed, output
``logits`` [batch, K]. ONNX's ``ModelProto.metadata_props`` (string → string) carries what a
checkpoint carries besides its weights, under the ``alexnet.`` prefix (:meth:`OnnxMetadata.to_props`)::

    alexnet.format          "alexnet-onnx"; alexnet.format_version "1"
    alexnet.model           the registry name; alexnet.model_options its options (JSON)
    alexnet.classes         the class names, output i = class i (JSON list)
    alexnet.input_size      S;  alexnet.channels  C
    alexnet.preprocess      Preprocess.to_state() (JSON; a tensor of the statistics as
                            {"__tensor__": {"dtype", "shape", "base64"}}, its exact bytes)
    alexnet.source_sha256   the sha256 of the checkpoint file it was exported from
    alexnet.quantization    {"mode": "none" | "static" | "dynamic", and the quantizer's settings} (JSON)
    alexnet.calibration     the calibration set ({"data", "split", "images", …}); {} unless static (JSON)
    alexnet.provenance      the checkpoint's provenance (JSON)

:func:`read_metadata` is the one reader. It parses the protobuf (``onnx.load_model_from_string``;
external data is refused, not followed) and the JSON, never unpickles or runs anything, checks
every field's type, that the preprocessing builds, and that the graph's input and output agree with
the channels, input size and classes; what is wrong is one line naming the file.
:func:`load_onnx` adds the session: :class:`OnnxModel` is an ``nn.Module`` whose forward runs
``onnxruntime.InferenceSession(..., providers=["CPUExecutionProvider"])``, so
:mod:`alexnet.inference.evaluate` runs an exported model through the same preprocessing, views and
metrics as a checkpoint (the torch tensors go to the CPU and the logits come back to their device).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet.checkpoint.format import Checkpoint
from alexnet.data.transforms import Preprocess
from alexnet.errors import AlexNetError, not_one_of, one_line, shown, whole_number

FORMAT = "alexnet-onnx"
FORMAT_VERSION = 1  # bump when a key changes meaning; read_metadata refuses newer versions
PREFIX = "alexnet."
MODES = ("none", "static", "dynamic")  # alexnet.quantization's "mode"
INPUT, OUTPUT = "images", "logits"
JSON_FIELDS = {"model_options": dict, "classes": list, "preprocess": dict, "quantization": dict, "calibration": dict,
               "provenance": dict}
TENSOR = "__tensor__"
DTYPES = ("float32", "float64", "int64", "uint8")  # what a tensor in the metadata may be


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported .onnx says about itself: enough to preprocess, evaluate and name its outputs."""

    model: str  # registry name of the architecture it was exported from
    model_options: dict[str, Any]
    classes: list[str]  # output i = class i
    input_size: int  # S of the input [batch, C, S, S]
    channels: int  # C
    preprocess: dict[str, Any]  # Preprocess.to_state(): the checkpoint's own eval preprocessing
    source_sha256: str  # of the checkpoint file
    quantization: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    calibration: dict[str, Any] = field(default_factory=dict)  # the calibration set, static int8 only
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mode(self) -> str:
        """none (fp32), static or dynamic (int8)."""
        return self.quantization["mode"]

    def describe(self) -> str:
        """``ONNX fp32``, ``ONNX int8 dynamic``, ``ONNX int8 static, calibrated on 256 images of digits [train]``."""
        if self.mode == "none":
            return "ONNX fp32"
        c = self.calibration
        return f"ONNX int8 {self.mode}" + (f", calibrated on {c['images']} images of {c['data']} [{c['split']}]" if c else "")

    @classmethod
    def of_checkpoint(cls, ckpt: Checkpoint, *, channels: int, source_sha256: str,
                      quantization: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None) -> OnnxMetadata:
        return cls(model=ckpt.model, model_options=dict(ckpt.model_options), classes=list(ckpt.classes),
                   input_size=int(ckpt.input_size), channels=int(channels), preprocess=ckpt.preprocess,
                   source_sha256=source_sha256, quantization=quantization or {"mode": "none"},
                   calibration=calibration or {}, provenance=ckpt.provenance)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries, every value a string."""
        props = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "model": self.model,
                 "input_size": str(self.input_size), "channels": str(self.channels), "source_sha256": self.source_sha256}
        props.update({name: json.dumps(_encode(getattr(self, name))) for name in JSON_FIELDS})
        return {PREFIX + k: v for k, v in props.items()}


def stamp(proto, meta: OnnxMetadata) -> None:
    """Write ``meta`` into an ``onnx.ModelProto``'s metadata_props, replacing any ``alexnet.`` entries."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in kept + sorted(meta.to_props().items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def is_onnx(path: str | os.PathLike) -> bool:
    """Whether a command that takes a checkpoint should read ``path`` as an exported .onnx: by its name,
    so that a wrong file named .onnx is told apart as such (:func:`read_metadata` says what it is)."""
    return Path(path).suffix.lower() == ".onnx"


def read_metadata(path: str | os.PathLike) -> OnnxMetadata:
    """The validated metadata of an exported .onnx file (one line naming the file when it has none)."""
    _, proto = _parse(Path(path))
    return _metadata(proto, str(path))


def load_onnx(path: str | os.PathLike) -> tuple[OnnxMetadata, OnnxModel]:
    """(metadata, :class:`OnnxModel`) of an exported .onnx file, the file read once."""
    data, proto = _parse(Path(path))
    meta = _metadata(proto, str(path))
    ort = _require("onnxruntime", path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # one thread setting for torch and the session
    failures = tuple(getattr(ort.capi.onnxruntime_pybind11_state, n) for n in ("Fail", "InvalidGraph", "InvalidProtobuf",
                                                                               "InvalidArgument", "NotImplemented"))
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except failures as e:
        raise AlexNetError(f"{path}: ONNX Runtime cannot load it ({one_line(e, 160)})") from None
    return meta, OnnxModel(session, meta)


class OnnxModel(nn.Module):
    """An ONNX Runtime session as the model callable that evaluation runs: float [B, C, S, S] →
    logits [B, K] on the input's device. The session runs on the CPU provider whatever that device;
    it has no parameters, so ``.to(device)`` and ``.eval()`` leave it as it is."""

    def __init__(self, session, meta: OnnxMetadata) -> None:
        super().__init__()
        self.session, self.meta = session, meta
        self.name, self.input_size, self.in_channels = meta.model, meta.input_size, meta.channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(images.detach().float().cpu().numpy())
        (logits,) = self.session.run([OUTPUT], {INPUT: feed})
        return torch.from_numpy(logits).to(images.device)


# -- reading -------------------------------------------------------------------------------------
def _require(module: str, path: str | os.PathLike):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AlexNetError(f"{path}: an .onnx model needs the {module} package: pip install 'alexnet[onnx]'") from None


def _parse(path: Path) -> tuple[bytes, Any]:
    """(the file's bytes, its ``onnx.ModelProto``): a missing, truncated or non-ONNX file is one line."""
    if not path.is_file():
        raise AlexNetError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    onnx = _require("onnx", path)
    from google.protobuf.message import DecodeError  # onnx's own dependency

    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except DecodeError:
        proto = None
    if proto is None or not proto.ir_version or not proto.HasField("graph") or not proto.opset_import:
        raise AlexNetError(f"{path}: not an ONNX model, or a truncated one ({len(data):,} bytes that do not parse as "
                           "an ONNX ModelProto with a graph); export it again with alexnet export --format onnx")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise AlexNetError(f"{path}: its weights are in external data files; alexnet reads only the self-contained "
                           ".onnx files alexnet export writes")
    return data, proto


def _metadata(proto, source: str) -> OnnxMetadata:
    props = {p.key[len(PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(PREFIX)}
    if props.get("format") != FORMAT:
        raise AlexNetError(f"{source}: an ONNX model without alexnet's metadata (no {PREFIX}format={FORMAT!r} in its "
                           "metadata_props); eval and predict need the classes and preprocessing that alexnet export "
                           "--format onnx writes into the file")
    version = _integer(props, "format_version", source)
    if version > FORMAT_VERSION:
        raise AlexNetError(f"{source}: alexnet ONNX metadata version {version} is newer than this package reads "
                           f"({FORMAT_VERSION}); upgrade alexnet")
    values = {name: _json(props, name, kind, source) for name, kind in JSON_FIELDS.items()}
    meta = OnnxMetadata(model=_text(props, "model", source), input_size=_integer(props, "input_size", source),
                        channels=_integer(props, "channels", source), source_sha256=_text(props, "source_sha256", source),
                        **values)
    _check_fields(meta, source)
    _check_graph(proto, meta, source)
    return meta


def _text(props: dict[str, str], name: str, source: str) -> str:
    if not props.get(name):
        raise AlexNetError(f"{source}: alexnet metadata field {PREFIX}{name} is missing or empty")
    return props[name]


def _integer(props: dict[str, str], name: str, source: str) -> int:
    text = _text(props, name, source)
    number = whole_number(text)
    if number is None or number < 1:
        raise AlexNetError(f"{source}: alexnet metadata field {PREFIX}{name}={shown(text)} is not a positive whole number")
    return number


def _json(props: dict[str, str], name: str, kind: type, source: str) -> Any:
    try:
        value = _decode(json.loads(_text(props, name, source)))
    except (ValueError, TypeError, KeyError) as e:
        raise AlexNetError(f"{source}: alexnet metadata field {PREFIX}{name} is not valid ({type(e).__name__}: "
                           f"{one_line(e, 100)})") from None
    if not isinstance(value, kind):
        raise AlexNetError(f"{source}: alexnet metadata field {PREFIX}{name} should be a JSON {kind.__name__}, "
                           f"got {type(value).__name__}")
    return value


def _check_fields(meta: OnnxMetadata, source: str) -> None:
    """The values' meaning: classes are names, C is 1 or 3, a sha256 is 64 hex digits, the mode is known,
    a static model names its calibration set, the preprocessing builds."""
    problems = []
    if not meta.classes or not all(isinstance(c, str) for c in meta.classes):
        problems.append("classes must be a non-empty list of names")
    if meta.channels not in (1, 3):
        problems.append(f"channels={meta.channels} must be 1 or 3")
    if len(meta.source_sha256) != 64 or not set(meta.source_sha256) <= set(string.hexdigits.lower()):
        problems.append(f"source_sha256={meta.source_sha256[:70]!r} is not a sha256 (64 hex digits)")
    if meta.quantization.get("mode") not in MODES:
        problems.append(not_one_of("quantization mode ", meta.quantization.get('mode'), MODES))
    elif meta.mode == "static" and not {"data", "split", "images"} <= set(meta.calibration):
        problems.append("a static int8 model must name its calibration set (data, split, images)")
    try:
        Preprocess.from_state(meta.preprocess)
    except (KeyError, TypeError, ValueError) as e:
        problems.append(f"unusable preprocessing ({type(e).__name__}: {one_line(e, 80)})")
    if problems:
        raise AlexNetError(f"{source}: alexnet metadata: {'; '.join(problems)}")


def _check_graph(proto, meta: OnnxMetadata, source: str) -> None:
    """One input ``images`` [batch, C, S, S] and one output ``logits`` [batch, K], as the metadata says."""
    weights = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    outputs = list(proto.graph.output)
    if [i.name for i in inputs] != [INPUT] or [o.name for o in outputs] != [OUTPUT]:
        raise AlexNetError(f"{source}: the graph takes {[i.name for i in inputs]} and gives {[o.name for o in outputs]}; "
                           f"an alexnet export takes {INPUT!r} and gives {OUTPUT!r}")
    got_in, got_out = _dims(inputs[0]), _dims(outputs[0])
    want_in, want_out = [meta.channels, meta.input_size, meta.input_size], [meta.num_classes]
    if got_in[1:] != want_in or got_out[1:] != want_out:
        raise AlexNetError(f"{source}: the graph's {INPUT} {got_in} and {OUTPUT} {got_out} disagree with its metadata "
                           f"([batch, {', '.join(map(str, want_in))}] and [batch, {meta.num_classes}])")


def _dims(value_info) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in value_info.type.tensor_type.shape.dim]


# -- tensors inside JSON -------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    """``value`` with every tensor as {"__tensor__": {"dtype", "shape", "base64"}} (its exact bytes)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
        if array.dtype.name not in DTYPES:
            raise ValueError(f"a {array.dtype} tensor cannot go into the ONNX metadata (only {', '.join(DTYPES)})")
        data = base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode("ascii")
        return {TENSOR: {"dtype": array.dtype.name, "shape": list(array.shape), "base64": data}}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode`: each {"__tensor__": …} a torch tensor, its size checked."""
    if isinstance(value, dict):
        if set(value) != {TENSOR}:
            return {k: _decode(v) for k, v in value.items()}
        t = value[TENSOR]
        if t["dtype"] not in DTYPES:
            raise ValueError(not_one_of("tensor dtype ", t['dtype'], DTYPES))
        shape = [int(n) for n in t["shape"]]
        array = np.frombuffer(base64.b64decode(t["base64"], validate=True), dtype=np.dtype(t["dtype"]).newbyteorder("<"))
        if array.size != int(np.prod(shape)):
            raise ValueError(f"a tensor of shape {shape} holds {array.size} values")
        return torch.from_numpy(array.astype(t["dtype"]).reshape(shape))
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
