"""MNIST and Fashion-MNIST from their IDX files, gzipped or not.

A folder (or its ``raw`` sub-folder, torchvision's layout) holding

    train-images-idx3-ubyte   train-labels-idx1-ubyte    60,000 training images
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte     10,000 test images

each optionally ending in ``.gz`` (also accepted: ``train-images.idx3-ubyte``, as some mirrors name
them). An IDX file is a 4-byte magic (two zero bytes, the element type 0x08 = uint8, the number of
dimensions), one big-endian uint32 per dimension, then the data. Images come out as uint8
[N, 28, 28, 1] (grey, C = 1), labels as int64.

Class names: Fashion-MNIST's ten names when the folder's path contains "fashion" (any case),
otherwise the digits "0" … "9" (or "0" … str(max label) for other IDX sets such as KMNIST).

``--data fashion-mnist`` names the real Fashion-MNIST without a path (:func:`find_fashion_mnist`):
``$ALEXNET_FASHION_MNIST`` when set, else Debian's package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), else ``~/.cache/alexnet/fashion-mnist``; each may hold
the four files itself, in ``raw/``, or in torchvision's ``FashionMNIST/raw``. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np

from alexnet.atomic import atomic_write
from alexnet.data.imageset import ImageSet
from alexnet.errors import AlexNetError

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PREFIXES = {"train": "train", "test": "t10k"}
UINT8 = 0x08
MAX_BYTES = 2**32  # far above MNIST's 47 MB and EMNIST's 700 MB; a header beyond it is not such a file
NUM_CLASSES = 10  # MNIST, Fashion-MNIST, KMNIST: labels 0–9
FASHION_MNIST_ENV = "ALEXNET_FASHION_MNIST"
FASHION_MNIST_FOLDERS = ("/usr/share/datasets/fashion-mnist", "~/.cache/alexnet/fashion-mnist")


def _pattern(prefix: str, kind: str, dims: int) -> re.Pattern:
    return re.compile(rf"^{prefix}-{kind}[.-]idx{dims}-ubyte(\.gz)?$")


def find_idx_folder(root: Path) -> Path | None:
    """``root`` itself or its ``raw`` sub-folder, whichever holds an images file."""
    for candidate in (root, root / "raw"):
        if candidate.is_dir() and any(_find(candidate, split, "images", 3, required=False) for split in PREFIXES):
            return candidate
    return None


def find_fashion_mnist() -> Path:
    """The folder holding the real Fashion-MNIST (see the module doc), or a one-line error that says
    where it looked and how to get the files."""
    chosen = os.environ.get(FASHION_MNIST_ENV)
    candidates = [chosen] if chosen else list(FASHION_MNIST_FOLDERS)
    for candidate in candidates:
        root = Path(candidate).expanduser()
        for folder in (root, root / "FashionMNIST"):
            if (found := find_idx_folder(folder)) is not None:
                return found
    if chosen:
        raise AlexNetError(f"{chosen} (${FASHION_MNIST_ENV}): no Fashion-MNIST IDX files "
                           f"(train-images-idx3-ubyte[.gz] …) there, in raw/ or in FashionMNIST/raw/")
    raise AlexNetError(f"fashion-mnist: not found in {' or '.join(FASHION_MNIST_FOLDERS)}; install it with "
                       f"`apt-get install dataset-fashion-mnist`, or set ${FASHION_MNIST_ENV} to the folder "
                       f"holding its four IDX files")


def _find(folder: Path, split: str, kind: str, dims: int, required: bool = True) -> Path | None:
    pattern = _pattern(PREFIXES[split], kind, dims)
    matches = sorted(p for p in folder.iterdir() if pattern.match(p.name))
    if not matches and required:
        raise AlexNetError(f"{folder}: no {PREFIXES[split]}-{kind}-idx{dims}-ubyte[.gz] file for the {split} split")
    return matches[0] if matches else None


def _read_one(folder: Path, split: str, kind: str, dims: int) -> tuple[Path, np.ndarray]:
    """The ``kind`` file of ``split``, read. A raw file and its ``.gz`` (torchvision keeps both) are one
    file when they hold the same data; when they differ, which is the data set cannot be guessed."""
    first = _find(folder, split, kind, dims)
    data = read_idx(first, dims)
    pattern = _pattern(PREFIXES[split], kind, dims)
    for other in sorted(p for p in folder.iterdir() if pattern.match(p.name) and p != first):
        if not np.array_equal(read_idx(other, dims), data):
            raise AlexNetError(f"{first} and {other.name}: two {split} {kind} files with different contents; remove the one "
                               "that is not the data set")
    return first, data


def open_idx(root: str | os.PathLike, fashion: bool = False) -> tuple[dict[str, ImageSet], list[str]]:
    """The train and test splits found in ``root`` (a split needs both its images and labels file);
    Fashion-MNIST's class names when ``fashion`` or when the path says "fashion"."""
    root = Path(root)
    splits = {}
    for split in PREFIXES:
        images_path = _find(root, split, "images", 3, required=False)
        if images_path is None:
            continue
        images_path, images = _read_one(root, split, "images", 3)
        labels_path, labels = _read_one(root, split, "labels", 1)
        labels = labels.astype(np.int64)
        if len(images) != len(labels):
            raise AlexNetError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
        outside = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
        if len(outside):
            raise AlexNetError(f"{labels_path}: label {labels[outside[0]]} at index {outside[0]} is outside 0–{NUM_CLASSES - 1} "
                               f"({len(outside)} such labels); MNIST-family files have {NUM_CLASSES} classes")
        splits[split] = ImageSet(labels=labels, classes=[], images=images[..., None],
                                 info={"source": "idx", "files": [str(images_path), str(labels_path)]})
    if not splits:
        raise AlexNetError(f"{root}: no train-images-idx3-ubyte or t10k-images-idx3-ubyte file")
    fashion = fashion or "fashion" in str(root.resolve()).lower()
    classes = FASHION_CLASSES if fashion else [str(i) for i in range(NUM_CLASSES)]
    for s in splits.values():
        s.classes = classes
    return splits, classes


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an IDX file, gzipped when ``path`` ends in ``.gz``, written atomically."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, UINT8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()
    atomic_write(path, gzip.compress(data) if path.name.endswith(".gz") else data)


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The uint8 array in an IDX file (gzipped or not), checked against its header.

    The header is read first and at most the bytes it declares (plus one, to detect more) are read or
    decompressed: a small .gz that inflates far beyond what its header says is refused at once,
    without the memory a full decompression would take."""
    try:
        with open(path, "rb") as raw_file:
            gzipped = raw_file.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            header = f.read(4 + 4 * dims)
            if len(header) < 4 + 4 * dims or header[:2] != b"\0\0":
                raise AlexNetError(f"{path}: not an IDX file (starts with {header[:4].hex() or 'nothing'})")
            if header[2] != UINT8 or header[3] != dims:
                raise AlexNetError(f"{path}: IDX header says type 0x{header[2]:02x} with {header[3]} dimensions, "
                                   f"expected 0x08 (uint8) with {dims}")
            shape = tuple(int(d) for d in np.frombuffer(header, dtype=">u4", count=dims, offset=4))
            expected = int(np.prod(shape))
            if expected > MAX_BYTES:
                raise AlexNetError(f"{path}: the header declares {'×'.join(map(str, shape))} = {expected:,} bytes, "
                                   f"more than an MNIST-family file holds ({MAX_BYTES:,})")
            data = f.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise AlexNetError(f"{path}: cannot read ({e})") from None
    if len(data) != expected:
        got = "more data than" if len(data) > expected else f"{len(data):,} bytes of data,"
        raise AlexNetError(f"{path}: wrong size: {got} the header's {'×'.join(map(str, shape))} needs {expected:,}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()
