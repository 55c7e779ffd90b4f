"""Nearest neighbours by a layer's code (§6.1, Fig. 4 right): the one exact search of the package.

§6.1: "If two images produce feature activation vectors with a small Euclidean separation, we can
say that the higher levels of the neural network consider them to be similar"; Fig. 4 (right)
shows the training images nearest to test images by the Euclidean distance of their 4096-d fc7
codes. Three callers search with :func:`nearest_in_chunks`: ``alexnet search`` (a feature bank on
disk, :func:`nearest`; :mod:`alexnet.inference.search` adds FAISS), ``alexnet visualize neighbors``
(the training split's codes computed as they stream, :func:`nearest_images`) and explore's
Neighbours view (a bank in memory or on disk).

Metrics: ``euclidean`` (§6.1; the distance reported is ‖q − b‖) or ``cosine`` (rows L2-normalised,
the distance reported is 1 − cos). Distances are computed in float64 (``torch.cdist``), so an image
is at distance 0 from its own code to ~1e-7 and the order does not depend on how rows are chunked;
rows are read ``CHUNK`` at a time keeping a running top-k, so memory is O(queries × (k + CHUNK)),
never O(rows). Ties go to the lower row (a stable sort).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from alexnet.data.imageset import ImageSet
from alexnet.data.loader import iter_batches
from alexnet.errors import AlexNetError, at_least, not_one_of

METRICS = ("euclidean", "cosine")
CHUNK = 8192  # rows per step (8192 × 4096 fc7 codes in float64 = 256 MiB)


@dataclass
class Neighbours:
    """The k nearest rows of each query, nearest first."""

    rows: np.ndarray  # int64 [Q, k]: positions among the rows searched, in the order they were given
    distances: np.ndarray  # float64 [Q, k]: ‖q − b‖, or 1 − cos for the cosine metric


def check_k(k: int, rows: int, what: str) -> None:
    """Refuse a ``k`` below 1 or above the ``rows`` of ``what`` (a bank of 1,259 rows has no 5,000 nearest)."""
    at_least("--k", k)
    if k > rows:
        raise AlexNetError(f"--k {k} is more than the {rows:,} rows of {what}; give --k {rows} or less")


def check_query(dim: int, queries: np.ndarray | torch.Tensor, k: int, metric: str, rows: int, what: str = "the bank") -> None:
    """One-line errors for a metric, k or query shape that cannot be searched among ``rows`` rows of ``dim`` columns."""
    if metric not in METRICS:
        raise AlexNetError(not_one_of("--metric ", metric, METRICS))
    check_k(k, rows, what)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise AlexNetError(f"queries have shape {tuple(queries.shape)} but the bank's rows have {dim} columns")


def _float64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float64 CPU copy (a memory-mapped bank is read-only, so it is never used in place)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.from_numpy(np.array(x, dtype=np.float64))


def nearest_in_chunks(chunks: Iterable[np.ndarray | torch.Tensor], queries: np.ndarray | torch.Tensor, k: int,
                      metric: str = "euclidean") -> Neighbours:
    """The ``k`` rows nearest each of ``queries`` [Q, D] among rows that arrive in chunks [n, D]
    (row numbers count across the chunks); fewer than k when fewer rows came."""
    q = _float64(queries)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
    best_d = torch.empty((len(q), 0), dtype=torch.float64)
    best_i = torch.empty((len(q), 0), dtype=torch.long)
    seen = 0
    for chunk in chunks:
        b = _float64(chunk)
        if metric == "cosine":
            d = 1.0 - q @ torch.nn.functional.normalize(b, dim=1).T
        else:
            d = torch.cdist(q, b)
        best_d, order = torch.cat([best_d, d], 1).sort(dim=1, stable=True)
        best_i = torch.cat([best_i, torch.arange(seen, seen + len(b)).expand(len(q), -1)], 1).gather(1, order)
        best_d, best_i = best_d[:, :k], best_i[:, :k]
        seen += len(b)
    return Neighbours(best_i.numpy(), best_d.numpy())


def nearest(rows: np.ndarray, queries: np.ndarray, k: int, metric: str = "euclidean", chunk: int = CHUNK) -> Neighbours:
    """Exact search of ``rows`` [N, D] (a memmap is read ``chunk`` rows at a time) for ``queries`` [Q, D]."""
    check_query(rows.shape[1], queries, k, metric, len(rows))
    return nearest_in_chunks((rows[s:s + chunk] for s in range(0, len(rows), chunk)), queries, k, metric)


def nearest_images(extractor, queries: torch.Tensor, images: ImageSet, k: int, *, batch_size: int = 256,
                   limit: int = 0, workers: int = 0) -> Neighbours:
    """The ``k`` images of ``images`` (its first ``limit`` when > 0) whose codes are nearest those of the
    uint8 ``queries`` [Q, H, W, C] (Fig. 4 right), the codes being ``extractor``'s
    (:class:`alexnet.inference.features.Extractor`: fc7 by default), computed batch by batch as the set streams."""
    device = extractor.config.device

    def codes() -> Iterator[torch.Tensor]:
        seen = 0
        for x, _ in iter_batches(images, batch_size, size=extractor.size, device=device, workers=workers):
            if limit and seen >= limit:
                return
            x = x[: limit - seen] if limit else x
            seen += len(x)
            yield extractor(x)

    return nearest_in_chunks(codes(), extractor(queries), k)
