"""The safetensors form of a checkpoint (what ``alexnet export --format safetensors`` writes).

The weights are the file's tensors under their state-dict names; every other field of the payload
(model, model_options, classes, input_size, preprocess, provenance) is JSON in the header's metadata,
and a tensor inside those fields (the statistics' mean image) is stored as a tensor ``__meta__/…``
with ``{"__tensor__": key}`` in its place. The training state is left out. Nothing in the file is
code, so it needs no unpickler at all. :func:`alexnet.checkpoint.load` reads both forms.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from alexnet.atomic import atomic_path
from alexnet.errors import AlexNetError, one_line

META_PREFIX = "__meta__/"  # safetensors keys of tensors that belong to the metadata, not the model
TENSOR_REF = "__tensor__"
FIELDS = ("model", "model_options", "classes", "input_size", "preprocess", "provenance")  # JSON in the metadata


def is_safetensors(path: str | os.PathLike) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def write_payload(path: str | os.PathLike, payload: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write a checkpoint payload (``Checkpoint.to_payload()``) as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in payload["state_dict"].items()}
    meta_tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": payload["format"], "format_version": str(payload["format_version"])}
    metadata.update({k: json.dumps(_split_tensors(payload[k], k, meta_tensors)) for k in FIELDS})
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file({**tensors, **meta_tensors}, str(tmp), metadata=metadata)


def read_payload(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint payload of a file written by :func:`write_payload` (plain data, no pickle)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise AlexNetError(f"{path}: truncated or corrupt safetensors file ({one_line(e, 120)})") from None
    try:
        payload: dict[str, Any] = {k: json.loads(metadata[k]) for k in FIELDS}
        payload["format"], payload["format_version"] = metadata["format"], int(metadata["format_version"])
    except (KeyError, ValueError) as e:
        raise AlexNetError(f"{path}: a safetensors file without alexnet checkpoint metadata ({type(e).__name__}: {e})") from None
    meta = {k: v for k, v in tensors.items() if k.startswith(META_PREFIX)}
    payload["state_dict"] = {k: v for k, v in tensors.items() if not k.startswith(META_PREFIX)}
    payload["preprocess"] = _join_tensors(payload["preprocess"], meta)
    payload["provenance"] = _join_tensors(payload["provenance"], meta)
    payload["train_state"] = None
    return payload


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
    """The inverse of :func:`_split_tensors`: every {"__tensor__": key} replaced by its tensor."""
    if isinstance(value, dict):
        if set(value) == {TENSOR_REF}:
            return tensors[value[TENSOR_REF]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value
