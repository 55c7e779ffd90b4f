"""The one shape every data source takes: an :class:`ImageSet` per split.

A source (image folder, CIFAR-10, IDX, digits, packed store) turns its files into ImageSets; the
transforms and the loader take ImageSets and never look at files. Images are uint8, channels last
(H, W, C), RGB or grey (C = 3 or 1), as they are stored; float, normalisation and augmentation
are made later, on the training device.

Two forms:

* in memory or memory-mapped: ``images`` is an array [N, H, W, C] uint8 (CIFAR-10, IDX, digits,
  the packed store). The loader indexes whole batches at once.
* lazy: ``images`` is None and ``load(i)`` decodes image i (an unpacked image folder, whose images
  differ in size). The loader decodes in worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageSet:
    """One split: images, integer labels 0..len(classes)-1, and the class names."""

    labels: np.ndarray  # int64 [N]
    classes: list[str]
    images: np.ndarray | None = None  # uint8 [N, H, W, C], possibly a np.memmap
    loader: Callable[[int], np.ndarray] | None = None  # lazy form: i -> uint8 [H, W, C]
    paths: list[str] | None = None  # where the images came from, when they are files
    info: dict[str, Any] = field(default_factory=dict)  # source-specific notes (e.g. skipped files)

    def __post_init__(self) -> None:
        if (self.images is None) == (self.loader is None):
            raise ValueError("an ImageSet has either an images array or a loader, not both or neither")
        if self.images is not None:
            if self.images.dtype != np.uint8 or self.images.ndim != 4:
                raise ValueError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}")
            if len(self.images) != len(self.labels):
                raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def channels(self) -> int:
        return int(self.images.shape[3]) if self.images is not None else int(self.load(0).shape[2])

    def load(self, i: int) -> np.ndarray:
        """Image i as uint8 [H, W, C]."""
        return self.images[i] if self.images is not None else self.loader(i)


class _IndexedLoader:
    """``loader`` of a lazy subset: image i of the subset is image index[i] of the parent (picklable)."""

    def __init__(self, parent: ImageSet, index: np.ndarray) -> None:
        self.parent, self.index = parent, index

    def __call__(self, i: int) -> np.ndarray:
        return self.parent.load(int(self.index[i]))


def subset(images: ImageSet, index: np.ndarray) -> ImageSet:
    """The images at ``index`` (in that order), in the same form as ``images``."""
    index = np.asarray(index, dtype=np.int64)
    paths = [images.paths[i] for i in index] if images.paths is not None else None
    if images.in_memory:
        return ImageSet(images.labels[index], images.classes, images=np.take(images.images, index, axis=0), paths=paths)
    take = getattr(images.loader, "take", None)  # a loader that subsets itself (a JPEG store's records) stays batched
    loader = take(index) if take is not None else _IndexedLoader(images, index)
    return ImageSet(images.labels[index], images.classes, loader=loader, paths=paths)


def split_off(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Hold out ``fraction`` of every class (at least one image each), drawn with ``seed``: (rest, held out)."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(images.labels):
        members = np.flatnonzero(images.labels == c)
        k = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
        held.append(rng.permutation(members)[:k])
    out = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(images)), out)
    return subset(images, keep), subset(images, out)
