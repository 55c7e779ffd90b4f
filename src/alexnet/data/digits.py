"""``digits``: scikit-learn's bundled handwritten digits, the embedded default data set.

1,797 real 8×8 grey images of the digits 0–9 (the UCI "optical recognition of handwritten digits"
test set) that ship inside scikit-learn, so nothing is downloaded. Pixel values 0–16 are scaled to
uint8 0–255 (×255/16, rounded); images are [N, 8, 8, 1].

The split is fixed: per class, the images are shuffled with numpy's legacy ``RandomState(SEED)``
(whose stream numpy keeps stable across versions) and the first round(20%) go to test, the next
round(10%) to val, the rest to train: 1,259 train / 179 val / 359 test images (docs/DATA.md lists
the per-class counts). Within each split the images keep their original order.

The file is read where scikit-learn keeps it (``sklearn/datasets/data/digits.csv.gz``: 64 pixel
values and the label per row, the file ``sklearn.datasets.load_digits`` parses) without importing
scikit-learn, whose import costs most of a second in every command; ``load_digits`` itself where the
file is not found there.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from alexnet.data.imageset import ImageSet

SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
CLASSES = [str(d) for d in range(10)]


def split_indices(labels: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """The fixed stratified train/val/test split of the module doc, as sorted index arrays."""
    rng = np.random.RandomState(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(members) * TEST_FRACTION))
        n_val = int(round(len(members) * VAL_FRACTION))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images [1797, 8, 8] float 0–16, labels [1797] int64): the module doc."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or ()) if spec else ():
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def open_digits() -> tuple[dict[str, ImageSet], list[str]]:
    pixels, labels = read_digits()
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[..., None]
    splits = {name: ImageSet(labels=labels[idx], classes=CLASSES, images=np.ascontiguousarray(images[idx]),
                             info={"source": "digits", "indices": idx})
              for name, idx in split_indices(labels).items()}
    return splits, CLASSES
