"""Caffe's bvlc_alexnet and bvlc_reference_caffenet weights (``.caffemodel``) without Caffe.

A ``.caffemodel`` is a binary protobuf ``NetParameter``. We read it with a small wire-format
reader (varints, length-delimited fields, packed floats through numpy) instead of generated code,
using these field numbers of ``caffe.proto`` (checked against BVLC/caffe's file):

==================  ==============================================================
NetParameter        ``layer`` = 100 (V2, LayerParameter), ``layers`` = 2 (V1, V1LayerParameter)
LayerParameter      ``name`` = 1, ``type`` = 2 (string: "Convolution", "InnerProduct"), ``blobs`` = 7
V1LayerParameter    ``name`` = 4, ``type`` = 5 (enum: CONVOLUTION = 4, INNER_PRODUCT = 14), ``blobs`` = 6
BlobProto           ``num`` = 1, ``channels`` = 2, ``height`` = 3, ``width`` = 4 (legacy 4-d shape),
                    ``data`` = 5 (packed float), ``shape`` = 7 (BlobShape: ``dim`` = 1, packed int64),
                    ``double_data`` = 8 (packed double)
==================  ==============================================================

Conventions that make the result equal to Caffe's network:

* Caffe stores conv weights [out, in/groups, kh, kw] (groups = 2 on conv2, conv4, conv5) and
  InnerProduct weights [out, in], as our layers do, so weights are copied as they are. Old files
  give 4-d legacy shapes such as [1, 1, 4096, 9216] for fc6; leading 1s are dropped.
* Caffe feeds BGR pixels on the 0–255 scale minus the mean image, without scaling. Our pipelines
  feed RGB, so conv1's input channels are reversed (BGR → RGB) and the mean image (BlobProto
  [1, 3, 256, 256], BGR, CHW) is converted to RGB HWC: the imported checkpoint, given RGB
  0–255 images minus the RGB mean, computes what Caffe computes on BGR images.
* ``alexnet`` is ``bvlc_alexnet`` in our registry (the paper's layer order, LRN k = 1 across both
  towers); ``caffenet`` is ``caffenet`` (pooling before LRN). Which one a file holds is read from its
  layer order (:func:`detect_arch`); a contradicting ``--arch`` is refused.
* A text prototxt given as the weights is named as such (the wire reader would otherwise report
  "unsupported wire type 6").
* The checkpoint's statistics: ``mean_image`` from ``--mean`` (``channel_mean`` is its average
  over pixels); channel std and PCA eigenvectors from :func:`~alexnet.data.stats.imagenet_stats`
  (only training uses them). Without ``--mean``, ImageNet's channel mean is broadcast to
  256×256, close to Caffe's ``ilsvrc_2012_mean`` (whose channel means are about 104, 117, 123 BGR).
* Preprocessing: the ``caffenet`` pipeline (shorter side 256, centre crop 256, centre crop 227,
  subtract the mean image). Caffe's own ImageNet tooling warps images to 256×256 without keeping
  the aspect ratio; the difference is in the resizing only (docs/INTEROP.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alexnet.errors import AlexNetError, not_one_of
from alexnet.tools.interop.torchvision import check_state_dict

# --arch → registry model
ARCHS = {"alexnet": "bvlc_alexnet", "caffenet": "caffenet"}

# V1LayerParameter.LayerType values (caffe.proto) of the layers that carry weights we import and of
# those whose order tells bvlc_alexnet from CaffeNet
V1_TYPES = {4: "Convolution", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU"}

# the start of a text-format protobuf (deploy.prototxt, train_val.prototxt, solver.prototxt)
PROTOTXT = re.compile(rb"\A\s*(?:#[^\n]*\n\s*)*[A-Za-z_]\w*\s*(?::|\{)")

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(AlexNetError):
    """The bytes are not a well-formed protobuf message."""


# -- the protobuf wire format --------------------------------------------------------------------
def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """A base-128 varint at ``pos`` → (value, next position)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def iter_fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) for each field of one message; a length-delimited value is
    a view of its bytes (a nested message, a string or a packed array)."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == FIXED64:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == FIXED32:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        elif wire == LENGTH:
            size, pos = read_varint(buf, pos)
            if pos + size > len(buf):
                raise WireError(f"field {number} runs {pos + size - len(buf)} bytes past the end")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise WireError(f"unsupported wire type {wire} (field {number})")
        if pos > len(buf):
            raise WireError("truncated field")
        yield number, wire, value


def _floats(wire: int, value, dtype: str) -> np.ndarray:
    """A packed (length-delimited) or single (fixed-width) repeated float/double field."""
    if wire == LENGTH:
        item = np.dtype(dtype).itemsize
        if len(value) % item:
            raise WireError(f"packed {dtype} data of {len(value)} bytes")
        return np.frombuffer(value, dtype=dtype)
    width = 4 if dtype == "<f4" else 8
    return np.frombuffer(int(value).to_bytes(width, "little"), dtype=dtype)


def _ints(wire: int, value) -> list[int]:
    """A packed or single repeated varint field."""
    if wire == VARINT:
        return [int(value)]
    out, pos = [], 0
    while pos < len(value):
        v, pos = read_varint(value, pos)
        out.append(v)
    return out


def parse_blob(buf: memoryview) -> np.ndarray:
    """A BlobProto → float32 array shaped by ``shape`` (or the legacy num/channels/height/width)."""
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    dims: list[int] | None = None
    chunks: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for number, wire, value in iter_fields(buf):
        if number in legacy and wire == VARINT:
            legacy[number] = int(value)
        elif number == 5:
            chunks.append(_floats(wire, value, "<f4"))
        elif number == 8:
            doubles.append(_floats(wire, value, "<f8"))
        elif number == 7 and wire == LENGTH:
            dims = []
            for n, w, v in iter_fields(value):
                if n == 1:
                    dims.extend(_ints(w, v))
    if len(chunks) == 1:
        data = chunks[0]  # a view of the file's bytes; copied once, into the model's tensor
    elif chunks:
        data = np.concatenate(chunks)
    else:
        data = np.concatenate(doubles).astype(np.float32) if doubles else np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy[1], legacy[2], legacy[3], legacy[4]] if any(legacy.values()) else [len(data)]
    if int(np.prod(dims)) != len(data):
        raise WireError(f"blob of shape {tuple(dims)} holds {len(data)} values")
    return data.astype(np.float32, copy=False).reshape(dims)


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[np.ndarray]


def parse_net(buf: memoryview) -> list[CaffeLayer]:
    """A NetParameter's layers (V2 ``layer`` and V1 ``layers``), in file order."""
    layers: list[CaffeLayer] = []
    for number, wire, value in iter_fields(buf):
        if wire != LENGTH or number not in (100, 2):
            continue
        v2 = number == 100
        name_field, type_field, blob_field = (1, 2, 7) if v2 else (4, 5, 6)
        name, kind, blobs = "", "", []
        for n, w, v in iter_fields(value):
            if n == name_field and w == LENGTH:
                name = bytes(v).decode("utf-8", "replace")
            elif n == type_field and v2 and w == LENGTH:
                kind = bytes(v).decode("utf-8", "replace")
            elif n == type_field and not v2 and w == VARINT:
                kind = V1_TYPES.get(int(v), f"V1 type {int(v)}")
            elif n == blob_field and w == LENGTH:
                blobs.append(parse_blob(v))
        layers.append(CaffeLayer(name, kind, blobs))
    return layers


def _read(path: Path, what: str) -> memoryview:
    if not path.is_file():
        raise AlexNetError(f"{path}: no such {what} file")
    data = path.read_bytes()
    if not data:
        raise AlexNetError(f"{path}: empty file, not a {what}")
    return memoryview(data)


def _is_prototxt(head: bytes) -> bool:
    """Text protobuf: printable UTF-8 (a binary message has length bytes below 0x20) opening with ``key:`` or ``key {``."""
    try:
        text = head.decode("utf-8", errors="ignore" if len(head) == 512 else "strict")  # a cut multi-byte char at the end
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r" for c in text) and PROTOTXT.match(head) is not None


def read_caffemodel(path: str | os.PathLike) -> list[CaffeLayer]:
    path = Path(path)
    data = _read(path, "caffemodel")
    if _is_prototxt(bytes(data[:512])):
        raise AlexNetError(f"{path}: a text prototxt (a network definition such as deploy.prototxt), not the binary "
                           "weights: give the .caffemodel file (e.g. bvlc_alexnet.caffemodel)")
    try:
        layers = parse_net(data)
    except WireError as e:
        raise AlexNetError(f"{path}: not a Caffe model (malformed protobuf: {e})") from None
    if not any(layer.blobs for layer in layers):
        raise AlexNetError(f"{path}: not a Caffe model with weights (no layer in it carries blobs)")
    return layers


def read_mean(path: str | os.PathLike) -> np.ndarray:
    """A ``mean.binaryproto`` (BlobProto [1, 3, H, W], BGR) → float32 [H, W, 3] RGB, 0–255."""
    path = Path(path)
    try:
        blob = parse_blob(_read(path, "mean binaryproto"))
    except WireError as e:
        raise AlexNetError(f"{path}: not a Caffe mean binaryproto (malformed protobuf: {e})") from None
    shape = tuple(blob.shape)
    squeezed = blob.reshape([d for d in shape if d != 1] or [1]) if blob.ndim == 4 and shape[0] == 1 else blob
    if squeezed.ndim != 3 or squeezed.shape[0] != 3:
        raise AlexNetError(f"{path}: mean blob has shape {shape}, expected [1, 3, H, W]")
    return np.ascontiguousarray(squeezed[::-1].transpose(1, 2, 0), dtype=np.float32)


# -- Caffe layers → our state dict ---------------------------------------------------------------
def _fit_shape(blob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Drop the leading 1s of legacy 4-d shapes ([1, 1, 4096, 9216] → [4096, 9216]) when that matches."""
    if tuple(blob.shape) == shape:
        return blob
    strip = lambda s: tuple(s[next((i for i, d in enumerate(s) if d != 1), len(s)) :])
    if strip(blob.shape) == strip(shape):
        return blob.reshape(shape)
    return blob


def caffe_state_dict(layers: list[CaffeLayer], expected: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Weights and biases of the Caffe layers under our keys (``conv1.weight`` …), conv1 turned
    from BGR to RGB. Checked against ``expected``: each tensor present with its shape, nothing left
    over; an error names the tensor and both shapes."""
    state: dict[str, torch.Tensor] = {}
    for layer in layers:
        if not layer.blobs:
            continue
        if len(layer.blobs) > 2:
            raise AlexNetError(f"{source}: layer {layer.name!r} ({layer.type}) has {len(layer.blobs)} blobs, expected weight and bias")
        for kind, blob in zip(("weight", "bias"), layer.blobs):
            key = f"{layer.name}.{kind}"
            if key in state:
                raise AlexNetError(f"{source}: layer {layer.name!r} appears twice with weights")
            if key in expected:
                blob = _fit_shape(blob, tuple(expected[key].shape))
            state[key] = torch.from_numpy(np.array(blob, dtype=np.float32))
    check_state_dict(state, expected, source)
    state["conv1.weight"] = state["conv1.weight"].flip(1).contiguous()  # BGR → RGB input channels
    return state


def detect_arch(layers: list[CaffeLayer]) -> str | None:
    """``"alexnet"`` or ``"caffenet"`` from the order of the first LRN and pooling layers after conv1:
    bvlc_alexnet normalises before it pools (conv1 relu1 norm1 pool1, the paper's order), CaffeNet
    pools first (conv1 relu1 pool1 norm1). Both have the same weights' shapes, so the file's layer
    order is the only thing that tells them apart. ``None`` when the file holds no such layers."""
    kinds = [layer.type for layer in layers]
    if "Convolution" not in kinds:
        return None
    after = kinds[kinds.index("Convolution") + 1:]
    firsts = [kind for kind in after if kind in ("LRN", "Pooling", "Convolution")]
    if len(firsts) < 2 or "Convolution" in firsts[:2]:
        return None
    return "alexnet" if firsts[0] == "LRN" else "caffenet"


LAYER_ORDER = {"alexnet": "norm1 before pool1", "caffenet": "pool1 before norm1"}


def resolve_arch(layers: list[CaffeLayer], arch: str | None, source: str) -> str:
    """The architecture the file's layers say, checked against ``--arch`` (which is needed only when the
    file does not say)."""
    if arch is not None and arch not in ARCHS:
        raise AlexNetError(not_one_of("--arch ", arch, ARCHS))
    found = detect_arch(layers)
    if found is None:
        if arch is None:
            raise AlexNetError(f"{source}: its layers do not show whether it is bvlc_alexnet or CaffeNet (no LRN and "
                               f"pooling after conv1); give --arch {' or --arch '.join(ARCHS)}")
        return arch
    if arch is not None and found != arch:
        raise AlexNetError(f"{source}: its layers are {found}'s ({LAYER_ORDER[found]}), not --arch {arch}'s "
                           f"({LAYER_ORDER[arch]}); drop --arch or give --arch {found}")
    return found


def import_caffe(path: str | os.PathLike, arch: str | None = None, mean: str | os.PathLike | None = None):
    """A ``.caffemodel`` of bvlc_alexnet or bvlc_reference_caffenet → a checkpoint with ImageNet's class
    names and the caffenet pipeline. The architecture is read from the file's layer order
    (:func:`detect_arch`); ``arch`` ("alexnet" or "caffenet") must agree with it, and is needed only
    for a file that does not show it. Loading a bvlc_alexnet file as CaffeNet or the reverse gave
    logits about 24 % off with no error before this check."""
    from alexnet import models
    from alexnet.checkpoint import collect_provenance, from_model
    from alexnet.data.stats import Stats, imagenet_stats
    from alexnet.data.transforms import Preprocess, pipeline
    from alexnet.tools.interop.imagenet import imagenet_classes

    path = Path(path)
    layers = read_caffemodel(path)
    arch = resolve_arch(layers, arch, str(path))
    classes = imagenet_classes()
    with torch.device("meta"):  # shapes only: no time spent on a random initialisation we overwrite
        model = models.create(ARCHS[arch], num_classes=len(classes))
    model.load_state_dict(caffe_state_dict(layers, model.state_dict(), str(path)), assign=True)
    stats = imagenet_stats(256)
    if mean is not None:
        mean_image = read_mean(mean)
        stats = Stats(mean_image, mean_image.reshape(-1, 3).mean(0).astype(np.float64), stats.channel_std,
                      stats.eigval, stats.eigvec, 0)
    preprocess = Preprocess(pipeline("caffenet", resize=256, crop=227), stats).to_state()
    source = f"Caffe {path.name}" + (f" with mean {Path(mean).name}" if mean is not None else "")
    return from_model(model, classes, preprocess=preprocess, provenance=collect_provenance(recipe=f"caffe:{arch}", source=source))
