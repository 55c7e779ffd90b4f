"""Figures: training curves, the paper's Fig. 3 and Fig. 4, the confusion matrix. Plotting only.

Each function takes arrays or results and draws (``*_figure``, a matplotlib figure) or draws and
saves (``plot_*``, ``save_*``); what they show is computed in :mod:`alexnet.inference.samples`
(sampled images, probabilities, fc7 neighbours) and wired by ``alexnet visualize`` and report.html.

* :func:`plot_curves`: loss and error per epoch from ``metrics.jsonl`` records.
* Fig. 3 (:func:`filters_figure`): "96 convolutional kernels of size 11×11×3 learned by the first
  convolutional layer … The top 48 kernels were learned on GPU 1 while the bottom 48 kernels were
  learned on GPU 2" (§6.1). Each kernel is min-max scaled on its own to 0–1 and shown as an RGB
  patch (grey for one-channel models); a two-tower model's conv1 kernels are drawn as two blocks,
  the first and the second half of the kernels (48 + 48 in the paper's net), 16 to a row as in the
  paper.
* Fig. 4 left (:func:`predictions_figure`): test images with the five most probable labels as
  bars; the true label is written under the image and its bar is red when it is among the five.
* Fig. 4 right (:func:`neighbours_figure`): query images from the test split and the training
  images whose fc7 codes (``model.forward_features``, the 4096-d last hidden layer of §6.1) are
  nearest in Euclidean distance (:func:`alexnet.inference.samples.sample_neighbours`).
* :func:`plot_confusion` / :func:`save_confusion_plot`: the row-normalised confusion matrix of
  :func:`alexnet.inference.evaluate.score`'s result (what ``alexnet eval --plots`` writes).

Every figure is written atomically (:func:`write_figure`); :func:`figure_png`
gives the PNG bytes that ``report.html`` embeds.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet.atomic import atomic_write
from alexnet.errors import counted
from alexnet.inference.evaluate import Scores, score

FILTER_COLUMNS = 16  # kernels per row in Fig. 3 (the paper: 3 rows of 16 per tower)


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only), imported when the first figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def write_figure(fig, path: Path, dpi: int = 110, *, overwrite: bool = True) -> None:
    """Write a PNG atomically and close the figure."""
    try:
        atomic_write(path, _png(fig, dpi), overwrite=overwrite)
    finally:
        pyplot().close(fig)


def _png(fig, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (for embedding), closed afterwards."""
    png = _png(fig)
    pyplot().close(fig)
    return png


# ---------------------------------------------------------------------------------------------
# Training curves


def curves_figure(history: list[dict[str, Any]]):
    """Loss and top-1 error per epoch, train, val and (``test_each_epoch``, d2l's plot) test (metrics.jsonl records)."""
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    colour = {"train": "C0", "val": "C1", "test": "C3"}  # a split keeps its colour in both panels
    for split in colour:
        if any(f"{split}_loss" in r for r in history):
            ax_loss.plot(epochs, [r.get(f"{split}_loss") for r in history], marker="o", ms=3, color=colour[split], label=split)
    for key, label, style in (("train_top1_error", "train top-1", "-"), ("val_top1_error", "val top-1", "-"),
                              ("val_top5_error", "val top-5", "--"), ("test_top1_error", "test top-1", "-")):
        if any(key in r for r in history):
            ax_err.plot(epochs, [100 * r[key] if key in r else None for r in history], style, marker="o", ms=3,
                        color=colour[key.split("_")[0]], label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and top-1 error per epoch, train and val (metrics.jsonl records), as a PNG."""
    write_figure(curves_figure(history), path)


# ---------------------------------------------------------------------------------------------
# Fig. 3: the conv1 kernels


def conv1_kernels(model: nn.Module) -> tuple[torch.Tensor, int]:
    """conv1's weight [K, C, kh, kw] and the number of towers it was learned in (§3.2).

    A model of the AlexNet family has two towers when its later conv layers are grouped in two
    (conv2's ``groups=2``); conv1 itself sees the whole image in both, so its first K/2 kernels are
    tower 1's and the rest tower 2's. Other models: their first Conv2d, one tower.
    """
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d):
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{model.name} has no convolutional layer to draw")
    convs = getattr(getattr(model, "config", None), "convs", ())
    towers = max((c.groups for c in convs), default=1)
    if towers < 1 or conv.out_channels % towers:
        towers = 1
    return conv.weight.detach().float().cpu(), towers


def filter_mosaics(weight: torch.Tensor, towers: int = 1, columns: int = FILTER_COLUMNS, gap: int = 1) -> list[np.ndarray]:
    """One float [H, W, 3] image per tower: its kernels as min-max scaled patches in rows of ``columns``.

    Kernel i of tower t is ``weight[t*K/towers + i]``; grey (1-channel) kernels are repeated to
    RGB, kernels of other channel counts show their channel mean. Gaps between patches are white.
    """
    k, c, kh, kw = weight.shape
    w = weight.float()
    if c == 3:
        patches = w
    else:
        patches = (w if c == 1 else w.mean(1, keepdim=True)).expand(k, 3, kh, kw)
    lo = patches.flatten(1).min(1).values.view(k, 1, 1, 1)
    hi = patches.flatten(1).max(1).values.view(k, 1, 1, 1)
    patches = ((patches - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # [K, kh, kw, 3]
    per_tower = k // towers
    cols = min(columns, per_tower)
    rows = math.ceil(per_tower / cols)
    mosaics = []
    for t in range(towers):
        mosaic = np.ones((rows * (kh + gap) - gap, cols * (kw + gap) - gap, 3), dtype=np.float32)
        for i in range(per_tower):
            r, col = divmod(i, cols)
            mosaic[r * (kh + gap): r * (kh + gap) + kh, col * (kw + gap): col * (kw + gap) + kw] = patches[t * per_tower + i]
        mosaics.append(mosaic)
    return mosaics


def filters_figure(model: nn.Module, title: str | None = None):
    """Fig. 3: conv1's kernels, one block per tower."""
    plt = pyplot()
    weight, towers = conv1_kernels(model)
    mosaics = filter_mosaics(weight, towers)
    height, width = mosaics[0].shape[:2]
    scale = 9.0 / width
    fig, axes = plt.subplots(towers, 1, figsize=(9.5, towers * (height * scale + 0.5) + 0.4), squeeze=False)
    for t, (ax, mosaic) in enumerate(zip(axes[:, 0], mosaics)):
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_axis_off()
        k, c, kh, kw = weight.shape
        label = f"tower {t + 1}: " if towers > 1 else ""
        ax.set_title(f"{label}{k // towers} kernels {kh}×{kw}×{c}", fontsize=9)
    fig.suptitle(title or f"conv1 of {model.name} (Fig. 3)", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 4


def _show(ax, image: np.ndarray) -> None:
    if image.shape[2] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def predictions_figure(images: np.ndarray, probs: torch.Tensor, labels: np.ndarray, classes: list[str],
                       columns: int = 4, title: str | None = None):
    """Fig. 4 left: each image over its top-5 labels as bars; the true label's bar red, the others blue.

    ``images`` uint8 [B, S, S, C]; ``probs`` [B, K]; two axes per image (picture, bars).
    """
    plt = pyplot()
    b = len(images)
    cols = max(1, min(columns, b))
    rows = math.ceil(b / cols)
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    fig = plt.figure(figsize=(2.9 * cols, 4.3 * rows))
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[2.0, 1.3] * rows, hspace=0.35, wspace=0.7)
    for n in range(b):
        r, c = divmod(n, cols)
        ax_img = fig.add_subplot(grid[2 * r, c])
        _show(ax_img, images[n])
        truth = int(labels[n])
        ax_img.set_title(classes[truth], fontsize=9)
        ax_bar = fig.add_subplot(grid[2 * r + 1, c])
        values, indices = top.values[n].tolist(), top.indices[n].tolist()
        colours = ["#d62728" if i == truth else "#1f77b4" for i in indices]
        ax_bar.barh(range(len(values)), values, color=colours)
        ax_bar.set_yticks(range(len(values)), [classes[i] for i in indices], fontsize=7)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=7)
    fig.suptitle(title or "top-5 predictions on test images; the true label's bar in red (Fig. 4, left)", fontsize=11)
    return fig


def neighbours_figure(queries: Sequence[np.ndarray], neighbours: Sequence[Sequence[np.ndarray]], distances: np.ndarray,
                      query_labels: list[str], neighbour_labels: list[list[str]], title: str | None = None):
    """Fig. 4 right: one row per query: the query, then its nearest images by fc7 distance.

    ``queries`` Q uint8 images [H, W, C]; ``neighbours`` Q rows of k images (an array [Q, k, S, S, C]
    or lists of images of any size, as ``alexnet search`` finds them); ``distances`` [Q, k].
    """
    plt = pyplot()
    q, k = len(neighbours), len(neighbours[0])
    fig, axes = plt.subplots(q, k + 1, figsize=(1.45 * (k + 1) + 0.4, 1.6 * q + 0.6), squeeze=False)
    for r in range(q):
        _show(axes[r, 0], queries[r])
        axes[r, 0].set_title(f"query: {query_labels[r]}", fontsize=8, color="#d62728")
        for j in range(k):
            _show(axes[r, j + 1], neighbours[r][j])
            axes[r, j + 1].set_title(f"{neighbour_labels[r][j]}  d={distances[r, j]:.3g}", fontsize=7)
    fig.suptitle(title or "test images (left) and the training images nearest in fc7 (Fig. 4, right)", fontsize=11)
    fig.tight_layout()
    return fig


def save_confusion_plot(scores: Scores, path: str | os.PathLike) -> None:
    """A PNG of the row-normalised confusion matrix (true class down, predicted across), written atomically."""
    plt = pyplot()
    cm = scores.confusion.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(scores.classes)
    side = min(12.0, 3.0 + 0.35 * k)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 30:
        ax.set_xticks(range(k), scores.classes, rotation=90, fontsize=8)
        ax.set_yticks(range(k), scores.classes, fontsize=8)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"top-1 error {100 * scores.top1_error:.2f} %, {scores.images} images, {counted(scores.views, 'view')}")
    fig.tight_layout()
    write_figure(fig, Path(path), dpi=120)


def plot_confusion(probs: torch.Tensor, labels: np.ndarray, classes: list[str], path: Path, *, views: int = 1) -> None:
    """The row-normalised confusion matrix (row = true class, column = predicted) of probabilities, as a PNG."""
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    save_confusion_plot(score(probs, labels_t, classes, views=views), path)
