"""The Open Inference Protocol (KServe's "Predict Protocol - Version 2") over HTTP/REST: request
bodies in, response bodies out, for the models of :mod:`.repository`.

The spec: kserve/kserve ``docs/predict-api/v2/required_api.md`` and its successor,
kserve/open-inference-protocol ``specification/protocol/inference_rest.md``; two of Triton's
extensions, which ``GET /v2`` lists: ``binary_tensor_data`` (triton-inference-server/server
``docs/protocol/extension_binary_data.md``) and ``classification`` (``extension_classification.md``).

Every model has two inputs, of which a request sends one, and two outputs:

================  =====  ======================  ================================================================
tensor            type   shape                   what
================  =====  ======================  ================================================================
``images``        FP32   [-1, C, crop, crop]     input already preprocessed (the model's own normalisation and crop)
``image_bytes``   BYTES  [-1]                    encoded image files, decoded and preprocessed as ``alexnet predict`` does
``probabilities`` FP32   [-1, K]                 the softmax over the K classes
``labels``        BYTES  [-1, k]                 the names of the k most probable classes, most probable first
================  =====  ======================  ================================================================

Tensor data comes as JSON (``data``: nested or flat, row-major) or, by the binary extension, as raw
little-endian bytes after the JSON (``Inference-Header-Content-Length`` gives the JSON's length and
each such input has ``parameters.binary_data_size``; a BYTES element is a 4-byte little-endian length
and its bytes). The spec leaves the JSON form of a BYTES element open, and a JSON string cannot hold
arbitrary bytes: an encoded image in JSON is the base64 text of the file; the labels, which are text,
come back as JSON strings, as Triton's do.

An output is returned as binary when its request asks (``parameters.binary_data``) or the request
does (``parameters.binary_data_output``). ``parameters.classification: k`` on ``probabilities`` is
Triton's classification extension (BYTES [N, k] of ``"probability:index:label"``); on ``labels`` it
sets k (default 5, at most K). Every fault in a request is a :class:`~alexnet.tools.web.HttpError`
naming the field (400), or the size (413).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alexnet.data.images import MAX_UPLOAD
from alexnet.errors import one_line, shown, whole_number
from alexnet.inference.evaluate import top_labels
from alexnet.tools.web import HttpError

FP32_INPUT, BYTES_INPUT = "images", "image_bytes"
PROBABILITIES, LABELS = "probabilities", "labels"
OUTPUTS = (PROBABILITIES, LABELS)
TOP_LABELS = 5  # k of the labels output when the request does not say
EXTENSIONS = ["binary_tensor_data", "classification"]
SERVER = "alexnet"


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": SERVER, "version": version, "extensions": EXTENSIONS}


def model_metadata(served: Any, versions: list[str], max_batch_size: int) -> dict[str, Any]:
    """The $metadata_model_response of a :class:`~.repository.Served`, with our ``parameters`` (its
    classes, architecture, format and preprocessing, and the largest batch a request may send)."""
    c, s, k = served.channels, served.crop, len(served.classes)
    return {"name": served.name, "versions": versions, "platform": served.platform,
            "inputs": [{"name": FP32_INPUT, "datatype": "FP32", "shape": [-1, c, s, s]},
                       {"name": BYTES_INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, k]},
                        {"name": LABELS, "datatype": "BYTES", "shape": [-1, -1]}],
            "parameters": {**served.parameters(), "max_batch_size": max_batch_size}}


def bad(message: str, status: int = 400) -> HttpError:
    return HttpError(message, status)


@dataclass(frozen=True)
class Requested:
    name: str
    binary: bool
    count: int | None  # parameters.classification


@dataclass
class Inference:
    """A parsed infer request: one input, as an FP32 array or as encoded files, and the outputs asked for."""

    id: str | None
    array: np.ndarray | None  # float32 [N, C, crop, crop]
    files: list[bytes] | None
    outputs: list[Requested]

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.files or ())


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """(the JSON object, the binary data after it)."""
    end = len(body)
    if header_length is not None:
        end = whole_number(header_length.strip())
        if end is None or end > len(body):
            raise bad(f"Inference-Header-Content-Length {shown(header_length)} must be a whole number of bytes ≤ the body's {len(body):,}")
    try:
        request = json.loads(bytes(body[:end]))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"the request is not JSON ({e}); an infer request is the protocol's $inference_request object") from None
    except RecursionError:
        raise bad("the request's JSON is nested too deeply") from None
    if not isinstance(request, dict):
        raise bad(f"the request is JSON {type(request).__name__}, not the $inference_request object")
    return request, memoryview(body)[end:]


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise bad(f"{where}parameters must be a JSON object, not {type(parameters).__name__}")
    return parameters


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise bad(f"{where}parameters.{name} must be true or false, not {value!r}")
    return value


def parse(body: bytes, header_length: str | None, shape: tuple[int, int, int], classes: int) -> Inference:
    """An infer request for a model of input ``shape`` (C, crop, crop) and ``classes`` outputs."""
    request, binary = split_body(body, header_length)
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise bad(f"id must be a string, not {rid!r}")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad(f"inputs must be a list of one tensor object: {FP32_INPUT!r} (FP32 [N, {', '.join(map(str, shape))}]) "
                  f"or {BYTES_INPUT!r} (BYTES [N], encoded images)")
    tensor = inputs[0]
    data = _tensor_data(tensor, binary)
    array, files = None, None
    if tensor.get("name") == FP32_INPUT:
        array = _fp32(tensor, data, shape)
    elif tensor.get("name") == BYTES_INPUT:
        files = _files(tensor, data)
    else:
        raise bad(f"no input {tensor.get('name')!r}; this model takes {FP32_INPUT!r} (FP32) or {BYTES_INPUT!r} (BYTES)")
    outputs = _outputs(request, classes)
    return Inference(rid, array, files, outputs)


def _shape(tensor: dict[str, Any], dims: int) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or len(shape) != dims or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"input {tensor['name']!r}: shape {shape!r} must be {dims} whole numbers")
    if shape[0] == 0:
        raise bad(f"input {tensor['name']!r}: an empty batch (shape {shape})")
    return shape


def _tensor_data(tensor: dict[str, Any], binary: memoryview) -> Any:
    """``data`` from the JSON, or the tensor's bytes of the binary part (which must then be all of it)."""
    parameters = _parameters(tensor, f"input {tensor.get('name')!r}: ")
    if "binary_data_size" not in parameters:
        if len(binary):
            raise bad(f"{len(binary):,} bytes of binary data after the JSON, but no input has parameters.binary_data_size")
        if "data" not in tensor:
            raise bad(f"input {tensor.get('name')!r} has no data (nor parameters.binary_data_size); shared memory is not supported")
        return tensor["data"]
    size = parameters["binary_data_size"]
    if type(size) is not int or size != len(binary):
        raise bad(f"input {tensor.get('name')!r}: binary_data_size {size!r}, but {len(binary):,} bytes follow the JSON")
    return binary


def _fp32(tensor: dict[str, Any], data: Any, shape: tuple[int, int, int]) -> np.ndarray:
    name = tensor["name"]
    if tensor.get("datatype") != "FP32":
        raise bad(f"input {name!r} is FP32, not {tensor.get('datatype')!r}")
    n, *rest = _shape(tensor, 4)
    if tuple(rest) != shape:
        raise bad(f"input {name!r}: shape [N, {', '.join(map(str, rest))}], but this model takes [N, {', '.join(map(str, shape))}]")
    count = n * int(np.prod(shape))
    if isinstance(data, memoryview):
        if len(data) != 4 * count:
            raise bad(f"input {name!r}: {len(data):,} bytes of binary data for {count:,} FP32 values ({4 * count:,} bytes)")
        array = np.frombuffer(data, dtype="<f4").astype(np.float32)  # a copy the model may keep
    else:
        try:  # numbers as JSON has them: not strings, booleans, null or integers past any float's range
            raw = np.asarray(data)
        except (ValueError, TypeError) as e:
            raise bad(f"input {name!r}: data is not an array of numbers ({one_line(e, 120)})") from None
        if raw.dtype.kind not in "iuf":
            raise bad(f"input {name!r}: data must be JSON numbers (found {_not_numbers(raw)})")
        array = raw.astype(np.float32)
        if array.size != count:
            raise bad(f"input {name!r}: {array.size:,} values for shape {[n, *shape]} ({count:,} values)")
    if not np.isfinite(array).all():
        raise bad(f"input {name!r} holds NaN or infinite values")
    return array.reshape(n, *shape)


def _not_numbers(raw: np.ndarray) -> str:
    """What a JSON array that numpy could not read as numbers holds, by its first such element."""
    kinds = {"b": "true/false", "U": "strings", "S": "strings"}
    if raw.dtype.kind in kinds:
        return kinds[raw.dtype.kind]
    for v in raw.flat:  # an object array: null, a nested object, or a Python int past int64 among numbers
        if v is None or isinstance(v, (bool, str, dict, list)):
            return {type(None): "null", bool: "true/false", str: "strings", dict: "objects", list: "arrays"}[type(v)]
    return "integers past int64: send them as floats"


def _files(tensor: dict[str, Any], data: Any) -> list[bytes]:
    name = tensor["name"]
    if tensor.get("datatype") != "BYTES":
        raise bad(f"input {name!r} is BYTES (encoded image files), not {tensor.get('datatype')!r}")
    (n,) = _shape(tensor, 1)
    files = _bytes_elements(data, name) if isinstance(data, memoryview) else _base64_elements(data, name)
    if len(files) != n:
        raise bad(f"input {name!r}: {len(files)} elements for shape [{n}]")
    for i, f in enumerate(files):
        if len(f) > MAX_UPLOAD:
            raise bad(f"input {name!r}: element {i} is {len(f):,} bytes, over the limit of {MAX_UPLOAD:,} for one image", 413)
    return files


def _bytes_elements(data: memoryview, name: str) -> list[bytes]:
    """The binary BYTES form: each element a 4-byte little-endian length, then its bytes."""
    elements, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise bad(f"input {name!r}: binary BYTES data ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", data, at)
        if at + 4 + size > len(data):
            raise bad(f"input {name!r}: element {len(elements)} claims {size:,} bytes; {len(data) - at - 4:,} are left")
        elements.append(bytes(data[at + 4 : at + 4 + size]))
        at += 4 + size
    return elements


def _base64_elements(data: Any, name: str) -> list[bytes]:
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]  # the natural [[...]] of a one-dimensional tensor, flattened
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise bad(f"input {name!r}: data must be a list of strings, each the base64 text of an image file")
    try:
        return [base64.b64decode(d, validate=True) for d in data]
    except (binascii.Error, ValueError) as e:
        raise bad(f"input {name!r}: an element is not base64 ({e}); in JSON an image file travels as base64 text") from None


def _outputs(request: dict[str, Any], classes: int) -> list[Requested]:
    binary = _flag(_parameters(request, ""), "binary_data_output", "")
    asked = request.get("outputs")
    if asked is None:
        return [Requested(name, binary, None) for name in OUTPUTS]
    if not isinstance(asked, list) or not asked or not all(isinstance(o, dict) for o in asked):
        raise bad(f"outputs must be a list of objects naming {', '.join(map(repr, OUTPUTS))}")
    found: list[Requested] = []
    for o in asked:
        name = o.get("name")
        if name not in OUTPUTS or any(r.name == name for r in found):
            raise bad(f"output {name!r}: " + ("asked twice" if name in OUTPUTS else f"no such output; the model has {', '.join(OUTPUTS)}"))
        parameters = _parameters(o, f"output {name!r}: ")
        count = parameters.get("classification")
        if count is not None and (type(count) is not int or count < 1):
            raise bad(f"output {name!r}: parameters.classification {count!r} must be a whole number ≥ 1 (classes to return)")
        chosen = _flag(parameters, "binary_data", f"output {name!r}: ") if "binary_data" in parameters else binary
        found.append(Requested(name, chosen, None if count is None else min(count, classes)))
    return found


# -- the response --------------------------------------------------------------------------------
def _values(r: Requested, probabilities: torch.Tensor, classes: list[str]) -> tuple[str, list[int], Any]:
    """(datatype, shape, values) of one requested output of probabilities [N, K]."""
    if r.name == PROBABILITIES and r.count is None:
        return "FP32", list(probabilities.shape), probabilities.numpy()
    k = min(r.count or TOP_LABELS, len(classes))
    top = [p for row in top_labels(probabilities, classes, k) for p in row]  # what alexnet predict prints
    if r.name == LABELS:
        values = [p["label"] for p in top]
    else:  # Triton's classification extension: "value:index:label"
        values = [f"{np.float32(p['probability'])!s}:{p['index']}:{p['label']}" for p in top]  # float32's shortest digits
    return "BYTES", [len(probabilities), k], values


def _binary(datatype: str, values: Any) -> bytes:
    if datatype == "FP32":
        return np.ascontiguousarray(values, dtype="<f4").tobytes()
    return b"".join(struct.pack("<I", len(b)) + b for b in (v.encode("utf-8") for v in values))


def respond(model: str, version: str, inference: Inference, probabilities: torch.Tensor,
            classes: list[str]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the $inference_response: JSON, then the binary outputs in their order."""
    outputs, blobs = [], []
    for r in inference.outputs:
        datatype, shape, values = _values(r, probabilities, classes)
        tensor: dict[str, Any] = {"name": r.name, "datatype": datatype, "shape": shape}
        if r.binary:
            blobs.append(_binary(datatype, values))
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = values.ravel().tolist() if datatype == "FP32" else values
        outputs.append(tensor)
    response = {"model_name": model, "model_version": version, **({"id": inference.id} if inference.id is not None else {}),
                "outputs": outputs}
    head = json.dumps(response, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
