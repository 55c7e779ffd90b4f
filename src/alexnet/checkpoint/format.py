"""The checkpoint format: the :class:`Checkpoint` record, :func:`save` and :func:`load`, and the
check that every value loads weights-only.

On disk a checkpoint is ``torch.save`` of one plain dict::

    {"format": "alexnet-checkpoint", "format_version": 2, "model": "alexnet",
     "model_options": {...}, "state_dict": {...}, "classes": [...], "input_size": 227,
     "preprocess": {...}, "provenance": {...}, "train_state": {...} | None}

or its safetensors form (:mod:`alexnet.checkpoint.safetensors`), which :func:`load` reads too.

Safety: every value is a tensor, dict, list, tuple, str, int, float, bool or None, so the file loads
with ``torch.load(weights_only=True)``, whose unpickler refuses any other global. :func:`save`
checks this before writing (naming the offending key), and :func:`load` never falls back to a full
unpickle: a file crafted to run code when unpickled is refused and nothing in it runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet import models
from alexnet.atomic import DiskFull, atomic_path, disk_full
from alexnet.checkpoint.diagnose import read_weights_only, what_file, what_payload
from alexnet.checkpoint.safetensors import is_safetensors, read_payload, write_payload
from alexnet.errors import AlexNetError, one_line, shown

log = logging.getLogger(__name__)

FORMAT = "alexnet-checkpoint"
FORMAT_VERSION = 2  # bump when a field changes meaning; load() refuses newer versions, upgrades older ones
REQUIRED = ("model", "model_options", "state_dict", "classes", "input_size")

# Format 2: ``alexnet`` and ``alexnet_bn`` default to the paper's dropout scaling (§4.2); a format-1
# checkpoint of them was trained and runs with inverted dropout, so loading one says so explicitly.
_V1_INVERTED_DROPOUT = ("alexnet", "alexnet_bn")

SAFE_SCALARS = (str, int, float, bool, type(None))


@dataclass
class Checkpoint:
    """Everything needed to rebuild, evaluate and describe a trained model."""

    model: str  # registry name, for alexnet.models.create
    model_options: dict[str, Any]  # JSON-able keyword options of models.create, including num_classes
    state_dict: dict[str, torch.Tensor]
    classes: list[str]  # class names, index i = output i
    input_size: int  # the square side the model takes (after cropping)
    preprocess: dict[str, Any] = field(default_factory=dict)  # Preprocess.to_state()
    provenance: dict[str, Any] = field(default_factory=dict)  # see provenance.collect_provenance()
    train_state: dict[str, Any] | None = None  # optimizer, scheduler, RNG states, epoch, step
    format_version: int = FORMAT_VERSION  # the version of the file it was read from (saving writes the current one)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "model_options": dict(self.model_options),
            "state_dict": dict(self.state_dict),
            "classes": list(self.classes),
            "input_size": int(self.input_size),
            "preprocess": self.preprocess,
            "provenance": self.provenance,
            "train_state": self.train_state,
        }


def from_model(
    model: nn.Module,
    classes: list[str],
    *,
    model_options: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Checkpoint:
    """A checkpoint of ``model`` (a registry model with ``.name`` and ``.input_size``); tensors are
    copied to the CPU so the file loads anywhere."""
    options = {k: v for k, v in (model_options or {}).items() if k not in models.PLACEMENT_OPTIONS}  # loads on one device
    options["num_classes"] = len(classes)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return Checkpoint(
        model=model.name,
        model_options=options,
        state_dict=state,
        classes=list(classes),
        input_size=int(model.input_size),
        preprocess=preprocess or {},
        provenance=provenance or {},
        train_state=train_state,
    )


def check_safe(value: Any, where: str = "checkpoint") -> None:
    """Raise if ``value`` holds anything ``torch.load(weights_only=True)`` would refuse (numpy
    arrays, dataclasses, paths, …); the message names the key. Tensors, dicts, lists, tuples and
    plain scalars pass."""
    if isinstance(value, torch.Tensor) or type(value) in SAFE_SCALARS:  # exact types: a str subclass is a global
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise AlexNetError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoint keys must be str or int")
            check_safe(v, f"{where}.{k}")
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            check_safe(v, f"{where}[{i}]")
        return
    raise AlexNetError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}; a checkpoint holds only tensors, dicts, "
        "lists, str, int, float, bool and None (convert it, e.g. numpy → torch.from_numpy, dataclass → asdict)"
    )


def save(path: str | os.PathLike, ckpt: Checkpoint, *, overwrite: bool = True) -> None:
    """Write ``ckpt`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``), so a crash mid-write never leaves a truncated checkpoint behind.

    ``overwrite=False`` refuses an existing file (what the CLI uses for ``--out`` without ``--force``);
    the training loop rewrites its own checkpoints with the default.
    """
    path = Path(path)
    json.dumps(ckpt.model_options)  # model options must be plain values (they are printed by `info`)
    if len(ckpt.classes) != int(ckpt.model_options.get("num_classes", len(ckpt.classes))):
        raise AlexNetError(f"{path}: {len(ckpt.classes)} class names but model_options num_classes={ckpt.model_options['num_classes']}")
    payload = ckpt.to_payload()
    check_safe(payload)
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write as RuntimeError ("file write failed")
            if disk_full(tmp, need=sum(t.numel() * t.element_size() for t in ckpt.state_dict.values())):
                raise DiskFull(path) from None
            raise AlexNetError(f"cannot write {path}: {one_line(e, 160)}") from None
    log.info("saved checkpoint %s (%s, %d classes)", path, ckpt.model, ckpt.num_classes)


def save_safetensors(path: str | os.PathLike, ckpt: Checkpoint, *, overwrite: bool = False) -> None:
    """The checkpoint without its training state as a .safetensors file (:mod:`alexnet.checkpoint.safetensors`)."""
    write_payload(path, ckpt.to_payload(), overwrite=overwrite)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save` with ``torch.load(weights_only=True)``, or one
    exported as safetensors (``alexnet export --format safetensors``).

    Every failure is one :class:`AlexNetError` line naming the file: missing, truncated, not a
    checkpoint (:mod:`alexnet.checkpoint.diagnose` says what it is), written by a newer format
    version, or a pickle that would run code (refused before anything in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"{path}: no such checkpoint file" if not path.exists() else f"{path}: not a file")
    if is_safetensors(path):
        payload = read_payload(path, map_location)
    else:
        kind = what_file(path)
        if kind is not None:
            raise AlexNetError(f"{path}: {kind}")
        payload = read_weights_only(path, map_location)
    return _from_payload(payload, path)


def _from_payload(payload: Any, path: Path) -> Checkpoint:
    """The checkpoint a loaded payload holds, format 1 upgraded; a one-line error naming ``path`` else."""
    kind = what_payload(payload, path)
    if kind is not None:
        raise AlexNetError(f"{path}: {kind}")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AlexNetError(
            f"{path}: not an alexnet checkpoint (a torch file without the {FORMAT!r} marker; "
            "import other weights with `alexnet import`)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise AlexNetError(f"{path}: checkpoint has no format_version")
    if version > FORMAT_VERSION:
        raise AlexNetError(f"{path}: checkpoint format version {version!r} is newer than this package reads ({FORMAT_VERSION}); upgrade alexnet")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise AlexNetError(f"{path}: checkpoint lacks {', '.join(missing)}")
    _check_fields(path, payload)
    options = dict(payload["model_options"])
    if version < 2 and payload["model"] in _V1_INVERTED_DROPOUT:
        options.setdefault("dropout_scaling", "inverted")
    return Checkpoint(
        model=payload["model"],
        model_options=options,
        state_dict=dict(payload["state_dict"]),
        classes=list(payload["classes"]),
        input_size=int(payload["input_size"]),
        preprocess=payload.get("preprocess") or {},
        provenance=payload.get("provenance") or {},
        train_state=payload.get("train_state"),
        format_version=version,
    )


FIELDS = {"model": (str,), "model_options": (dict,), "state_dict": (dict,), "classes": (list, tuple), "input_size": (int,),
          "preprocess": (dict, type(None)), "provenance": (dict, type(None)), "train_state": (dict, type(None))}


def _check_fields(path: Path, payload: dict[str, Any]) -> None:
    """Each field of the kind every reader takes, named with the file where one is not (a checkpoint edited or
    written by another program came out as an internal AttributeError, or ``int('big')`` without the file)."""
    for key, kinds in FIELDS.items():
        value = payload.get(key)
        if key in payload and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise AlexNetError(f"{path}: its {key} is {type(value).__name__} {shown(str(value))}, not "
                               f"{' or '.join(k.__name__ for k in kinds if k is not type(None))}")
    preprocess = payload.get("preprocess") or {}
    for key in ("pipeline", "stats"):
        if preprocess.get(key) is not None and not isinstance(preprocess[key], dict):
            raise AlexNetError(f"{path}: its preprocess.{key} is {type(preprocess[key]).__name__}, not a table of values")
    if not all(isinstance(c, str) for c in payload["classes"]):
        raise AlexNetError(f"{path}: its classes are not all names (strings)")

