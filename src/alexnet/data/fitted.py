"""The training images as the model sees them: fitted once to its input, and their statistics.

Data sets stored at another size (digits 8×8 grey, CIFAR-10 32×32) are brought to the pipeline's
side S and channel count once, in memory (:func:`prefit`), instead of on every batch; the
statistics the paper's pipeline needs (§2's mean image, §4.1's PCA of the RGB values) are computed
over the images at that size (:func:`statistics`), where a packed store does not carry them.
"""

from __future__ import annotations

import numpy as np
import torch

from alexnet.data.imageset import ImageSet
from alexnet.data.loader import iter_batches
from alexnet.data.stats import Stats, StatsAccumulator
from alexnet.data.transforms import fit_images


def prefit(images: ImageSet | None, size: int, channels: int) -> ImageSet | None:
    """An in-memory set stored at another size fitted once to size × size × channels; lazy and
    already-fitting sets are returned as they are."""
    if images is None or not images.in_memory or images.images.shape[1:] == (size, size, channels):
        return images
    # One C-ordered [N, H, W, C] array, as a store's memmap is, written chunk by chunk: np.take of a
    # batch from the NCHW-strided views of the permuted chunks gathers byte by byte (≈200 ms for 128
    # images at 256×256, against ≈2 ms)
    fitted_images = np.empty((len(images), size, size, channels), dtype=np.uint8)
    for i in range(0, len(images), 1024):
        chunk = fit_images(torch.from_numpy(np.array(images.images[i : i + 1024])), size, channels)  # a copy: a store is read-only
        fitted_images[i : i + len(chunk)] = chunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return ImageSet(images.labels, images.classes, images=fitted_images, paths=images.paths, info=images.info)


def statistics(images: ImageSet, size: int, channels: int, workers: int = 0) -> Stats:
    """Training-set statistics of the images as the model sees them (fitted to size × size × channels)."""
    acc = StatsAccumulator()
    for x, _ in iter_batches(images, 256, size=size, workers=workers):
        acc.update(fit_images(x, size, channels).permute(0, 2, 3, 1).numpy())
    return acc.finish()
