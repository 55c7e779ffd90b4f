"""Every layer's output for one image, recorded with forward hooks, drawn as grids of maps.

:func:`layer_outputs` hooks every leaf module (conv, ReLU, LRN, pooling, FC; dropout is left out: at
test time it is the identity or §4.2's × (1 − p)) and records its output in the order the forward
pass calls them, so it works for any registered network and names layers as the state dict does
(``conv1``, ``relu1``, ``norm1``, ``pool1`` … ``fc7``, ``relu7``, ``fc8`` for the AlexNet family).

Shapes are written as the paper writes them, height×width×maps (conv1 of the paper's net:
55×55×96, pool5: 6×6×256). For a two-tower net (§3.2: "half of the kernels (or neurons) on each
GPU") every layer but the classifier is split into its first and second half of maps or units,
tower 1 and tower 2, which is how the two-tower placement divides them
(:mod:`alexnet.models.towers`); the page shows the halves side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.inference.evaluate import evaluating
from alexnet.tools.explore.pictures import Grid, data_uri, map_grid, vector_grid

MAX_SIDE = 64  # maps larger than this are shown average-pooled to it (VGG's 224×224 conv1); AlexNet's 55 are shown whole


@dataclass
class Layer:
    name: str  # the module's name in the model (state-dict prefix)
    kind: str  # its class: Conv2d, ReLU, LocalResponseNorm, MaxPool2d, Linear, ...
    output: torch.Tensor  # float on the CPU, without the batch dimension: [C, H, W] or [D]


def _shown(module: nn.Module) -> bool:
    return not list(module.children()) and not isinstance(module, (nn.Dropout, nn.Identity, nn.Flatten))


@torch.no_grad()
def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[Layer]:
    """The outputs of every shown leaf module for one preprocessed input ``x`` [1, C, h, w], in call order."""
    if x.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
    recorded: list[Layer] = []
    calls: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                calls[name] = calls.get(name, 0) + 1
                label = name if calls[name] == 1 else f"{name}#{calls[name]}"
                recorded.append(Layer(label, type(module).__name__, output[0].detach().float().cpu()))
        return record

    forward_with_hooks(model, x, [(n, m) for n, m in model.named_modules() if n and _shown(m)], hook)
    return recorded


def forward_with_hooks(model: nn.Module, x: torch.Tensor, modules: list[tuple[str, nn.Module]],
                       make_hook: Callable[[str], Callable[..., None]]) -> None:
    """One eval-mode forward pass of ``x`` with ``make_hook(name)`` on each of ``modules``, removed after."""
    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules]
    try:
        with evaluating(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()


def shape_text(output: torch.Tensor) -> str:
    """55×55×96 for maps [96, 55, 55], 4096 for a vector."""
    if output.ndim == 3:
        c, h, w = output.shape
        return f"{h}×{w}×{c}"
    return "×".join(str(d) for d in output.shape)


def tower_parts(output: torch.Tensor, towers: int, is_head: bool) -> list[torch.Tensor]:
    """The halves of a two-tower net's layer (first and second half of its maps or units), or the whole."""
    if towers == 2 and not is_head and output.shape[0] % 2 == 0:
        return list(output.chunk(2, dim=0))
    return [output]


def _grid(part: torch.Tensor, lo: float, hi: float) -> Grid:
    if part.ndim == 3:
        if max(part.shape[1:]) > MAX_SIDE:
            part = F.adaptive_avg_pool2d(part[None], MAX_SIDE)[0]
        return map_grid(part.numpy(), lo, hi)
    return vector_grid(part.flatten().numpy(), lo, hi)


def describe(layers: list[Layer], towers: int, head: str | None) -> list[dict[str, Any]]:
    """What the Layers view draws: per layer its name, kind, shape and one grid PNG per tower."""
    out = []
    for layer in layers:
        values = layer.output
        lo, hi = float(values.min()), float(values.max())
        parts = []
        for part in tower_parts(values, towers, layer.name == head):
            grid = _grid(part, lo, hi)
            maxima = part.flatten(1).max(1).values if part.ndim == 3 else part.flatten()
            parts.append({"png": data_uri(grid.image), "count": grid.count, "columns": grid.columns,
                          "height": grid.height, "width": grid.width,
                          "maxima": [round(float(v), 4) for v in maxima[:4096]]})
        out.append({"name": layer.name, "kind": layer.kind, "shape": shape_text(values),
                    "range": [round(lo, 4), round(hi, 4)], "towers": parts})
    return out
