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

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.utils import skip_init

from alexnet.models.alexnet import AlexNet
from alexnet.models.base import ConfiguredNet
from alexnet.models.lrn import LocalResponseNorm


class Keys(NamedTuple):
    """What :meth:`TwoTowerAlexNet.load_state_dict` did not load, as ``nn.Module.load_state_dict`` reports it."""

    missing_keys: list[str]
    unexpected_keys: list[str]


PLACEMENT_OPTIONS = ("devices",)  # builder options that place a model rather than define it: checkpoints leave them out


def _half(layer: nn.Module, grouped: bool, device: torch.device) -> nn.Module:
    """An uninitialised layer on ``device`` of half of ``layer``'s output units (input halved too where ``grouped``)."""
    if isinstance(layer, nn.Conv2d):
        in_ch = layer.in_channels // 2 if grouped else layer.in_channels
        return skip_init(nn.Conv2d, in_ch, layer.out_channels // 2, layer.kernel_size, layer.stride, layer.padding, device=device)
    return skip_init(nn.Linear, layer.in_features, layer.out_features // 2, device=device)


def place_towers(model: AlexNet, devices: Sequence[torch.device | str] | None) -> nn.Module:
    """A builder's ``devices=(d0, d1)`` option: ``model`` itself for None, else its towers on the two devices."""
    if devices is None:
        return model
    if not any(c.groups == 2 for c in model.config.convs):
        raise ValueError("devices=(d0, d1) places two towers; it needs towers=2")
    if model.config.batch_norm:
        raise ValueError("devices=(d0, d1) does not split BatchNorm layers; use batch_norm=False")
    return TwoTowerAlexNet(model, devices)


class TwoTowerAlexNet(ConfiguredNet):
    """A grouped :class:`AlexNet` split over two devices, exchanging activations at conv3 and fc6–fc8.

    It places itself: ``placement`` names its devices, so the runtime (:func:`alexnet.runtime.place`)
    moves nothing and sends inputs to the first. Its ``name`` and state dict are the grouped
    model's (conv2.weight [256, 48, 5, 5], the halves concatenated on the first device), so a
    checkpoint of it loads as that model on one device, and loading splits the tensors again.
    """

    def __init__(self, model: AlexNet, devices: Sequence[torch.device | str]) -> None:
        super().__init__()
        cfg = model.config
        if len(devices) != 2:
            raise ValueError(f"devices must name two devices, got {len(devices)}")
        if any(c.groups not in (1, 2) for c in cfg.convs):
            raise ValueError("the two-tower placement needs conv layers with groups 1 or 2")
        if cfg.lrn and cfg.lrn_groups != 2:
            raise ValueError(f"the two-tower placement needs lrn_groups=2 (each tower normalises its own maps), got {cfg.lrn_groups}")
        self.config, self.name = cfg, model.name
        self.placement = tuple(torch.device(d) for d in devices)
        self.conv_order, self.fc_order, self.head_name = model.conv_order, model.fc_order, model.head_name
        self.grouped = {f"conv{i}": c.groups == 2 for i, c in enumerate(cfg.convs, start=1)}
        self.split = [n for n, m in model.named_children() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != self.head_name]
        towers = []
        for device in self.placement:
            parts = nn.ModuleDict()
            for name, module in model.named_children():
                if name in self.split:
                    parts[name] = _half(module, self.grouped.get(name, False), device)
                elif isinstance(module, LocalResponseNorm):
                    parts[name] = LocalResponseNorm(module.size, module.alpha, module.beta, module.k, convention=module.convention)
                elif name != self.head_name:
                    parts[name] = module  # parameter-free: ReLU, pooling, dropout
            towers.append(parts.to(device))
        self.towers = nn.ModuleList(towers)
        head = getattr(model, self.head_name)
        self.add_module(self.head_name, skip_init(nn.Linear, head.in_features, head.out_features, device=self.placement[0]))
        self.load_state_dict(model.state_dict())

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
        """The grouped model's state dict: each split layer's two halves concatenated on the first device."""
        out = destination if destination is not None else OrderedDict()
        head = getattr(self, self.head_name)
        for name in [*self.split, self.head_name]:
            for kind in ("weight", "bias"):
                if name == self.head_name:
                    tensor = getattr(head, kind)
                else:
                    tensor = torch.cat([getattr(t[name], kind).to(self.placement[0]) for t in self.towers])
                out[f"{prefix}{name}.{kind}"] = tensor if keep_vars else tensor.detach()
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Keys:
        """Load a grouped model's state dict, each tensor split between the towers (``assign`` is moot: always a copy)."""
        own = self.state_dict()
        keys = Keys([k for k in own if k not in state_dict], [k for k in state_dict if k not in own])
        if strict and (keys.missing_keys or keys.unexpected_keys):
            raise RuntimeError(f"{self.name}: state dict lacks {keys.missing_keys} and has unexpected {keys.unexpected_keys}")
        for key in own.keys() & state_dict.keys():
            if state_dict[key].shape != own[key].shape:
                raise RuntimeError(f"{self.name}: {key} is {tuple(state_dict[key].shape)} in the state dict, "
                                   f"{tuple(own[key].shape)} in the model")
        with torch.no_grad():
            for key in own.keys() & state_dict.keys():
                name, _, kind = key.rpartition(".")
                if name == self.head_name:
                    getattr(getattr(self, name), kind).copy_(state_dict[key])
                    continue
                for tower, half in zip(self.towers, state_dict[key].chunk(2)):  # grouped weights are [out, in/groups, kh, kw]
                    getattr(tower[name], kind).copy_(half)
        return keys

    def _both(self, xs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Both towers' maps, concatenated along channels on ``device``: the cross-GPU exchange."""
        return torch.cat([x.to(device) for x in xs], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        xs: list[torch.Tensor] = [x.to(d) for d in self.placement]
        first = True  # conv1 reads the image itself on both towers
        for name in self.conv_order:
            if name.startswith("conv") and not first and not self.grouped[name]:
                xs = [self._both(xs, d) for d in self.placement]
            xs = [tower[name](xi) for tower, xi in zip(self.towers, xs)]
            first = first and not name.startswith("conv")
        xs = [torch.flatten(xi, 1) for xi in xs]
        for name in self.fc_order:
            if name.startswith("fc"):
                xs = [self._both(xs, d) for d in self.placement]
            xs = [tower[name](xi) for tower, xi in zip(self.towers, xs)]
        return self._both(xs, self.placement[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head_name)(self.forward_features(x))
