"""``alexnet search``: the nearest images of a feature bank to image files (§6.1, Fig. 4 right).

§6.1: "Figure 4 (right) shows five images from the test set and the six images from the training
set that are most similar to each of them according to this measure" — the Euclidean distance
between the 4096-d fc7 activation vectors. The bank is a feature set written by
:func:`alexnet.inference.features.extract`; the queries are image files run through the same checkpoint,
preprocessing and layer (the bank's record says which).

Metrics: those of :mod:`alexnet.inference.neighbours`. Engines, both exact:

* ``exact``: :func:`alexnet.inference.neighbours.nearest`, the package's one search (float64, the
  bank read in chunks from its memory map, a running top-k);
* ``faiss``: ``faiss.IndexFlatL2`` / ``IndexFlatIP`` on normalised rows (faiss-cpu, the optional
  extra ``alexnet[faiss]``), filled chunk by chunk; an exhaustive index, so it returns the same
  neighbours as ``exact`` (tests/test_search.py), faster on large banks (BLAS and heaps in C++);
* ``auto``: FAISS when it is installed and the bank has at least ``FAISS_FROM_ROWS`` rows.

``--grid`` draws the result as :func:`alexnet.reporting.figures.neighbours_figure` (Fig. 4 right)
from :class:`SearchResult`; this module only searches.

Ties are broken by the engine (lower row first for ``exact``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.data import open_dataset
from alexnet.data.images import decode_image
from alexnet.data.transforms import downsample
from alexnet.errors import AlexNetError, not_one_of
from alexnet.inference.features import Extractor, FeatureConfig, FeatureSet, check_made_with, open_features
from alexnet.inference.neighbours import CHUNK, Neighbours, check_query, nearest

log = logging.getLogger(__name__)

ENGINES = ("auto", "exact", "faiss")
FAISS_FROM_ROWS = 100_000


def faiss_search(bank: np.ndarray, queries: np.ndarray, k: int, metric: str, chunk: int = CHUNK) -> Neighbours:
    """The same search with FAISS's exhaustive (flat) index."""
    check_query(bank.shape[1], queries, k, metric, len(bank))
    faiss = _import_faiss()
    dim = bank.shape[1]
    index = faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)
    for start in range(0, len(bank), chunk):
        rows = np.ascontiguousarray(bank[start:start + chunk], dtype=np.float32)
        index.add(_unit_rows(rows) if metric == "cosine" else rows)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "cosine":
        q = _unit_rows(q)
    scores, rows = index.search(q, k)
    distances = np.sqrt(np.maximum(scores, 0.0)) if metric == "euclidean" else 1.0 - scores
    return Neighbours(rows.astype(np.int64), distances.astype(np.float64))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as a new array (``faiss.normalize_L2`` works in place, and a chunk
    of the bank's read-only memory map is not ours to write: faiss segfaults on it)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise AlexNetError("--engine faiss needs faiss-cpu: pip install 'alexnet[faiss]' (or --engine exact)") from None
    return faiss


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def search(bank: np.ndarray, queries: np.ndarray, k: int, metric: str = "euclidean", engine: str = "auto") -> Neighbours:
    """The ``k`` nearest rows of ``bank`` to each query (a ``k`` over the bank's rows is refused)."""
    if engine not in ENGINES:
        raise AlexNetError(not_one_of("--engine ", engine, ENGINES))
    if engine == "auto":
        engine = "faiss" if len(bank) >= FAISS_FROM_ROWS and faiss_available() else "exact"
    log.info("search: %s engine, %d queries, %d bank rows, k=%d, %s", engine, len(queries), len(bank), k, metric)
    return (faiss_search if engine == "faiss" else nearest)(bank, queries, k, metric)


# -- image files as queries ---------------------------------------------------------------------
def query_features(bank: FeatureSet, images: Sequence[str], checkpoint_path: str | os.PathLike | None,
                   device: str = "cpu") -> tuple[np.ndarray, list[np.ndarray]]:
    """(features [Q, D], the decoded images) of image files, through the bank's checkpoint and layer."""
    checkpoint_path = checkpoint_path or bank.record.get("checkpoint")
    if not checkpoint_path or not Path(checkpoint_path).is_file():
        raise AlexNetError(f"{bank.path} was made with {bank.record.get('checkpoint')}, which is not there; pass --checkpoint")
    check_made_with(checkpoint_path, bank.record, bank.path)
    decoded = [decode_image(p) for p in images]  # a bad file is a one-line error before any work
    config = FeatureConfig(layer=bank.record["layer"], precision=bank.record.get("precision", "fp32"), device=device)
    extractor = Extractor(checkpoint_path, config)
    batch = torch.from_numpy(np.stack([downsample(img, extractor.size) for img in decoded]))
    return extractor(batch).numpy(), decoded


@dataclass
class SearchResult:
    """What ``alexnet search`` found: the bank, the query files (decoded) and their neighbours in it."""

    bank: FeatureSet
    images: list[str]  # the query files
    decoded: list[np.ndarray]  # uint8 [H, W, C] each
    found: Neighbours

    def to_dicts(self) -> list[dict[str, Any]]:
        """[{"image", "neighbours": [{"rank", "row", "distance", "label", "class", "path"}]}] (the ``--json`` output)."""
        bank = self.bank
        return [{"image": str(name), "neighbours": [
            {"rank": r, "row": int(row), "distance": float(d), "label": int(bank.labels[row]),
             "class": bank.classes[int(bank.labels[row])], "path": bank.paths[row]}
            for r, (row, d) in enumerate(zip(self.found.rows[qi], self.found.distances[qi]), start=1)]}
            for qi, name in enumerate(self.images)]

    def neighbour_labels(self) -> list[list[str]]:
        return [[self.bank.classes[int(self.bank.labels[row])] for row in rows] for rows in self.found.rows]

    def neighbour_images(self) -> list[list[np.ndarray]]:
        """The neighbours' images: their files, or the data set the bank was made from."""
        split = None
        if not all(self.bank.paths[row] for row in self.found.rows.reshape(-1)):
            split = open_dataset(self.bank.record["data"]).split(self.bank.record["split"])
        return [[decode_image(self.bank.paths[row]) if self.bank.paths[row] else np.asarray(split.load(int(row)))
                 for row in rows] for rows in self.found.rows]


def search_images(bank_path: str | os.PathLike, images: Sequence[str], *, checkpoint_path: str | None = None, k: int = 5,
                  metric: str = "euclidean", engine: str = "auto", device: str = "cpu") -> SearchResult:
    """For each image file, its ``k`` nearest bank images."""
    if engine == "faiss":
        _import_faiss()
    bank = open_features(bank_path)
    queries, decoded = query_features(bank, images, checkpoint_path, device)
    return SearchResult(bank, [str(p) for p in images], decoded, search(bank.rows, queries, k, metric, engine))
