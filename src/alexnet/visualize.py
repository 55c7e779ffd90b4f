"""Figures: training curves (and, with the visualisation issue, the paper's Fig. 3 and Fig. 4)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write a PNG atomically (a temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and top-1 error per epoch, train and val (metrics.jsonl records)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        if any(key in r for r in history):
            ax_loss.plot(epochs, [r.get(key) for r in history], marker="o", ms=3, label=label)
    for key, label in (("train_top1_error", "train top-1"), ("val_top1_error", "val top-1"), ("val_top5_error", "val top-5")):
        if any(key in r for r in history):
            ax_err.plot(epochs, [100 * r[key] if key in r else None for r in history], marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)
    plt.close(fig)
