"""Per-layer output shapes, parameters and multiply-accumulates: the paper's walk-through (§3.5).

Counts come from forward hooks on the leaf modules during one forward pass of a zero image, so they
hold for any registered model. MACs count the multiply-accumulates of convolutions and
fully-connected layers and locally connected layers (weights × inputs, no biases), the convention behind "0.724 G MACs" for the
paper's net at 227; normalisation, pooling and activations are counted as 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from alexnet.models.cudaconvnet_layers import LocallyConnected2d


@dataclass(frozen=True)
class LayerRow:
    name: str
    output_shape: tuple[int, ...]  # without the batch axis, (C, H, W) or (features,)
    params: int
    macs: int
    groups: int = 1  # a grouped convolution's or LRN's groups: 2 where each tower sees only its own maps (§3.2)


@dataclass(frozen=True)
class Summary:
    model: str
    input_size: int
    in_channels: int
    layers: list[LayerRow]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def training_macs(self) -> int:
        """Multiply-accumulates of one training image: the forward pass, the gradient of every layer's
        input but the first's (nothing needs the image's), and of every weight — 3× the forward less
        the first layer's. 2 × this ≈ 4.1 GFLOP for the paper's net at 227 (the "≈ 4.2 GFLOP" of issue 7)."""
        first = next((r.macs for r in self.layers if r.macs), 0)
        return 3 * self.total_macs - first

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_size": self.input_size,
            "layers": [dict(asdict(r), output_shape=list(r.output_shape)) for r in self.layers],
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "training_macs": self.training_macs,
        }


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    if isinstance(module, LocallyConnected2d):  # as a convolution: one filter per output, just unshared
        return per_image * module.in_channels * module.kernel_size**2
    return 0


def summarize(model: nn.Module, input_size: int | None = None, *, name: str | None = None) -> Summary:
    """Run one zero image through ``model`` (on its device, in eval mode) and tabulate its leaf layers."""
    size = input_size or model.input_size
    in_channels = model.in_channels
    rows: list[LayerRow] = []
    hooks = []

    def hook(module_name: str):
        def record(module: nn.Module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                params = sum(p.numel() for p in module.parameters(recurse=False))
                groups = getattr(module, "groups", 1)
                rows.append(LayerRow(module_name, tuple(output.shape[1:]), params, _macs(module, output),
                                     groups if isinstance(groups, int) else 1))
        return record

    for module_name, module in model.named_modules():
        if module_name and not list(module.children()):
            hooks.append(module.register_forward_hook(hook(module_name)))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    counted = sum(r.params for r in rows)
    total = sum(p.numel() for p in model.parameters())
    if counted != total:  # a parameter outside the leaf modules that ran (an unused branch)
        rows.append(LayerRow("(not run)", (), total - counted, 0))
    return Summary(name or getattr(model, "name", type(model).__name__), size, in_channels, rows)


def format_shape(shape: tuple[int, ...]) -> str:
    """(96, 55, 55) → "55×55×96" as the paper writes it; (4096,) → "4096"."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(str(s) for s in shape)


def format_macs(macs: int) -> str:
    """Multiply-accumulates in G, or in M below 10 M (LeNet's 0.417 M would read 0.000 G)."""
    return f"{macs / 1e9:.3f} G" if macs >= 1e7 else f"{macs / 1e6:.3f} M"
