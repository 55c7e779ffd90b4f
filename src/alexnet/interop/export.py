"""A checkpoint's model out to other runtimes: ONNX, TorchScript, safetensors.

* ONNX: the model in eval mode (dropout off), input ``images`` float [batch, C, S, S] already
  preprocessed, output ``logits`` [batch, K]; the batch axis is dynamic. Exported with the
  TorchScript-based exporter (``dynamo=False``), which needs no extra packages; opset 17.
* TorchScript: ``torch.jit.trace`` of the eval-mode model on one [1, C, S, S] input (the model has
  no data-dependent control flow, so the trace is the model).
* safetensors: the weights as tensors, plus every other checkpoint field in the metadata (JSON),
  with the preprocessing statistics stored as tensors named ``__meta__/…``. Nothing in the file
  is code; :func:`alexnet.checkpoint.load` reads it back as a checkpoint.

Every export writes a temporary file next to ``out`` and renames it into place.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AlexNetError

FORMATS = ("onnx", "torchscript", "safetensors")
ONNX_OPSET = 17
META_PREFIX = "__meta__/"  # safetensors keys of tensors that belong to the metadata, not the model
TENSOR_REF = "__tensor__"


def write_atomically(out: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = False) -> None:
    """Call ``write(tmp_path)`` on a temporary file in ``out``'s folder, then rename it to ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise AlexNetError(f"{out} already exists; choose another path or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, model.in_channels, model.input_size, model.input_size)


def export_onnx(model: nn.Module, out: str | os.PathLike, *, opset: int = ONNX_OPSET, overwrite: bool = False) -> None:
    model = model.eval().cpu()

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example_input(model, 2),), tmp, dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )

    write_atomically(out, write, overwrite=overwrite)


def export_torchscript(model: nn.Module, out: str | os.PathLike, *, overwrite: bool = False) -> None:
    model = model.eval().cpu()

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            traced = torch.jit.trace(model, example_input(model))
            traced.save(tmp)

    write_atomically(out, write, overwrite=overwrite)


# -- safetensors ---------------------------------------------------------------------------------
def _split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every tensor replaced by {"__tensor__": key}, the tensors moved into ``tensors``."""
    if isinstance(value, torch.Tensor):
        key = META_PREFIX + prefix
        tensors[key] = value.detach().cpu().contiguous()
        return {TENSOR_REF: key}
    if isinstance(value, dict):
        return {str(k): _split_tensors(v, f"{prefix}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_tensors(v, f"{prefix}/{i}", tensors) for i, v in enumerate(value)]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR_REF}:
            return tensors[value[TENSOR_REF]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


def export_safetensors(ckpt, out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """The checkpoint (without its training state) as a .safetensors file."""
    from safetensors.torch import save_file

    from ..checkpoint import FORMAT, FORMAT_VERSION

    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    meta_tensors: dict[str, torch.Tensor] = {}
    fields = {
        "model": ckpt.model,
        "model_options": ckpt.model_options,
        "classes": ckpt.classes,
        "input_size": ckpt.input_size,
        "preprocess": _split_tensors(ckpt.preprocess, "preprocess", meta_tensors),
        "provenance": _split_tensors(ckpt.provenance, "provenance", meta_tensors),
    }
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    metadata.update({k: json.dumps(v) for k, v in fields.items()})
    write_atomically(out, lambda tmp: save_file({**tensors, **meta_tensors}, tmp, metadata=metadata), overwrite=overwrite)


def is_safetensors(path: str | os.PathLike) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def load_safetensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint payload of a file written by :func:`export_safetensors` (plain data, no pickle)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise AlexNetError(f"{path}: truncated or corrupt safetensors file ({' '.join(str(e).split())[:120]})") from None
    try:
        payload: dict[str, Any] = {k: json.loads(metadata[k]) for k in ("model", "model_options", "classes", "input_size", "preprocess", "provenance")}
        payload["format"], payload["format_version"] = metadata["format"], int(metadata["format_version"])
    except (KeyError, ValueError) as e:
        raise AlexNetError(f"{path}: a safetensors file without alexnet checkpoint metadata ({type(e).__name__}: {e})") from None
    meta = {k: v for k, v in tensors.items() if k.startswith(META_PREFIX)}
    payload["state_dict"] = {k: v for k, v in tensors.items() if not k.startswith(META_PREFIX)}
    payload["preprocess"] = _join_tensors(payload["preprocess"], meta)
    payload["provenance"] = _join_tensors(payload["provenance"], meta)
    payload["train_state"] = None
    return payload


def export(ckpt, fmt: str, out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write ``ckpt`` in ``fmt`` (onnx, torchscript, safetensors) to ``out``."""
    from ..checkpoint import build_model

    if fmt not in FORMATS:
        raise AlexNetError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "safetensors":
        export_safetensors(ckpt, out, overwrite=overwrite)
        return
    model = build_model(ckpt)
    if fmt == "onnx":
        export_onnx(model, out, overwrite=overwrite)
    else:
        export_torchscript(model, out, overwrite=overwrite)
