"""What a file that is not a checkpoint really is, and torch's unpickler errors as one-line messages.

Every message names the file and, where another command takes it, that command (an image →
``alexnet predict``, a Caffe model → ``alexnet import caffe``, torchvision's state dict →
``alexnet import torchvision``); docs/ERRORS.md lists them with the tests that show each.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from alexnet.errors import AlexNetError, counted, one_line

IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF",
               b"MM\x00*": "TIFF"}


def what_file(path: Path) -> str | None:
    """Why ``path`` is not a checkpoint, in plain words with the command that takes it, or None when
    it may be one (a torch zip archive, or a legacy torch pickle: both then read weights-only)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "empty (0 bytes): a truncated or corrupt checkpoint"
    if head[:4] == b"PK\x03\x04":
        return _torchscript(path)
    if head[:1] == b"\x80":
        return None
    if head[:6] == b"\x93NUMPY":
        return "a NumPy array (.npy, what alexnet features writes), not a checkpoint; probe and search read it"
    for magic, name in IMAGE_MAGIC.items():
        if head.startswith(magic) or (name == "JPEG" and head[:2] == b"\xff\xd8"):
            return f"a {name} image, not a checkpoint; to classify it: alexnet predict --checkpoint MODEL.pt {path}"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"a WebP image, not a checkpoint; to classify it: alexnet predict --checkpoint MODEL.pt {path}"
    suffix = path.suffix.lower()
    if head[:1] == b"\x08" and (suffix == ".onnx" or b"pytorch" in head[:64]):  # field 1 (ir_version), then the rest
        return ("an ONNX model (what alexnet export writes), not a checkpoint; alexnet eval and predict run it when its name "
                "ends in .onnx, other commands need the .pt it came from")
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


def _torchscript(path: Path) -> str | None:
    """A TorchScript archive (a zip with the model's code) is no checkpoint; None for any other zip, or one
    too damaged to list (torch's reader then names it truncated)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return ("a TorchScript archive (what alexnet export --format torchscript writes), not a checkpoint; "
                "load it with torch.jit.load, or give the .pt it came from")
    return None


def what_payload(payload: Any, path: Path) -> str | None:
    """Why a torch file's content is not a checkpoint when it is a bare state dict (a model's
    ``state_dict()`` saved as it is: tensors only, no architecture or classes), else None."""
    if not (isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())):
        return None
    return (f"a bare state dict ({counted(len(payload), 'tensor')}, no architecture or classes), not an alexnet checkpoint; "
            f"if it is torchvision's AlexNet: alexnet import torchvision {path} --out model.pt")


def read_weights_only(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with its failures turned into one-line errors."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = one_line(e)
        operand, code = re.search(r"Unsupported operand (\d+)", text), None
        if operand and _opcode(int(operand.group(1))) not in CODE_OPCODES:  # e.g. FRAME: pickle.dump's, not torch.save's
            code = _code_opcode(path)  # read, never run
            if code is None:
                raise AlexNetError(f"{path}: not a checkpoint this package loads (its pickle uses opcode "
                                   f"{_opcode(int(operand.group(1)))}, of pickle protocol 4 or later, which torch's weights-only "
                                   "reader does not read; alexnet's checkpoints use protocol 2); nothing in it was run") from None
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            reason = f"pickle opcode {code}" if operand and code else _refused_global(text)
            raise AlexNetError(
                f"{path}: refused to load: the file asks to run or import code when unpickled ({reason}); "
                "only weights-only checkpoints are loaded, nothing in the file was run"
            ) from None
        raise AlexNetError(f"{path}: not a checkpoint (unreadable pickle: {text[:120]})") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise AlexNetError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__})") from None
    except OSError as e:  # unnamed: a zip cut short can send torch's reader to seek before the start (EINVAL)
        if e.filename is not None:
            raise AlexNetError(f"{path}: cannot read ({e.strerror or one_line(e)})") from None
        raise AlexNetError(f"{path}: truncated or corrupt checkpoint ({one_line(e)})") from None
    except RuntimeError as e:
        text = one_line(e)
        if "zip archive" in text or "central directory" in text or "PytorchStreamReader" in text:
            raise AlexNetError(f"{path}: truncated or corrupt checkpoint (incomplete zip archive)") from None
        raise AlexNetError(f"{path}: cannot load checkpoint: {text[:200]}") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, io.UnsupportedOperation) as e:
        raise AlexNetError(f"{path}: not a checkpoint ({type(e).__name__}: {one_line(e, 120)})") from None


CODE_OPCODES = ("GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4")


def _opcode(code: int) -> str:
    """A pickle opcode's name (149: FRAME), or its number where pickle has none."""
    op = pickletools.code2op.get(chr(code)) if 0 <= code < 256 else None
    return op.name if op else str(code)


def _code_opcode(path: Path) -> str | None:
    """The first opcode of a plain pickle file (not torch's zip archive, whose tensors are rebuilt by
    globals torch allows) that would import or call something when unpickled, else None. The opcodes are
    read by pickletools: nothing is run."""
    if zipfile.is_zipfile(path):
        return None
    try:
        with open(path, "rb") as f:
            for op, _, _ in pickletools.genops(f):
                if op.name in CODE_OPCODES:
                    return op.name
    except (ValueError, EOFError, OSError):  # a damaged stream: judged by what was read before it
        pass
    return None


def _refused_global(text: str) -> str:
    """The part of torch's weights-only refusal that says what the file asked for."""
    found = re.search(r"GLOBAL (\S+)", text) or re.search(r"Unsupported (?:global|operand):? (\S+)", text)
    if found is None:
        return "content outside tensors and plain values"
    what = found.group(1).rstrip(".,")
    return f"global {what}" if "GLOBAL" in found.group(0) or "global" in found.group(0) else f"pickle opcode {what}"
