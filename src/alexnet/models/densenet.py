"""DenseNet (Huang, Liu, van der Maaten & Weinberger 2017, "Densely connected convolutional networks").

Inside a dense block every layer reads the concatenation of all the maps before it and adds
``growth_rate`` new ones (§3); transition layers between blocks (BN, ReLU, 1×1 conv halving the
maps, 2×2/2 average pooling) shrink the side. DenseNet-121 (Table 1, DenseNet-BC): a 7×7/2 stem
with 3×3/2 max pooling, blocks of 6, 12, 24, 16 bottleneck layers (BN-ReLU-1×1 conv to 4·k maps,
BN-ReLU-3×3 conv to k maps), k = 32, compression 0.5; then BN, ReLU, global average pooling and one
linear layer: 7,978,856 parameters at 1000 classes.

``densenet121`` is torchvision's ``models/densenet.py`` (no biases in convs, drop rate 0, He-normal
conv init, BN 1/0, linear biases 0) with its module names (``features.conv0``, ``norm0``,
``denseblock1.denselayer1.norm1`` …, ``features.norm5``, ``classifier``): its state dict loads as it
is and the outputs are equal (tested).

``densenet_d2l`` is d2l.ai's DenseNet (chapter "Densely Connected Networks (DenseNet)",
``d2l.ai/chapter_convolutional-modern/densenet.html``): 1×96×96 input, the same stem but with conv
biases, four blocks of four BN-ReLU-3×3 conv layers (no 1×1 bottleneck), growth 32, transitions that
halve the maps, Xavier init. ``forward_features`` is the pooled vector before the classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import ConfiguredNet
from alexnet.models.registry import register

DENSENET_FORMS = ("torchvision", "d2l")


@dataclass(frozen=True)
class DenseNetConfig:
    blocks: tuple[int, ...] = (6, 12, 24, 16)  # layers per dense block
    growth_rate: int = 32  # k
    stem_width: int = 64
    bottleneck: bool = True  # BN-ReLU-1×1 conv to 4k maps before each 3×3 (DenseNet-B); d2l: none
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 224
    form: str = "torchvision"  # d2l: conv biases, Xavier init

    def __post_init__(self) -> None:
        if self.form not in DENSENET_FORMS:
            raise ValueError(not_one_of("form=", self.form, DENSENET_FORMS))


class DenseLayer(nn.Module):
    """[BN-ReLU-1×1 conv (4k)] BN-ReLU-3×3 conv (k) on the concatenated maps; returns the k new maps."""

    def __init__(self, c_in: int, growth: int, bottleneck: bool, bias: bool) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        width = 4 * growth if bottleneck else c_in
        if bottleneck:
            self.norm1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(c_in, width, 1, bias=bias)
        self.norm2, self.relu2 = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bottleneck:
            x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    """``denselayer1`` … ``denselayerN``, each appending its maps to everything before it."""

    def __init__(self, layers: int, c_in: int, growth: int, bottleneck: bool, bias: bool) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(c_in + i * growth, growth, bottleneck, bias) for i in range(layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


def transition(c_in: int, c_out: int, bias: bool) -> nn.Sequential:
    """BN, ReLU, 1×1 conv to ``c_out`` maps, 2×2/2 average pooling (torchvision's ``_Transition``)."""
    return nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(c_in), relu=nn.ReLU(inplace=True),
                                     conv=nn.Conv2d(c_in, c_out, 1, bias=bias), pool=nn.AvgPool2d(2, 2)))


class DenseNet(ConfiguredNet):
    head_name = "classifier"

    def __init__(self, config: DenseNetConfig, *, name: str) -> None:
        super().__init__()
        self.config, self.name = config, name
        bias = config.form == "d2l"
        c = config.stem_width
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(config.in_channels, c, 7, 2, 3, bias=bias), norm0=nn.BatchNorm2d(c),
            relu0=nn.ReLU(inplace=True), pool0=nn.MaxPool2d(3, 2, 1),
        )
        for i, layers in enumerate(config.blocks, start=1):
            parts[f"denseblock{i}"] = DenseBlock(layers, c, config.growth_rate, config.bottleneck, bias)
            c += layers * config.growth_rate
            if i < len(config.blocks):
                parts[f"transition{i}"] = transition(c, c // 2, bias)
                c //= 2
        parts[f"norm{len(config.blocks) + 1}"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(parts)
        self.classifier = nn.Linear(c, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """torchvision's init (He-normal convs, BN 1/0, linear bias 0), or d2l's Xavier."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and self.config.form == "d2l":
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


@register("DenseNet-121 (Huang et al. 2017) as torchvision's densenet121: blocks 6-12-24-16, k=32, 224 input")
def densenet121(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    config = DenseNetConfig(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    return DenseNet(config, name="densenet121")


@register("d2l.ai's DenseNet for Fashion-MNIST: 1×96×96, four blocks of four 3×3 layers, k=32, Xavier init")
def densenet_d2l(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 96) -> nn.Module:
    config = DenseNetConfig(blocks=(4, 4, 4, 4), bottleneck=False, num_classes=num_classes,
                            in_channels=in_channels, input_size=input_size, form="d2l")
    return DenseNet(config, name="densenet_d2l")
