"""VGG (Simonyan & Zisserman 2015): AlexNet's conv stack rebuilt from one repeated block.

A block is n 3×3 convolutions (padding 1) with ReLUs, then 2×2/2 max pooling (§2.1); five blocks
halve the side 224 → 7 while the widths go 64 → 512; then AlexNet's three FC layers (4096, 4096,
classes, dropout 0.5). The depths of Table 1 are configurations of the blocks, never copies:

======  ====  ============================  ==================
name    Tab.  convs per block               params (1000 cls)
======  ====  ============================  ==================
vgg11   A     1, 1, 2, 2, 2                 132,863,336
vgg13   B     2, 2, 2, 2, 2                 133,047,848
vgg16   D     2, 2, 3, 3, 3                 138,357,544
vgg19   E     2, 2, 4, 4, 4                 143,667,240
======  ====  ============================  ==================

Layers carry Caffe's VGG names (``conv1_1`` … ``conv5_4``, ``pool1`` … ``pool5``, ``fc6``, ``fc7``,
``fc8``), so ``forward_features`` is the same fc7 code as AlexNet's. ``batch_norm=True`` adds
``bn{b}_{i}`` after every conv, before its ReLU (torchvision's ``vgg*_bn``; not in the paper).

The ImageNet forms are torchvision's (``torchvision.models.vgg11()`` …): an ``AdaptiveAvgPool2d(7)``
before fc6 (the identity at 224, so other input sizes work) and torchvision's initialisation
(He-normal fan-out convs, N(0, 0.01) FC weights, zero biases). The paper trained A from
N(0, 0.01) and initialised the deeper nets from it (§3.1). ``torchvision_names()`` maps our
layers to torchvision's ``features.N`` / ``classifier.N``, and with the same weights the outputs
are equal (tested).

``vgg11_d2l`` is d2l.ai's Fashion-MNIST VGG-11: the widths divided by ``ratio`` = 4
(16-32-64-64-128-128-128-128), one grey channel, 224 input flattened straight into fc6 (no
adaptive pooling), FC 4096, Xavier init.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import StagedNet
from alexnet.models.registry import register

# Table 1: (convolutions, width) for each of the five blocks
VGG_BLOCKS = {
    11: ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    13: ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    16: ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    19: ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}
VGG_INITS = ("torchvision", "xavier", "torch")


@dataclass(frozen=True)
class VGGConfig:
    blocks: tuple[tuple[int, int], ...] = VGG_BLOCKS[11]  # (convs, width) per block
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 224
    batch_norm: bool = False
    hidden: tuple[int, ...] = (4096, 4096)  # fc6, fc7
    dropout: float = 0.5  # on the outputs of fc6 and fc7
    adaptive_pool: int | None = 7  # torchvision's AdaptiveAvgPool2d(7); None: flatten as is (d2l, the paper)
    init: str = "torchvision"

    def __post_init__(self) -> None:
        if self.input_size < 2 ** len(self.blocks):
            raise ValueError(f"input_size={self.input_size} is too small for {len(self.blocks)} VGG blocks "
                             f"(each halves the side): at least {2 ** len(self.blocks)}")
        if self.init not in VGG_INITS:
            raise ValueError(not_one_of("init=", self.init, VGG_INITS))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be at least 1")

    def feature_side(self) -> int:
        return self.adaptive_pool or self.input_size // 2 ** len(self.blocks)


class VGG(StagedNet):
    """Blocks of 3×3 convolutions and 2×2 pooling, then fc6–fc8 (§2.1); configured by a :class:`VGGConfig`."""

    def __init__(self, config: VGGConfig, *, name: str = "vgg11") -> None:
        super().__init__()
        self.config, self.name = config, name
        c = config
        order: list[str] = []
        in_ch = c.in_channels
        for b, (convs, width) in enumerate(c.blocks, start=1):
            for i in range(1, convs + 1):
                self.add_module(f"conv{b}_{i}", nn.Conv2d(in_ch, width, 3, padding=1))
                order.append(f"conv{b}_{i}")
                if c.batch_norm:
                    self.add_module(f"bn{b}_{i}", nn.BatchNorm2d(width))
                    order.append(f"bn{b}_{i}")
                self.add_module(f"relu{b}_{i}", nn.ReLU(inplace=True))
                order.append(f"relu{b}_{i}")
                in_ch = width
            self.add_module(f"pool{b}", nn.MaxPool2d(2, 2))
            order.append(f"pool{b}")
        if c.adaptive_pool:
            self.avgpool = nn.AdaptiveAvgPool2d(c.adaptive_pool)
            order.append("avgpool")
        self.conv_order = order

        widths = [in_ch * c.feature_side() ** 2, *c.hidden]
        fc_order: list[str] = []
        first = len(c.blocks) + 1
        for j, (w_in, w_out) in enumerate(zip(widths, widths[1:]), start=first):
            self.add_module(f"fc{j}", nn.Linear(w_in, w_out))
            self.add_module(f"relu{j}", nn.ReLU(inplace=True))
            fc_order += [f"fc{j}", f"relu{j}"]
            if c.dropout > 0:
                self.add_module(f"drop{j}", nn.Dropout(c.dropout))
                fc_order.append(f"drop{j}")
        self.fc_order = fc_order
        self.head_name = f"fc{first + len(c.hidden)}"
        self.add_module(self.head_name, nn.Linear(widths[-1], c.num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # γ = 1, β = 0
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.config.init == "xavier":  # d2l's init_cnn
                    nn.init.xavier_uniform_(m.weight)
                elif self.config.init == "torch":
                    m.reset_parameters()
                else:  # torchvision's VGG
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    else:
                        nn.init.normal_(m.weight, 0.0, 0.01)
                    nn.init.zeros_(m.bias)

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.conv_order:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The fc7 code (after relu7, and dropout in training)."""
        x = torch.flatten(self.forward_conv(x), 1)
        expected = getattr(self, self.fc_order[0]).in_features
        if x.shape[1] != expected:
            raise ValueError(f"{self.name}: the conv blocks give {x.shape[1]} features but fc6 expects {expected}; "
                             f"this model takes {self.input_size}×{self.input_size} input")
        for name in self.fc_order:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head_name)(self.forward_features(x))

    def torchvision_names(self) -> dict[str, str]:
        """Our layer → torchvision's (``conv1_1`` → ``features.0``, ``fc6`` → ``classifier.0``, …).

        torchvision numbers the modules of two ``nn.Sequential``s; ReLUs and pools take numbers too.
        """
        names: dict[str, str] = {}
        for index, name in enumerate(n for n in self.conv_order if n != "avgpool"):
            if name.startswith(("conv", "bn")):
                names[name] = f"features.{index}"
        fcs = [n for n in self.fc_order if n.startswith("fc")] + [self.head_name]
        for k, name in enumerate(fcs):  # Linear, ReLU, Dropout (kept even at p=0) per hidden layer
            names[name] = f"classifier.{3 * k}"
        return names


def _vgg(depth: int, **options) -> VGG:
    """torchvision's ``vgg{depth}``: ``input_size`` is what the data pipeline resizes to (the adaptive
    pool takes any side from 32, as torchvision's does), ``in_channels`` 1 for grey images."""
    return VGG(VGGConfig(blocks=VGG_BLOCKS[depth], **options), name=f"vgg{depth}")


@register("VGG-11 (Simonyan & Zisserman 2015, config A): 8 convs 3×3 in 5 blocks + AlexNet's FC, 224 input")
def vgg11(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, batch_norm: bool = False,
          dropout: float = 0.5, init: str = "torchvision") -> nn.Module:
    return _vgg(11, num_classes=num_classes, in_channels=in_channels, input_size=input_size, batch_norm=batch_norm,
                dropout=dropout, init=init)


@register("VGG-13 (config B): 10 convs 3×3 in 5 blocks, 224 input")
def vgg13(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, batch_norm: bool = False,
          dropout: float = 0.5, init: str = "torchvision") -> nn.Module:
    return _vgg(13, num_classes=num_classes, in_channels=in_channels, input_size=input_size, batch_norm=batch_norm,
                dropout=dropout, init=init)


@register("VGG-16 (config D): 13 convs 3×3 in 5 blocks, 224 input")
def vgg16(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, batch_norm: bool = False,
          dropout: float = 0.5, init: str = "torchvision") -> nn.Module:
    return _vgg(16, num_classes=num_classes, in_channels=in_channels, input_size=input_size, batch_norm=batch_norm,
                dropout=dropout, init=init)


@register("VGG-19 (config E): 16 convs 3×3 in 5 blocks, 224 input")
def vgg19(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, batch_norm: bool = False,
          dropout: float = 0.5, init: str = "torchvision") -> nn.Module:
    return _vgg(19, num_classes=num_classes, in_channels=in_channels, input_size=input_size, batch_norm=batch_norm,
                dropout=dropout, init=init)


@register("d2l.ai's VGG-11 for Fashion-MNIST: widths ÷ 4, 1×224×224 input, FC 4096, Xavier init")
def vgg11_d2l(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    ratio: int = 4,
    input_size: int = 224,
    batch_norm: bool = False,
    dropout: float = 0.5,
    init: str = "xavier",
) -> nn.Module:
    """``ratio`` divides every block's width (d2l: 4; 1 gives VGG-11's own widths); ``input_size``
    any multiple of 32 (d2l: 224; 32 leaves 1×1 maps before fc6, for 28–32 px data)."""
    if ratio < 1 or any(w % ratio for _, w in VGG_BLOCKS[11]):
        raise ValueError(f"ratio={ratio} must be a positive divisor of 64")
    blocks = tuple((n, w // ratio) for n, w in VGG_BLOCKS[11])
    config = VGGConfig(blocks=blocks, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                       batch_norm=batch_norm, dropout=dropout, adaptive_pool=None, init=init)
    return VGG(config, name="vgg11_d2l")
