"""Top-1 / top-5 error over views and ensembles (§4.1, §6, Table 2), per-class accuracy, predictions.

The pure part works on probabilities and labels:

* :func:`view_probabilities`: softmax of each view's logits, averaged over the views. §4.1: the
  network "makes a prediction by extracting five 224×224 patches (the four corner patches and the
  center patch) as well as their horizontal reflections (hence ten patches in all), and averaging
  the predictions made by the network's softmax layer on the ten patches".
* :func:`ensemble_probabilities`: the mean of several models' probabilities, the paper's "5 CNNs"
  and "7 CNNs" rows (§6: "averaging the predictions of five similar CNNs").
* :func:`topk_correct`, :func:`confusion_matrix`, :func:`score` → :class:`Scores`.

Top-k with fewer than k classes counts every image correct at k (top-5 of a 2-class set is 0 %
error). Ties follow ``torch.topk``.

The one inference path is :func:`batch_probabilities` (uint8 images → probabilities over 1 or 10
views, at a precision; its second half, :func:`input_probabilities`, takes input already
preprocessed) and :func:`iter_probabilities` (an ImageSet batch by batch, a rank's shard under
torchrun); training's validation, ``eval``, ``predict``, ``visualize``, ``serve`` and the report
all go through them. On top: :func:`checkpoint_probabilities` (one model over an ImageSet, through the
checkpoint's own preprocessing), :func:`evaluate_checkpoints` (an ensemble, one model in memory at
a time: each adds its [N, K] probabilities to a running sum) and :func:`classify_images` (image
files → top-k labels, what ``alexnet predict`` prints). Those take a checkpoint or an exported
``.onnx`` alike (:func:`load_classifier`): an int8 model is measured by the same code as its fp32
one. Plots of the results live in :mod:`alexnet.reporting.figures`.

Two rules kept here, once: :func:`evaluating` (eval mode for a block, the mode found given back) and
:func:`shown_split` (the split figures and report.html show: test, else val).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from alexnet import checkpoint, runtime
from alexnet.data.images import decode_image
from alexnet.data.loader import iter_batches
from alexnet.data.transforms import Preprocess, downsample
from alexnet.errors import AlexNetError, at_least, one_line
from alexnet.runtime import autocast

log = logging.getLogger(__name__)

VIEWS = (1, 10)


# -- pure functions over probabilities -----------------------------------------------------------
def view_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Logits [B, V, K] of V views → class probabilities [B, K]: softmax per view, mean over views."""
    if logits.ndim != 3:
        raise ValueError(f"expected logits [B, views, classes], got shape {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=-1).mean(dim=1)


def ensemble_probabilities(probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of several models' probabilities [N, K] (§6's averaged CNNs)."""
    if not probabilities:
        raise ValueError("an ensemble needs at least one model's probabilities")
    shapes = {tuple(p.shape) for p in probabilities}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on shape: {sorted(shapes)}")
    return torch.stack([p.float() for p in probabilities]).mean(dim=0)


def topk_correct(probabilities: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """bool [N]: whether the label is among the k most probable classes (k capped at K)."""
    k = min(k, probabilities.shape[1])
    top = probabilities.topk(k, dim=1).indices
    return (top == labels[:, None]).any(dim=1)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [K, K]: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class Scores:
    """What ``alexnet eval`` prints; :meth:`to_dict` is its JSON."""

    top1_error: float
    top5_error: float
    images: int
    views: int
    checkpoints: list[str]
    classes: list[str]
    per_class_accuracy: list[float | None]  # top-1 accuracy per class, None for a class with no images
    per_class_images: list[int]
    confusion: np.ndarray  # int64 [K, K], row = true, column = predicted
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top1_accuracy(self) -> float:
        return 1.0 - self.top1_error

    @property
    def top5_accuracy(self) -> float:
        return 1.0 - self.top5_error

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1_error": self.top1_error,
            "top5_error": self.top5_error,
            "top1_accuracy": self.top1_accuracy,
            "top5_accuracy": self.top5_accuracy,
            "images": self.images,
            "views": self.views,
            "checkpoints": list(self.checkpoints),
            "per_class": [
                {"class": c, "images": n, "top1_accuracy": a}
                for c, n, a in zip(self.classes, self.per_class_images, self.per_class_accuracy)
            ],
            **self.extra,
        }


def score(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    *,
    views: int = 1,
    checkpoints: Sequence[str] = (),
) -> Scores:
    """Top-1/top-5 error, per-class top-1 accuracy and the confusion matrix of [N, K] probabilities."""
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} do not match {labels.shape[0]} labels")
    if probabilities.shape[1] != len(classes):
        raise ValueError(f"probabilities have {probabilities.shape[1]} classes, names {len(classes)}")
    n = int(labels.shape[0])
    if n == 0:
        raise AlexNetError("no images to evaluate")
    labels = labels.long().cpu()
    probabilities = probabilities.float().cpu()
    top1 = topk_correct(probabilities, labels, 1)
    top5 = topk_correct(probabilities, labels, 5)
    k = len(classes)
    counts = torch.bincount(labels, minlength=k)
    correct = torch.bincount(labels[top1], minlength=k)
    per_class = [float(c) / float(t) if t else None for c, t in zip(correct.tolist(), counts.tolist())]
    return Scores(
        top1_error=1.0 - top1.double().mean().item(),
        top5_error=1.0 - top5.double().mean().item(),
        images=n,
        views=views,
        checkpoints=list(checkpoints),
        classes=list(classes),
        per_class_accuracy=per_class,
        per_class_images=counts.tolist(),
        confusion=confusion_matrix(probabilities.argmax(1), labels, k).numpy(),
    )


# -- running models ------------------------------------------------------------------------------
@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (dropout off, §4.2's test-time scaling) for the block, then back in the
    mode it was found in: an evaluation inside a training epoch must not train the rest of the epoch
    without dropout. Each module gets its own mode back (a fine-tune that froze some layers in
    eval mode keeps them so). Every inference entry of this package runs its model under this."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def load_for_inference(path: str | os.PathLike, device: torch.device | str = "cpu", precision: str = "fp32"):
    """(checkpoint, model on ``device`` in eval mode, its Preprocess) for a checkpoint file; the model
    is made ready for inference at ``precision`` (:func:`alexnet.runtime.for_inference`: channels_last,
    its weights cast once where autocast would cast them at every call)."""
    ckpt = checkpoint.load(path)
    model = checkpoint.restore_model(ckpt, source=str(path))
    runtime.for_inference(model, runtime.RuntimeSettings(device=str(device), precision=precision))
    return ckpt, model, _preprocess(ckpt.preprocess, path)


def load_classifier(path: str | os.PathLike, device: torch.device | str = "cpu", precision: str = "fp32"):
    """(what the file says of itself, the model callable, its Preprocess) for what ``eval`` and
    ``predict`` take: a checkpoint (:func:`load_for_inference`), or an exported ``.onnx`` (fp32 or
    int8) run by ONNX Runtime's CPU provider behind :class:`alexnet.checkpoint.onnx_model.OnnxModel`,
    whose metadata gives the classes and the checkpoint's own preprocessing. Either way the first
    has ``.classes`` and the rest of the evaluation is the same code."""
    if not checkpoint.is_onnx(path):
        return load_for_inference(path, device, precision)
    meta, model = checkpoint.load_onnx(path)
    return meta, model, _preprocess(meta.preprocess, path)


def _preprocess(state: dict[str, Any], path: str | os.PathLike) -> Preprocess:
    return Preprocess.from_checkpoint(state, path, "it cannot be evaluated without it")


@torch.no_grad()
def batch_probabilities(model: torch.nn.Module, preprocess, images: torch.Tensor, views: int = 1,
                        precision: str = "fp32") -> torch.Tensor:
    """uint8 [B, H, W, C] (on the model's device) → fp32 probabilities [B, K], averaged over ``views``
    (1: the centre crop, 10: §4.1's ten), the model in eval mode for the call, autocast at ``precision``."""
    if views not in VIEWS:
        raise ValueError(f"views must be 1 or 10, got {views}")
    return input_probabilities(model, preprocess.views(images, views), precision)


@torch.no_grad()
def input_probabilities(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Model input already preprocessed, float [B, V, C, crop, crop] → fp32 probabilities [B, K]
    averaged over the V views: the half of :func:`batch_probabilities` after the preprocessing, which
    ``alexnet serve`` runs on a batch stacked from several requests."""
    b, v = x.shape[:2]
    with evaluating(model), autocast(x.device, precision):
        logits = model(x.flatten(0, 1)).reshape(b, v, -1)
    return view_probabilities(logits)


def iter_probabilities(model: torch.nn.Module, preprocess, images, *, views: int = 1, batch_size: int = 128,
                       device: torch.device | str = "cpu", precision: str = "fp32", workers: int = 0, rank: int = 0,
                       world_size: int = 1, limit: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(probabilities [B, K], labels [B]) on ``device`` for the batches of an ImageSet in its order
    (this rank's shard under torchrun, every image in exactly one shard; the first ``limit`` images when ``limit`` > 0)."""
    seen = 0
    for x, y in iter_batches(images, batch_size, size=preprocess.pipeline.resize, device=device, workers=workers,
                             rank=rank, world_size=world_size, pad=False):  # each image once over all ranks
        if limit:
            if seen >= limit:
                return
            x, y = x[: limit - seen], y[: limit - seen]
        seen += len(x)
        yield batch_probabilities(model, preprocess, x, views, precision), y


SHOWN_SPLITS = ("test", "val")  # the split figures and report.html show: test, else val


def shown_split(test, val) -> str | None:
    """The split a figure or report.html shows: test, else val (None when both are empty or absent).
    The one place this rule is written: training keeps that split's probabilities for its report."""
    for name, images in zip(SHOWN_SPLITS, (test, val)):
        if images is not None and len(images):
            return name
    return None


def check_classes(ckpt_classes: Sequence[str], data_classes: Sequence[str], source: str) -> None:
    """A checkpoint and the data must name the same classes in the same order."""
    if len(ckpt_classes) != len(data_classes):
        raise AlexNetError(f"{source}: checkpoint has {len(ckpt_classes)} classes but the data has {len(data_classes)}")
    for i, (a, b) in enumerate(zip(ckpt_classes, data_classes)):
        if a != b:
            raise AlexNetError(f"{source}: class {i} is {a!r} in the checkpoint but {b!r} in the data")


@dataclass(frozen=True)
class EvalConfig:
    views: int = 1  # 1: centre crop; 10: the paper's ten views (§4.1)
    batch_size: int = 128
    device: str = "cpu"
    workers: int = 0  # decoding processes for image folders


def warn_mirrored_views(preprocess, views: int, source: str) -> None:
    """Ten views include five mirrored crops: say so when the model was trained without reflections."""
    if views == 10 and not preprocess.pipeline.flip:
        log.warning("%s was trained without reflections (its pipeline has flip=false); five of the ten views are mirrored "
                    "images it has never seen (a mirrored digit is no digit): --views 1 is the fair measure", source)


def checkpoint_probabilities(path: str | os.PathLike, images, config: EvalConfig) -> torch.Tensor:
    """Probabilities [N, K] (on the CPU) of one checkpoint over an ImageSet, in the set's order."""
    ckpt, model, preprocess = load_classifier(path, config.device)
    warn_mirrored_views(preprocess, config.views, str(path))
    check_classes(ckpt.classes, images.classes, str(path))
    out = [p.cpu() for p, _ in iter_probabilities(model, preprocess, images, views=config.views, batch_size=config.batch_size,
                                                  device=config.device, workers=config.workers)]
    return torch.cat(out) if out else torch.zeros(0, len(ckpt.classes))


def evaluate_checkpoints(paths: Sequence[str | os.PathLike], images, config: EvalConfig) -> Scores:
    """One checkpoint, or an ensemble averaging its members' softmax outputs (§6).

    Members are loaded one after another; only the running sum of probabilities ([N, K] floats)
    stays in memory between them.
    """
    if not paths:
        raise ValueError("no checkpoints to evaluate")
    total: torch.Tensor | None = None
    for path in paths:
        log.info("evaluating %s on %d images (%d view(s))", path, len(images), config.views)
        p = checkpoint_probabilities(path, images, config)
        total = p if total is None else total + p
    labels = torch.as_tensor(np.asarray(images.labels), dtype=torch.long)
    return score(total / len(paths), labels, images.classes, views=config.views, checkpoints=[str(p) for p in paths])


# -- predicting image files ----------------------------------------------------------------------
@dataclass
class Prediction:
    image: str
    predictions: list[dict[str, Any]] | None = None  # [{"index", "label", "probability"}], most probable first
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "predictions": self.predictions}


def top_labels(probabilities: torch.Tensor, classes: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    """Per row of probabilities [N, K], its k (at most K) most probable classes, most probable first,
    as ``[{"index", "label", "probability"}]``: what ``alexnet predict`` prints and ``alexnet serve`` answers.
    Ties follow ``torch.topk``."""
    top = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [[{"index": int(i), "label": classes[int(i)], "probability": float(v)} for v, i in zip(values, indices)]
            for values, indices in zip(top.values.tolist(), top.indices.tolist())]


def classify_images(
    paths: Iterable[str],
    checkpoint_path: str | os.PathLike,
    *,
    topk: int = 5,
    views: int = 1,
    batch_size: int = 32,
    device: str = "cpu",
) -> list[Prediction]:
    """Top-k labels for each image file, in the given order. A file that cannot be decoded gets a
    :class:`Prediction` with ``error`` (its one-line reason) and the others are still classified."""
    at_least("--topk", topk)
    ckpt, model, preprocess = load_classifier(checkpoint_path, device)
    warn_mirrored_views(preprocess, views, str(checkpoint_path))
    size = preprocess.pipeline.resize
    results: list[Prediction] = []
    pending: list[tuple[Prediction, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.from_numpy(np.stack([a for _, a in pending])).to(device)
        probs = batch_probabilities(model, preprocess, batch, views).cpu()
        for (pred, _), top in zip(pending, top_labels(probs, ckpt.classes, topk)):
            pred.predictions = top
        pending.clear()

    for path in paths:
        pred = Prediction(image=str(path))
        results.append(pred)
        try:
            pending.append((pred, downsample(decode_image(path), size)))
        except AlexNetError as e:
            pred.error = one_line(e)
            continue
        if len(pending) == batch_size:
            flush()
    flush()
    return results

