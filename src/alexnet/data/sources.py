"""``--data SPEC`` → :class:`Dataset`: which source a spec names, and opening it.

A spec is ``digits`` (scikit-learn's bundled digits, the embedded default), ``fashion-mnist`` (the
real Fashion-MNIST where it is installed: :func:`alexnet.data.idx.find_fashion_mnist`) or a path to

1. a packed store written by ``alexnet prepare`` (has ``manifest.json``),
2. a CIFAR-10 python folder (``data_batch_1`` … / ``test_batch``, or a folder holding
   ``cifar-10-batches-py``),
3. a folder of MNIST / Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]`` …, or their ``raw/``),
4. an image folder in ImageNet layout (``train/``, ``val/``, ``test/``),

tried in that order. Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alexnet.data.cifar import find_cifar10_folder, open_cifar10
from alexnet.data.digits import open_digits
from alexnet.data.folder import is_image_folder, open_image_folder
from alexnet.data.idx import find_fashion_mnist, find_idx_folder, open_idx
from alexnet.data.imageset import ImageSet
from alexnet.data.stats import Stats
from alexnet.data.store import is_store, open_store
from alexnet.errors import AlexNetError, did_you_mean

DIGITS = "digits"
FASHION_MNIST = "fashion-mnist"
NAMED = (DIGITS, FASHION_MNIST)  # specs that are names, not paths
SPEC_HELP = ("'digits', 'fashion-mnist', or a path: an image folder, cifar-10-batches-py, MNIST/Fashion-MNIST "
             "IDX files, or a packed store from alexnet prepare")


@dataclass
class Dataset:
    """The splits of one source (keys among "train", "val", "test") and what they share."""

    name: str  # "digits", "fashion-mnist", "cifar10", "idx", "folder" or "store"
    splits: dict[str, ImageSet]
    classes: list[str]
    stats: Stats | None = None  # a packed store's train statistics; None elsewhere (compute them)
    root: str | None = None  # the folder it was read from

    def split(self, name: str) -> ImageSet:
        """The split called ``name``, or a one-line error listing the ones there are."""
        if name not in self.splits:
            raise AlexNetError(f"{self.root or self.name}: no {name!r} split ({did_you_mean(name, self.splits)}"
                               f"has {', '.join(self.splits) or 'none'})")
        return self.splits[name]


def recorded_spec(spec: str | os.PathLike) -> str:
    """A data spec as a record keeps it (a feature set's ``data``): a named set by its name, a path made
    absolute, so that two ways of writing one folder compare equal."""
    return str(spec) if str(spec) in NAMED else str(Path(spec).expanduser().resolve())


def open_dataset(spec: str | os.PathLike) -> Dataset:
    """The data set ``spec`` names (see the module doc)."""
    if str(spec) == DIGITS:
        splits, classes = open_digits()
        return Dataset(DIGITS, splits, classes)
    if str(spec) == FASHION_MNIST:
        folder = find_fashion_mnist()
        splits, classes = open_idx(folder, fashion=True)
        return Dataset(FASHION_MNIST, splits, classes, None, str(folder))
    root = Path(spec).expanduser()
    if not root.exists():
        raise AlexNetError(f"{spec}: no such folder ({did_you_mean(str(spec), NAMED)}a data set is {SPEC_HELP})")
    if not root.is_dir():
        raise AlexNetError(f"{spec}: a file; a data set is {DIGITS!r}, {FASHION_MNIST!r} or a folder")
    if root.name.endswith(".partial") and (root / "state.json").is_file():
        raise AlexNetError(f"{root}: an unfinished alexnet prepare run; rerun the same alexnet prepare command to finish it")
    if is_store(root):
        splits, classes, stats = open_store(root)
        return Dataset("store", splits, classes, stats, str(root))
    if (folder := find_cifar10_folder(root)) is not None:
        splits, classes = open_cifar10(folder)
        return Dataset("cifar10", splits, classes, None, str(folder))
    if (folder := find_idx_folder(root)) is not None:
        splits, classes = open_idx(folder)
        return Dataset("idx", splits, classes, None, str(folder))
    if is_image_folder(root):
        splits, classes = open_image_folder(root)
        return Dataset("folder", splits, classes, None, str(root))
    entries = sorted(p.name for p in root.iterdir())[:5]
    raise AlexNetError(f"{root}: not a data set: no manifest.json, CIFAR-10 batches, IDX files or train/val/test "
                       f"folders (found: {', '.join(entries) or 'nothing'})")
