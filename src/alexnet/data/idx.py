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
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np

from ..errors import AlexNetError
from .imageset import ImageSet

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PREFIXES = {"train": "train", "test": "t10k"}
UINT8 = 0x08


def _pattern(prefix: str, kind: str, dims: int) -> re.Pattern:
    return re.compile(rf"^{prefix}-{kind}[.-]idx{dims}-ubyte(\.gz)?$")


def find_idx_folder(root: Path) -> Path | None:
    """``root`` itself or its ``raw`` sub-folder, whichever holds an images file."""
    for candidate in (root, root / "raw"):
        if candidate.is_dir() and any(_find(candidate, split, "images", 3, required=False) for split in PREFIXES):
            return candidate
    return None


def _find(folder: Path, split: str, kind: str, dims: int, required: bool = True) -> Path | None:
    pattern = _pattern(PREFIXES[split], kind, dims)
    matches = sorted(p for p in folder.iterdir() if pattern.match(p.name))
    if not matches and required:
        raise AlexNetError(f"{folder}: no {PREFIXES[split]}-{kind}-idx{dims}-ubyte[.gz] file for the {split} split")
    return matches[0] if matches else None


def open_idx(root: str | os.PathLike) -> tuple[dict[str, ImageSet], list[str]]:
    """The train and test splits found in ``root`` (a split needs both its images and labels file)."""
    root = Path(root)
    splits, max_label = {}, 9
    for split in PREFIXES:
        images_path = _find(root, split, "images", 3, required=False)
        if images_path is None:
            continue
        labels_path = _find(root, split, "labels", 1)
        images = read_idx(images_path, dims=3)
        labels = read_idx(labels_path, dims=1).astype(np.int64)
        if len(images) != len(labels):
            raise AlexNetError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
        max_label = max(max_label, int(labels.max(initial=0)))
        splits[split] = ImageSet(labels=labels, classes=[], images=images[..., None],
                                 info={"source": "idx", "files": [str(images_path), str(labels_path)]})
    if not splits:
        raise AlexNetError(f"{root}: no train-images-idx3-ubyte or t10k-images-idx3-ubyte file")
    fashion = "fashion" in str(root.resolve()).lower()
    classes = FASHION_CLASSES if fashion and max_label == 9 else [str(i) for i in range(max_label + 1)]
    for s in splits.values():
        s.classes = classes
    return splits, classes


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The uint8 array in an IDX file (gzipped or not), checked against its header."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise AlexNetError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 + 4 * dims or raw[:2] != b"\0\0":
        raise AlexNetError(f"{path}: not an IDX file (starts with {raw[:4].hex() or 'nothing'})")
    if raw[2] != UINT8 or raw[3] != dims:
        raise AlexNetError(f"{path}: IDX header says type 0x{raw[2]:02x} with {raw[3]} dimensions, "
                           f"expected 0x08 (uint8) with {dims}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    expected = int(np.prod(shape))
    data = len(raw) - 4 - 4 * dims
    if data != expected:
        raise AlexNetError(f"{path}: wrong size: {data:,} bytes of data, the header's {'×'.join(map(str, shape))} "
                           f"needs {expected:,}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy()
