"""The packed store that ``alexnet prepare`` writes, and reading it back as memory-mapped ImageSets.

Layout of a store folder OUT (everything little-endian, nothing pickled)::

    OUT/manifest.json          format, version, source, size S, channels C, classes, per-split
                               counts and file names, the files left out with their reasons
    OUT/SPLIT.images.u8        raw uint8 [N, S, S, C], C-order: np.memmap(..., shape=(N, S, S, C))
    OUT/SPLIT.labels.npy       int64 [N]
    OUT/SPLIT.paths.txt        the source file of each image, one per line (image-folder sources)
    OUT/stats.npz              :class:`~alexnet.data.stats.Stats` of the train split

With ``--encoding jpeg`` (manifest ``"encoding": "jpeg"``) each split's images are JPEG records
instead, ``SPLIT.jpeg.bin`` with the offsets index ``SPLIT.index.npy`` (:mod:`alexnet.data.jpeg`),
opened as a lazy ImageSet whose loader decodes whole batches. A manifest without ``encoding`` is raw.

Images are the paper's down-sampled 256×256 (§2: shorter side to S, central S×S crop) unless
``--size`` said otherwise. Reading maps the image files (``np.memmap``, read-only), so a store of any
size opens at once and the loader indexes whole uint8 batches.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.imageset import ImageSet
from alexnet.data.jpeg import ENCODINGS, open_records
from alexnet.data.stats import Stats
from alexnet.errors import AlexNetError

MANIFEST = "manifest.json"
FORMAT = "alexnet-packed-store"
VERSION = 1
STATS = "stats.npz"


def images_file(split: str) -> str:
    return f"{split}.images.u8"


def labels_file(split: str) -> str:
    return f"{split}.labels.npy"


def paths_file(split: str) -> str:
    return f"{split}.paths.txt"


def is_store(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AlexNetError(f"{path}: not a readable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AlexNetError(f"{path}: not a packed store manifest (no \"format\": \"{FORMAT}\")")
    if manifest.get("version") != VERSION:
        raise AlexNetError(f"{path}: store version {manifest.get('version')!r}; this alexnet reads version {VERSION}")
    for key, kind in (("size", int), ("channels", int), ("classes", list), ("splits", dict)):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise AlexNetError(f"{path}: field {key!r} is {'missing' if key not in manifest else repr(manifest[key])[:60]}, "
                               f"expected {'a number' if kind is int else 'a ' + kind.__name__}")
    for split, entry in manifest["splits"].items():
        missing = [k for k in ("count", "labels") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise AlexNetError(f"{path}: split {split!r} lacks {', '.join(missing)}")
    return manifest


def open_store(root: str | os.PathLike) -> tuple[dict[str, ImageSet], list[str], Stats | None]:
    """The splits (memory-mapped), class names and train statistics of the store at ``root``."""
    root = Path(root)
    manifest = read_manifest(root)
    size, channels, classes = int(manifest["size"]), int(manifest["channels"]), list(manifest["classes"])
    encoding = manifest.get("encoding", "raw")
    if encoding not in ENCODINGS:
        raise AlexNetError(f"{root / MANIFEST}: encoding {encoding!r}; this alexnet reads {', '.join(ENCODINGS)}")
    splits = {}
    for split, entry in manifest["splits"].items():
        n = int(entry["count"])
        info = {"source": "store", "store": str(root), "encoding": encoding,
                "paths_file": str(root / entry["paths"]) if entry.get("paths") else None,
                "skipped": [s for s in manifest.get("skipped", []) if s["split"] == split]}
        labels = _load_labels(root / entry["labels"], n, len(classes))
        if encoding == "jpeg":
            records = open_records(root, entry, size, channels)
            splits[split] = ImageSet(labels=labels, classes=classes, loader=records, info=info)
            continue
        shape = (n, size, size, channels)
        path = root / entry["images"]
        expected = n * size * size * channels
        actual = path.stat().st_size if path.is_file() else None
        if actual != expected:
            what = "missing" if actual is None else f"{actual:,} bytes"
            raise AlexNetError(f"{path}: {what}, expected {'×'.join(map(str, shape))} = {expected:,} bytes")
        images = np.memmap(path, dtype=np.uint8, mode="r", shape=shape) if n else np.zeros(shape, np.uint8)
        splits[split] = ImageSet(labels=labels, classes=classes, images=images, info=info)
    stats = load_stats(root / manifest["stats"]) if manifest.get("stats") else None
    return splits, classes, stats


def load_stats(path: Path) -> Stats:
    """The store's training-set statistics, checked: readable, every field present, finite, a positive std."""
    try:
        stats = Stats.load(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise AlexNetError(f"{path}: not readable training-set statistics ({type(e).__name__}: {e})") from None
    for name in ("mean_image", "channel_mean", "channel_std", "eigval", "eigvec"):
        if not np.isfinite(getattr(stats, name)).all():
            raise AlexNetError(f"{path}: {name} holds NaN or infinite values; run alexnet prepare again")
    if (stats.channel_std <= 0).any():
        raise AlexNetError(f"{path}: channel_std {stats.channel_std.tolist()} has a value ≤ 0; run alexnet prepare again")
    return stats


def _load_labels(path: Path, n: int, num_classes: int) -> np.ndarray:
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise AlexNetError(f"{path}: cannot read labels ({e})") from None
    if labels.shape != (n,) or labels.dtype != np.int64:
        raise AlexNetError(f"{path}: expected int64 [{n}], got {labels.dtype} {list(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise AlexNetError(f"{path}: labels outside 0…{num_classes - 1}")
    return labels
