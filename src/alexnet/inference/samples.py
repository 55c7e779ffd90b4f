"""What the figures show, computed: a checkpoint with its data, sampled images and the model's answers on them.

``alexnet visualize``, ``report.html`` and explore draw from these; :mod:`alexnet.reporting.figures`
only draws. Images are returned as the model sees them before cropping (:func:`display_images`: the
stored image brought to the pipeline's side S, §2, grey or RGB). Which images: ``count`` drawn with
``seed`` from the split asked for, else the test split, else val (:func:`alexnet.inference.evaluate.shown_split`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from alexnet import checkpoint
from alexnet.data import ImageSet, Preprocess, downsample, open_dataset
from alexnet.data.sources import NAMED
from alexnet.errors import AlexNetError
from alexnet.inference.evaluate import batch_probabilities, check_classes, iter_probabilities, load_for_inference, shown_split
from alexnet.inference.features import Extractor, FeatureConfig
from alexnet.inference.neighbours import nearest_images


@dataclass
class Loaded:
    """A checkpoint's model (on ``device``) with its preprocessing and class names."""

    model: nn.Module
    preprocess: Preprocess
    classes: list[str]
    data_spec: str | None  # the data it was trained on, from its provenance (None if unrecorded)
    device: torch.device


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> Loaded:
    ckpt, model, preprocess = load_for_inference(path, device)
    return Loaded(model, preprocess, list(ckpt.classes), recorded_data(ckpt), torch.device(device))


def recorded_data(ckpt: checkpoint.Checkpoint) -> str | None:
    """The ``--data`` a checkpoint was trained on, from its provenance (None if unrecorded)."""
    return ((ckpt.provenance or {}).get("config") or {}).get("data", {}).get("spec") or None


def trained_on(path: str | os.PathLike) -> str:
    """The data set for a command given a checkpoint and no ``--data``: the one it records, checked to be
    there (a folder named relative to where it was trained may not be, from here)."""
    if checkpoint.is_onnx(path):
        checkpoint.read_onnx_metadata(path)  # a file that is no exported model says what it is first
        raise AlexNetError(f"{path}: an ONNX model records no data set; pass --data")
    return checked_spec(recorded_data(checkpoint.load(path)), path)


def checked_spec(spec: str | None, source: object) -> str:
    if not spec:
        raise AlexNetError(f"{source}: the checkpoint does not record its data; pass --data PATH")
    if spec not in NAMED and not os.path.exists(os.path.expanduser(spec)):
        raise AlexNetError(f"{source} was trained on {spec!r}, which is not there from {os.getcwd()}; pass --data")
    return spec


def open_splits(loaded: Loaded, spec: str | None, source: str) -> dict[str, ImageSet]:
    """The splits of ``spec`` (default: the checkpoint's training data), checked against its classes."""
    spec = spec or checked_spec(loaded.data_spec, source)
    dataset = open_dataset(spec)
    check_classes(loaded.classes, dataset.classes, f"{source} on {spec}")
    return dataset.splits


def pick_split(splits: dict[str, ImageSet], name: str | None, source: str) -> tuple[str, ImageSet]:
    """``name``, or the split figures show (test, else val)."""
    chosen = name if name else shown_split(splits.get("test"), splits.get("val"))
    if chosen in splits and len(splits[chosen]):
        return chosen, splits[chosen]
    raise AlexNetError(f"{source}: no {name or 'test or val'} split (has {', '.join(splits) or 'none'})")


def sample_indices(n: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct indices of ``range(n)`` drawn with ``seed``, sorted (all of them if n ≤ count)."""
    count = min(count, n)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


def image_batch(images: ImageSet, index: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [B, H, W, C] of the images at ``index``, in the form the loader yields them
    (stored size for in-memory sets, down-sampled to ``size`` for lazy ones)."""
    if images.in_memory:
        return torch.from_numpy(np.stack([np.asarray(images.load(int(i))) for i in index]))
    return torch.from_numpy(np.stack([downsample(images.load(int(i)), size) for i in index]))


def display_images(preprocess: Preprocess, x: torch.Tensor) -> np.ndarray:
    """uint8 [B, S, S, C] (C = 1 or 3): images as the model sees them before cropping."""
    return preprocess.fit(x.cpu()).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def split_probabilities(loaded: Loaded, images: ImageSet, *, batch_size: int = 256, limit: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Centre-crop probabilities [N, K] over the first ``limit`` images (all when 0), with their labels."""
    out = [p.cpu() for p, _ in iter_probabilities(loaded.model, loaded.preprocess, images, batch_size=batch_size,
                                                  device=loaded.device, limit=limit)]
    probs = torch.cat(out) if out else torch.zeros(0, len(loaded.classes))
    return probs, np.asarray(images.labels[: len(probs)])


@dataclass
class PredictionSample:
    """Fig. 4 left's inputs: sampled images, the model's centre-crop probabilities and the true labels."""

    images: np.ndarray  # uint8 [B, S, S, C], as shown
    probabilities: torch.Tensor  # [B, K] on the CPU
    labels: np.ndarray  # int [B]


def sample_predictions(loaded: Loaded, images: ImageSet, *, count: int = 8, seed: int = 0) -> PredictionSample:
    """``count`` images of ``images`` drawn with ``seed`` and what the model says of them."""
    index = sample_indices(len(images), count, seed)
    x = image_batch(images, index, loaded.preprocess.pipeline.resize)
    probs = batch_probabilities(loaded.model, loaded.preprocess, x.to(loaded.device), views=1).cpu()
    return PredictionSample(display_images(loaded.preprocess, x), probs, np.asarray(images.labels[index]))


@dataclass
class NeighbourSample:
    """Fig. 4 right's inputs: query images and the training images nearest to each in fc7."""

    queries: np.ndarray  # uint8 [Q, S, S, C], as shown
    neighbours: np.ndarray  # uint8 [Q, k, S, S, C]
    distances: np.ndarray  # [Q, k]: Euclidean distance between fc7 codes
    query_labels: list[str]
    neighbour_labels: list[list[str]]
    rows: np.ndarray  # int64 [Q, k]: the neighbours' positions in the training split


def sample_neighbours(loaded: Loaded, queries: ImageSet, train: ImageSet, *, count: int = 5, k: int = 6, seed: int = 0,
                      limit: int = 0, batch_size: int = 256) -> NeighbourSample:
    """``count`` query images drawn with ``seed`` and their ``k`` nearest training images (the first
    ``limit`` searched when > 0), by the fc7 codes ``alexnet features`` computes (its Extractor, fp32)."""
    size = loaded.preprocess.pipeline.resize
    index = sample_indices(len(queries), count, seed)
    x = image_batch(queries, index, size)
    extractor = Extractor.of_model(loaded.model, loaded.preprocess, FeatureConfig(device=str(loaded.device)))
    found = nearest_images(extractor, x, train, k, batch_size=batch_size, limit=limit)
    shown = display_images(loaded.preprocess, image_batch(train, found.rows.reshape(-1), size))
    return NeighbourSample(display_images(loaded.preprocess, x), shown.reshape(*found.rows.shape, *shown.shape[1:]),
                           found.distances, [loaded.classes[int(queries.labels[i])] for i in index],
                           [[loaded.classes[int(train.labels[j])] for j in row] for row in found.rows], found.rows)
