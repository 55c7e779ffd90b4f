"""The fc7 feature bank of the training images, and the nearest of them to a query (Fig. 4, right).

§6.1: "If two images produce feature activation vectors with a small Euclidean separation, we can
say that the higher levels of the neural network consider them to be similar." The bank holds one
fc7 code (``model.forward_features``, the centre crop) per training image:

* computed on start (:func:`compute_bank`) over the training split, or its first ``limit`` images
  for a large set (the page says how many it searched);
* or read from a file (:func:`read_bank`): a float32 (or float16) ``.npy`` [N, D] as ``alexnet
  features`` writes it, opened memory-mapped (``allow_pickle=False``: nothing in it can run), with
  what it writes beside it when present: ``NAME.json`` (:func:`bank_record`: its ``split``, default
  train, its ``layer``, which must be fc7: ``features`` or ``fc7``, and the checkpoint's SHA-256, which
  must be the explored file's) and ``NAME.csv`` (its ``row`` column, or an
  ``index`` column: the position in the split of each row). Without a CSV, row i is image i and N
  must be the split's size.

:meth:`FeatureBank.nearest` is the package's one exact search (:mod:`alexnet.inference.neighbours`),
streamed in chunks so a memory-mapped bank of a million rows is never read into memory at once; the
codes are :class:`alexnet.inference.features.Extractor`'s, as ``alexnet features`` computes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet.data import ImageSet, iter_batches
from alexnet.errors import AlexNetError
from alexnet.inference.features import Extractor, check_rows, read_index
from alexnet.inference.neighbours import nearest


@dataclass
class FeatureBank:
    codes: np.ndarray  # float [N, D]; memory-mapped when read from a file
    index: np.ndarray  # int64 [N]: each row's position in the split
    source: str  # what the page says about where the bank came from
    split: str = "train"  # the split whose images the rows are

    def nearest(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(split positions, Euclidean distances) of the ``k`` rows nearest ``query`` [D], nearest first; all
        the rows when the bank has fewer (the page shows what it gets)."""
        found = nearest(self.codes, np.asarray(query)[None], min(k, len(self.codes)))
        return self.index[found.rows[0]], found.distances[0]


def compute_bank(extractor: Extractor, images: ImageSet, *, limit: int, batch_size: int = 256) -> FeatureBank:
    """fc7 codes of the first ``limit`` images of ``images`` (all when it is 0 or more than there are)."""
    count = len(images) if limit <= 0 else min(limit, len(images))
    codes, seen = [], 0
    for x, _ in iter_batches(images, batch_size, size=extractor.size, device=extractor.config.device):
        if seen >= count:
            break
        x = x[: count - seen]
        codes.append(extractor(x).numpy())
        seen += len(x)
    if not codes:
        raise AlexNetError("the training split has no images for a feature bank")
    source = f"fc7 of {count} training images, computed on start" + ("" if count == len(images) else f" (of {len(images)})")
    return FeatureBank(np.concatenate(codes).astype(np.float32), np.arange(count, dtype=np.int64), source)


FC7_LAYERS = ("features", "fc7")  # alexnet features' names for the code explore compares (forward_features)


def bank_record(path: str | Path) -> dict:
    """The record ``alexnet features`` writes beside a bank (``{}`` without one: a bare .npy of the train
    split), checked to be of fc7 codes. Its ``split`` (default train) says whose images the rows are."""
    record_path = Path(path).with_suffix(".json")
    if not record_path.is_file():
        return {}
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AlexNetError(f"{record_path}: unreadable record of the feature bank ({e})") from None
    if not isinstance(record, dict):
        raise AlexNetError(f"{record_path}: not the record alexnet features writes (a JSON object)")
    layer = record.get("layer")
    if layer is not None and layer not in FC7_LAYERS:
        raise AlexNetError(f"{path}: holds {layer!r} features, but explore compares fc7 codes "
                           f"(write the bank with alexnet features --layer fc7, the default)")
    return record


def read_bank(path: str | Path, images: ImageSet, dim: int, split: str = "train") -> FeatureBank:
    """A bank written by ``alexnet features``: ``.npy`` float [N, D], with its CSV index when it is beside it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise AlexNetError(f"{path}: cannot read the feature bank ({e.strerror or e})") from None
    if magic != b"\x93NUMPY":
        raise AlexNetError(f"{path}: not a .npy file (a feature bank is the float32 [N, D] array `alexnet features` writes)")
    try:
        codes = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:  # Python objects (refused: nothing in the file is run), or a damaged header
        raise AlexNetError(f"{path}: not a float32 [N, D] array ({type(e).__name__}); a feature bank holds numbers only") from None
    if codes.ndim != 2 or codes.dtype not in (np.float32, np.float16):
        raise AlexNetError(f"{path}: expected float32 [N, D] features, got {codes.dtype} {list(codes.shape)}")
    if codes.shape[1] != dim:
        raise AlexNetError(f"{path}: features have {codes.shape[1]} dimensions but the checkpoint's fc7 has {dim}")
    check_rows(path, codes)
    index = _read_index(path.with_suffix(".csv"), len(codes), len(images), split)
    return FeatureBank(codes, index, f"{path.name}: {len(codes)} {split} images, {codes.shape[1]}-d", split)


def _read_index(csv_path: Path, rows: int, images: int, split: str) -> np.ndarray:
    if csv_path.is_file():
        index = read_index(csv_path, rows).positions
        if len(index) and (index.min() < 0 or index.max() >= images):
            raise AlexNetError(f"{csv_path}: a row is outside the {split} split's 0–{images - 1}")
        return index
    if rows != images:
        raise AlexNetError(f"feature bank has {rows} rows but the {split} split has {images} images "
                           f"(and no CSV with a 'row' or 'index' column beside it says which)")
    return np.arange(rows, dtype=np.int64)
