"""The paper's two-GPU split (§3.2, Fig. 2) as a placement of a grouped AlexNet.

Each tower holds half of every layer's kernels and FC units on its own device. A layer with
``groups=2`` (conv2, conv4, conv5) reads only its own tower's maps; an ungrouped layer (conv3, fc6,
fc7) reads both towers' maps, which is where activations cross between devices. conv1 reads the
image on both towers. fc8 runs whole on the first device on the concatenated fc7 halves (its output
must be in one place for the softmax).

The LRN must then normalise each tower's maps on their own, which is what ``lrn_groups=2`` (the
paper model's default) does on a single device, so for the same weights the placement gives the
grouped single-device model's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alexnet.models.alexnet import AlexNet
from alexnet.models.base import ConfiguredNet, classifier_head
from alexnet.models.layers import LocalResponseNorm


def _split_layer(layer: nn.Module, tower: int, grouped: bool) -> nn.Module:
    """The ``tower``-th half (0 or 1) of a conv or FC layer's output units, as a layer of its own."""
    half = layer.out_channels // 2 if isinstance(layer, nn.Conv2d) else layer.out_features // 2
    rows = slice(tower * half, (tower + 1) * half)
    if isinstance(layer, nn.Conv2d):
        in_ch = layer.in_channels // 2 if grouped else layer.in_channels
        part = nn.Conv2d(in_ch, half, layer.kernel_size, layer.stride, layer.padding)
    else:
        part = nn.Linear(layer.in_features, half)
    with torch.no_grad():
        part.weight.copy_(layer.weight[rows])  # grouped weights are stored [out, in/groups, kh, kw]
        part.bias.copy_(layer.bias[rows])
    return part


class TwoTowerAlexNet(ConfiguredNet):
    """A grouped :class:`AlexNet` split over two devices, exchanging activations at conv3 and fc6–fc8."""

    head_name = "head"  # the AlexNet's fc8, whole on the first device

    def __init__(self, model: AlexNet, devices: Sequence[torch.device | str]) -> None:
        super().__init__()
        cfg = model.config
        if len(devices) != 2:
            raise ValueError(f"devices must name two devices, got {len(devices)}")
        if any(c.groups not in (1, 2) for c in cfg.convs):
            raise ValueError("the two-tower placement needs conv layers with groups 1 or 2")
        if cfg.lrn and cfg.lrn_groups != 2:
            raise ValueError(f"the two-tower placement needs lrn_groups=2 (each tower normalises its own maps), got {cfg.lrn_groups}")
        self.config, self.name = cfg, f"{model.name}@2towers"
        self.devices = tuple(torch.device(d) for d in devices)
        self.conv_order, self.fc_order = model.conv_order, model.fc_order  # each tower runs them in this order
        self.grouped = {f"conv{i}": c.groups == 2 for i, c in enumerate(cfg.convs, start=1)}
        towers = []
        for t, device in enumerate(self.devices):
            parts = nn.ModuleDict()
            for name, module in model.named_children():
                if name == classifier_head(model):
                    continue
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    parts[name] = _split_layer(module, t, self.grouped.get(name, False))
                elif isinstance(module, LocalResponseNorm):
                    parts[name] = LocalResponseNorm(module.size, module.alpha, module.beta, module.k, convention=module.convention)
                else:
                    parts[name] = module  # parameter-free: ReLU, pooling, dropout
            towers.append(parts.to(device))
        self.towers = nn.ModuleList(towers)
        head = model.get_submodule(classifier_head(model))
        self.head = nn.Linear(head.in_features, head.out_features).to(self.devices[0])
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            self.head.bias.copy_(head.bias)

    def _both(self, xs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Both towers' maps, concatenated along channels on ``device``: the cross-GPU exchange."""
        return torch.cat([x.to(device) for x in xs], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        xs: list[torch.Tensor] = [x.to(d) for d in self.devices]
        first = True  # conv1 reads the image itself on both towers
        for name in self.conv_order:
            if name.startswith("conv") and not first and not self.grouped[name]:
                xs = [self._both(xs, d) for d in self.devices]
            xs = [tower[name](xi) for tower, xi in zip(self.towers, xs)]
            first = first and not name.startswith("conv")
        xs = [torch.flatten(xi, 1) for xi in xs]
        for name in self.fc_order:
            if name.startswith("fc"):
                xs = [self._both(xs, d) for d in self.devices]
            xs = [tower[name](xi) for tower, xi in zip(self.towers, xs)]
        return self._both(xs, self.devices[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
