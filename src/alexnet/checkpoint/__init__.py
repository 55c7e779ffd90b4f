"""Self-describing checkpoints: save (atomic), load (``weights_only``), build the model.

A checkpoint carries everything needed to evaluate or predict without flags, the way torchvision's
weights carry their metadata: the registry name of the architecture and its options, the class
names, the input size, the preprocessing with its statistics (``Preprocess.to_state()``), and
provenance (recipe, resolved config, package and torch versions, git commit, time). A training
checkpoint also holds ``train_state`` (optimizer, scheduler, RNG states, epoch, step).

This module owns both on-disk forms, ``torch.save`` (:func:`save`) and safetensors
(:func:`save_safetensors`, what ``alexnet export --format safetensors`` writes), and the tensor-by-tensor
check of a state dict (:func:`check_state_dict`); :mod:`alexnet.tools.interop` imports it, never the reverse.

On disk it is ``torch.save`` of one plain dict::

    {"format": "alexnet-checkpoint", "format_version": 2, "model": "alexnet",
     "model_options": {...}, "state_dict": {...}, "classes": [...], "input_size": 227,
     "preprocess": {...}, "provenance": {...}, "train_state": {...} | None}

Safety: every value is a tensor, dict, list, tuple, str, int, float, bool or None, so the file loads
with ``torch.load(weights_only=True)``, whose unpickler refuses any other global. :func:`save`
checks this before writing (naming the offending key), and :func:`load` never falls back to a full
unpickle: a file crafted to run code when unpickled is refused and nothing in it runs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import pickle
import platform
import re
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet import __version__, models
from alexnet.atomic import DiskFull, atomic_path, disk_full
from alexnet.errors import AlexNetError

log = logging.getLogger(__name__)

FORMAT = "alexnet-checkpoint"
FORMAT_VERSION = 2  # bump when a field changes meaning; load() refuses newer versions, upgrades older ones

# Format 2: ``alexnet`` and ``alexnet_bn`` default to the paper's dropout scaling (§4.2); a format-1
# checkpoint of them was trained and runs with inverted dropout, so loading one says so explicitly.
_V1_INVERTED_DROPOUT = ("alexnet", "alexnet_bn")

SAFE_SCALARS = (str, int, float, bool, type(None))
META_PREFIX = "__meta__/"  # safetensors keys of tensors that belong to the metadata, not the model
TENSOR_REF = "__tensor__"


@dataclass
class Checkpoint:
    """Everything needed to rebuild, evaluate and describe a trained model."""

    model: str  # registry name, for alexnet.models.create
    model_options: dict[str, Any]  # JSON-able keyword options of models.create, including num_classes
    state_dict: dict[str, torch.Tensor]
    classes: list[str]  # class names, index i = output i
    input_size: int  # the square side the model takes (after cropping)
    preprocess: dict[str, Any] = field(default_factory=dict)  # Preprocess.to_state()
    provenance: dict[str, Any] = field(default_factory=dict)  # see collect_provenance()
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


def collect_provenance(recipe: str | None = None, config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Where a checkpoint came from: recipe/preset, resolved config, versions, git commit, UTC time.

    ``config`` must be JSON-able (a dataclass's ``asdict`` is); ``extra`` adds plain values (e.g.
    ``source="torchvision alexnet-owt-7be5be79.pth"`` for imported weights).
    """
    out: dict[str, Any] = {
        "recipe": recipe,
        "config": config,
        "alexnet_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is a str subclass weights_only refuses
        "torchvision_version": torchvision_version(),
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.update(extra)
    return out


def torchvision_version() -> str | None:
    """``torchvision.__version__`` without importing torchvision, whose import (torch._dynamo, sympy)
    costs about a second in every command: read from its ``version.py`` as text (the local label
    kept, e.g. ``0.29.1+cu130``), else the distribution's metadata; None when it is not installed."""
    if "torchvision" in sys.modules:
        return str(sys.modules["torchvision"].__version__)
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        try:
            found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", (Path(folder) / "version.py").read_text(), re.M)
        except OSError:
            continue
        if found:
            return found.group(1)
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    if result.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")


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
            raise AlexNetError(f"cannot write {path}: {' '.join(str(e).split())[:160]}") from None
    log.info("saved checkpoint %s (%s, %d classes)", path, ckpt.model, ckpt.num_classes)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save` with ``torch.load(weights_only=True)``, or one
    exported as safetensors (``alexnet export --format safetensors``).

    Every failure is one :class:`AlexNetError` line naming the file: missing, truncated, not a
    checkpoint, written by a newer format version, or a pickle that would run code (refused before
    anything in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"{path}: no such checkpoint file" if not path.exists() else f"{path}: not a file")
    if is_safetensors(path):
        payload = load_safetensors(path, map_location)
    else:
        kind = what_file(path)
        if kind is not None:
            raise AlexNetError(f"{path}: {kind}")
        payload = read_weights_only(path, map_location)
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        count = f"{len(payload)} tensor" + ("s" if len(payload) != 1 else "")
        raise AlexNetError(f"{path}: a bare state dict ({count}, no architecture or classes), not an alexnet "
                           f"checkpoint; if it is torchvision's AlexNet: alexnet import torchvision {path} --out model.pt")
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
    missing = [k for k in ("model", "model_options", "state_dict", "classes", "input_size") if k not in payload]
    if missing:
        raise AlexNetError(f"{path}: checkpoint lacks {', '.join(missing)}")
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


IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF",
               b"MM\x00*": "TIFF"}


def what_file(path: Path) -> str | None:
    """Why ``path`` is not a checkpoint, in plain words with the command that takes it, or None when
    it may be one (a torch zip archive, or a legacy torch pickle: both then read weights-only)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "empty (0 bytes): a truncated or corrupt checkpoint"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return None
    for magic, name in IMAGE_MAGIC.items():
        if head.startswith(magic) or (name == "JPEG" and head[:2] == b"\xff\xd8"):
            return f"a {name} image, not a checkpoint; to classify it: alexnet predict --checkpoint MODEL.pt {path}"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"a WebP image, not a checkpoint; to classify it: alexnet predict --checkpoint MODEL.pt {path}"
    suffix = path.suffix.lower()
    if suffix == ".onnx" or head[:1] == b"\x08" and b"pytorch" in head[:64]:
        return "an ONNX model (what alexnet export writes), not a checkpoint; run it with onnxruntime, or use the .pt it came from"
    if suffix == ".caffemodel":
        return f"a Caffe model, not a checkpoint; convert it with: alexnet import caffe {path} --arch alexnet --out model.pt"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        if "layer {" in text or "layers {" in text or "input_dim" in text:
            return "a Caffe prototxt (text), not a checkpoint; the weights are in the .caffemodel: alexnet import caffe FILE.caffemodel"
        return "a text file, not a checkpoint (a checkpoint is what alexnet train writes into RUN/checkpoints/ or alexnet import writes)"
    return f"not a checkpoint: neither a torch file nor safetensors (it starts with bytes {head[:4].hex()})"


def read_weights_only(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with its failures turned into one-line errors."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = " ".join(str(e).split())
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            reason = _refused_global(text)
            raise AlexNetError(
                f"{path}: refused to load: the file asks to run or import code when unpickled ({reason}); "
                "only weights-only checkpoints are loaded, nothing in the file was run"
            ) from None
        raise AlexNetError(f"{path}: not a checkpoint (unreadable pickle: {text[:120]})") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise AlexNetError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__})") from None
    except RuntimeError as e:
        text = " ".join(str(e).split())
        if "zip archive" in text or "central directory" in text or "PytorchStreamReader" in text:
            raise AlexNetError(f"{path}: truncated or corrupt checkpoint (incomplete zip archive)") from None
        raise AlexNetError(f"{path}: cannot load checkpoint: {text[:200]}") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, io.UnsupportedOperation) as e:
        raise AlexNetError(f"{path}: not a checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None


def _refused_global(text: str) -> str:
    """The part of torch's weights-only refusal that says what the file asked for."""
    found = re.search(r"GLOBAL (\S+)", text) or re.search(r"Unsupported (?:global|operand):? (\S+)", text)
    if found is None:
        return "content outside tensors and plain values"
    what = found.group(1).rstrip(".,")
    return f"global {what}" if "GLOBAL" in found.group(0) or "global" in found.group(0) else f"pickle opcode {what}"


def build_model(ckpt: Checkpoint, source: str = "checkpoint") -> nn.Module:
    """The model the checkpoint describes, with its weights, in eval mode, on the CPU.

    Each tensor is checked before loading: a missing, extra or mis-shaped tensor (for example a
    checkpoint for another number of classes) is a one-line error naming the tensor and both shapes.
    The model is built on the meta device and takes the checkpoint's tensors themselves (they share
    memory with ``ckpt.state_dict``), so its random initialisation (0.8 s for AlexNet's 61 M weights
    on a CPU core) and a second copy of its weights (0.4 s of page faults) are never paid.
    """
    options = dict(ckpt.model_options)
    num_classes = options.pop("num_classes", ckpt.num_classes)
    if num_classes != ckpt.num_classes:
        raise AlexNetError(f"{source}: model_options num_classes={num_classes} but {ckpt.num_classes} class names")
    try:
        model = _empty_model(ckpt.model, num_classes=num_classes, **options)
    except ValueError as e:
        raise AlexNetError(f"{source}: cannot build model {ckpt.model!r}: {e}") from None
    wanted = model.state_dict()
    check_state_dict(ckpt.state_dict, wanted, source)
    for key, tensor in ckpt.state_dict.items():
        if tensor.is_floating_point() and tensor.numel() and not torch.isfinite(torch.stack(tensor.aminmax())).all():  # NaN propagates
            raise AlexNetError(f"{source}: tensor {key!r} holds NaN or infinite values; these weights cannot give predictions")
    model.load_state_dict({k: v.to(wanted[k].dtype) for k, v in ckpt.state_dict.items()}, assign=True)  # no copy, no page faults
    if any(t.is_meta for t in _tensors(model)):  # a tensor outside the state dict: build it the ordinary way
        model = models.create(ckpt.model, num_classes=num_classes, **options)
        model.load_state_dict(ckpt.state_dict)
    return model.eval()


def _empty_model(name: str, **options: Any) -> nn.Module:
    """``models.create`` on the meta device: the architecture without the cost of initialising it (a
    model whose constructor computes with its tensors, which meta cannot, is built the ordinary way)."""
    try:
        with torch.device("meta"):
            return models.create(name, **options)
    except (NotImplementedError, RuntimeError):
        return models.create(name, **options)


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every tensor a model holds: parameters, buffers and plain tensor attributes of its modules."""
    yield from model.parameters()
    yield from model.buffers()
    for module in model.modules():
        yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Every expected tensor present with its shape, nothing left over; the error names the tensor."""
    for key, ref in expected.items():
        if key not in state:
            raise AlexNetError(f"{source}: tensor {key!r} {tuple(ref.shape)} is missing")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise AlexNetError(f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise AlexNetError(f"{source}: unexpected tensors {', '.join(extra)}")


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


def save_safetensors(path: str | os.PathLike, ckpt: Checkpoint, *, overwrite: bool = False) -> None:
    """The checkpoint without its training state as a .safetensors file: the weights as tensors, every
    other field as JSON metadata, the statistics' tensors under ``__meta__/…`` (nothing in it is code)."""
    from safetensors.torch import save_file

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
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file({**tensors, **meta_tensors}, str(tmp), metadata=metadata)


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
        keys = ("model", "model_options", "classes", "input_size", "preprocess", "provenance")
        payload: dict[str, Any] = {k: json.loads(metadata[k]) for k in keys}
        payload["format"], payload["format_version"] = metadata["format"], int(metadata["format_version"])
    except (KeyError, ValueError) as e:
        raise AlexNetError(f"{path}: a safetensors file without alexnet checkpoint metadata ({type(e).__name__}: {e})") from None
    meta = {k: v for k, v in tensors.items() if k.startswith(META_PREFIX)}
    payload["state_dict"] = {k: v for k, v in tensors.items() if not k.startswith(META_PREFIX)}
    payload["preprocess"] = _join_tensors(payload["preprocess"], meta)
    payload["provenance"] = _join_tensors(payload["provenance"], meta)
    payload["train_state"] = None
    return payload


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
