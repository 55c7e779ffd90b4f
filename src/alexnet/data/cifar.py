"""CIFAR-10 from its python folder (``cifar-10-batches-py``), read without running any code.

The folder holds ``data_batch_1`` … ``data_batch_5`` (train, 50,000 images), ``test_batch``
(test, 10,000) and ``batches.meta`` (``label_names``). Each batch is a Python 2 pickle (protocol
2) of a dict: ``data`` a numpy uint8 array [N, 3072] (1024 red, 1024 green, 1024 blue values per
image, rows top to bottom), ``labels`` a list of N ints 0–9, plus ``batch_label`` and ``filenames``.

A pickle can name any Python function and have the loader call it. :class:`SafeUnpickler` resolves
only the handful of names these files contain (numpy's array reconstructor, ``numpy.ndarray``,
``numpy.dtype``, and ``_codecs.encode``, which Python 3 writes for bytes in protocol 2) and maps each
onto a small local stand-in that rebuilds plain numeric arrays from their raw bytes; every other
name is refused. Nothing from numpy or anywhere else is called on the file's behalf.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from alexnet.data.imageset import ImageSet
from alexnet.errors import AlexNetError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
NUMERIC_DTYPES = {"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"}


def is_cifar10_folder(root: Path) -> bool:
    return (root / TEST_BATCH).is_file() or (root / TRAIN_BATCHES[0]).is_file()


def find_cifar10_folder(root: Path) -> Path | None:
    """``root`` itself or its ``cifar-10-batches-py`` sub-folder (what the archive unpacks to)."""
    for candidate in (root, root / "cifar-10-batches-py"):
        if candidate.is_dir() and is_cifar10_folder(candidate):
            return candidate
    return None


def open_cifar10(root: str | os.PathLike) -> tuple[dict[str, ImageSet], list[str]]:
    """Train (the five data batches) and test splits, uint8 [N, 32, 32, 3]."""
    root = Path(root)
    missing = [n for n in [*TRAIN_BATCHES, TEST_BATCH] if not (root / n).is_file()]
    if missing:
        raise AlexNetError(f"{root}: not a complete cifar-10-batches-py folder (missing {', '.join(missing)})")
    classes = CLASSES
    if (root / META).is_file():
        meta = load_pickle(root / META)
        names = meta.get("label_names")
        if not isinstance(names, list) or len(names) != 10:
            raise AlexNetError(f"{root / META}: expected 'label_names' with 10 names, got {names!r:.80}")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    splits = {}
    for split, names in (("train", TRAIN_BATCHES), ("test", [TEST_BATCH])):
        batches = [_read_batch(root / n) for n in names]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        splits[split] = ImageSet(labels=labels, classes=classes, images=images,
                                 info={"source": "cifar10", "files": [str(root / n) for n in names]})
    return splits, classes


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = load_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise AlexNetError(f"{path}: 'data' should be uint8 [N, 3072] (32×32×3 per image), got "
                           f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    if not isinstance(labels, list) or len(labels) != len(data):
        n = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise AlexNetError(f"{path}: {len(data)} images but {n} labels")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise AlexNetError(f"{path}: labels outside 0–9 (found {labels.min()}…{labels.max()})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW planes → HWC
    return np.ascontiguousarray(images), labels


def load_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys, through :class:`SafeUnpickler`."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except Refused as e:
        raise AlexNetError(f"{path}: refused: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError) as e:
        raise AlexNetError(f"{path}: truncated or not a CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise AlexNetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    try:
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _finish(v) for k, v in obj.items()}
    except AlexNetError as e:
        raise AlexNetError(f"{path}: {e}") from None
    except RecursionError:  # lists nested thousands deep: no CIFAR batch is
        raise AlexNetError(f"{path}: not a CIFAR batch (its lists are nested too deep to be labels or data)") from None


class Refused(pickle.UnpicklingError):
    """The pickle names something a CIFAR batch never holds; nothing of it was run."""


class SafeUnpickler(pickle.Unpickler):
    """Resolves only the names CIFAR's pickles contain, each to a local stand-in (module doc)."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _ArrayStub.reconstruct
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _scalar  # numpy integer labels (np.int64(3)), as people's own CIFAR-format files hold
        if (module, name) == ("numpy", "ndarray"):
            return _ArrayStub
        if (module, name) == ("numpy", "dtype"):
            return _DTypeStub
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise Refused(f"refuses to load {module}.{name}: a CIFAR batch holds only a dict of arrays, lists and bytes")


class _DTypeStub:
    """Stands in for ``numpy.dtype(name, align, copy)``; its pickled state gives the byte order."""

    def __init__(self, name, align=False, copy=True) -> None:
        name = name.decode("latin1") if isinstance(name, bytes) else name
        if name not in NUMERIC_DTYPES:
            raise Refused(f"refuses numpy dtype {name!r} (only plain numeric arrays)")
        self.name, self.order = name, "|"

    def __setstate__(self, state) -> None:
        order = state[1]
        self.order = order.decode("latin1") if isinstance(order, bytes) else order

    def dtype(self) -> np.dtype:
        return np.dtype((self.order if self.order in "<>" else "") + self.name)


class _ArrayStub:
    """Stands in for an ndarray being rebuilt: ``_reconstruct`` creates it, BUILD gives it its bytes."""

    @classmethod
    def reconstruct(cls, subtype, shape, typecode) -> _ArrayStub:
        if subtype is not cls:
            raise Refused("refuses an array of a type other than numpy.ndarray")
        return cls()

    def __setstate__(self, state) -> None:
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DTypeStub) or not isinstance(raw, (bytes, bytearray)):
            raise Refused("refuses an array that is not plain numeric data")
        array = np.frombuffer(raw, dtype=dtype.dtype())
        shape = tuple(int(s) for s in shape)
        self.array = array.reshape(shape, order="F" if fortran else "C")


def _scalar(dtype, raw) -> int | float:
    """Stands in for numpy's scalar reconstructor: a plain number from its dtype and bytes (no code)."""
    if not isinstance(dtype, _DTypeStub) or not isinstance(raw, (bytes, bytearray, str)):
        raise Refused("refuses a numpy scalar that is not a plain number")
    data = raw.encode("latin1") if isinstance(raw, str) else bytes(raw)
    value = np.frombuffer(data, dtype=dtype.dtype())
    if value.size != 1:
        raise Refused("refuses a numpy scalar of more than one value")
    return value[0].item()


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise Refused(f"refuses _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _finish(value):
    """Replace the stand-ins by the arrays they rebuilt."""
    if isinstance(value, _ArrayStub):
        if not hasattr(value, "array"):
            raise AlexNetError("an array in the pickle has no data")
        return value.array
    if isinstance(value, list):
        return [_finish(v) for v in value]
    return value
