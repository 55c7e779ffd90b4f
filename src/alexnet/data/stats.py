"""Training-set statistics the paper's pipeline needs (§2, §4.1), computed once and stored.

* ``mean_image``: the per-pixel mean over the training images (§2: "subtracting the mean
  activity over the training set from each pixel"), [H, W, C] float32.
* ``channel_mean`` / ``channel_std``: per-channel mean and standard deviation (torchvision's style
  of normalisation), [C].
* ``eigval`` / ``eigvec``: eigenvalues (descending) and eigenvectors (columns) of the C×C covariance
  of RGB pixel values over the training set, for PCA lighting (§4.1).

Everything is on the 0–255 scale of the stored uint8 pixels (eigenvalues, being variances, on the
0–255² scale). Statistics are accumulated in float64
over batches (:class:`StatsAccumulator`), so a memory-mapped store of any size streams through.
The only constants are the documented ImageNet values for imported weights
(:func:`imagenet_stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# torchvision's ImageNet normalisation (references/classification) on the 0–255 scale.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255
# The RGB eigen-decomposition over ImageNet used by fb.resnet.torch and timm, whose eigenvalues
# are for pixel values on the 0–1 scale; ×255² puts them on this module's 0–255 scale.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045]) * 255**2
IMAGENET_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


@dataclass
class Stats:
    mean_image: np.ndarray  # float32 [H, W, C]
    channel_mean: np.ndarray  # float64 [C]
    channel_std: np.ndarray  # float64 [C]
    eigval: np.ndarray  # float64 [C], descending
    eigvec: np.ndarray  # float64 [C, C], column i belongs to eigval[i]
    count: int  # images it was computed from

    def to_state(self) -> dict[str, Any]:
        """Tensors and an int: what a ``weights_only`` checkpoint can hold."""
        import torch

        return {
            "mean_image": torch.from_numpy(np.ascontiguousarray(self.mean_image, dtype=np.float32)),
            "channel_mean": torch.from_numpy(self.channel_mean.astype(np.float64)),
            "channel_std": torch.from_numpy(self.channel_std.astype(np.float64)),
            "eigval": torch.from_numpy(self.eigval.astype(np.float64)),
            "eigvec": torch.from_numpy(self.eigvec.astype(np.float64)),
            "count": int(self.count),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Stats:
        """From :meth:`to_state`'s tensors, or from arrays/lists with the same keys."""
        arr = lambda v, t: np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=t)
        return cls(
            mean_image=arr(d["mean_image"], np.float32),
            channel_mean=arr(d["channel_mean"], np.float64),
            channel_std=arr(d["channel_std"], np.float64),
            eigval=arr(d["eigval"], np.float64),
            eigvec=arr(d["eigvec"], np.float64),
            count=int(d["count"]),
        )

    def save(self, path) -> None:
        """Write as .npz (no pickle); the caller writes atomically into its own folder."""
        np.savez(path, mean_image=self.mean_image, channel_mean=self.channel_mean, channel_std=self.channel_std,
                 eigval=self.eigval, eigvec=self.eigvec, count=np.asarray(self.count))

    @classmethod
    def load(cls, path) -> Stats:
        with np.load(path, allow_pickle=False) as z:
            return cls.from_state({k: z[k] for k in z.files})


class StatsAccumulator:
    """Sums over uint8 batches [B, H, W, C] of one size; :meth:`finish` gives the :class:`Stats`."""

    def __init__(self) -> None:
        self.n_images = 0
        self.pixel_sum: np.ndarray | None = None  # [H, W, C]
        self.moment1: np.ndarray | None = None  # [C]
        self.moment2: np.ndarray | None = None  # [C, C]
        self.n_pixels = 0

    def update(self, batch: np.ndarray) -> None:
        if batch.ndim != 4:
            raise ValueError(f"expected a batch [B, H, W, C], got shape {batch.shape}")
        b = batch.astype(np.float64)
        if self.pixel_sum is None:
            self.pixel_sum = np.zeros(b.shape[1:])
            self.moment1 = np.zeros(b.shape[3])
            self.moment2 = np.zeros((b.shape[3], b.shape[3]))
        elif self.pixel_sum.shape != b.shape[1:]:
            raise ValueError(f"images of size {b.shape[1:]} after {self.pixel_sum.shape}: statistics need one size")
        self.n_images += len(b)
        self.pixel_sum += b.sum(axis=0)
        flat = b.reshape(-1, b.shape[3])
        self.n_pixels += len(flat)
        self.moment1 += flat.sum(axis=0)
        self.moment2 += flat.T @ flat

    def finish(self) -> Stats:
        if not self.n_images:
            raise ValueError("no images to compute statistics from")
        mean = self.moment1 / self.n_pixels
        cov = self.moment2 / self.n_pixels - np.outer(mean, mean)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        return Stats(
            mean_image=(self.pixel_sum / self.n_images).astype(np.float32),
            channel_mean=mean,
            channel_std=np.sqrt(np.clip(np.diag(cov), 1e-12, None)),
            eigval=np.clip(eigval[order], 0.0, None),
            eigvec=eigvec[:, order],
            count=self.n_images,
        )


def compute_stats(images: np.ndarray, chunk: int = 1024) -> Stats:
    """Statistics of a uint8 array [N, H, W, C] (memory-mapped arrays stream in chunks)."""
    acc = StatsAccumulator()
    for start in range(0, len(images), chunk):
        acc.update(np.asarray(images[start : start + chunk]))
    return acc.finish()


def imagenet_stats(size: int = 256) -> Stats:
    """The documented ImageNet constants, for imported weights that were trained with them.

    The mean image is the channel mean broadcast to ``size``×``size`` (the per-pixel ImageNet mean
    is not available without the data; Caffe's mean.binaryproto is imported when given instead).
    """
    mean_image = np.broadcast_to(IMAGENET_MEAN, (size, size, 3)).astype(np.float32)
    return Stats(mean_image, IMAGENET_MEAN.copy(), IMAGENET_STD.copy(), IMAGENET_EIGVAL.copy(), IMAGENET_EIGVEC.copy(), 0)
