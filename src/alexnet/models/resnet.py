"""ResNet (He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition"): y = F(x) + x.

A residual block adds its input to what its convolutions compute, so a stack of 18–152 layers trains
where the plain stack of VGG's design stops improving (§4.1). A stem (7×7/2 conv, BN, ReLU, 3×3/2
max pooling), four stages of blocks at 64, 128, 256, 512 maps (the first block of stages 2–4
halves the side and projects the shortcut with a 1×1 conv, option B of §3.3), global average
pooling and one linear layer (Table 1):

===========  ==========  =================  ===================
name         block       blocks per stage   params (1000 cls)
===========  ==========  =================  ===================
resnet18     basic       2, 2, 2, 2         11,689,512
resnet34     basic       3, 4, 6, 3         21,797,672
resnet50     bottleneck  3, 4, 6, 3         25,557,032
===========  ==========  =================  ===================

The ImageNet forms are torchvision's ``models/resnet.py`` (``resnet18()`` …): convs without biases
followed by BatchNorm, the shortcut projection conv → BN (``downsample.0``/``downsample.1``), the
bottleneck's stride on its 3×3 conv ("ResNet v1.5"), He-normal fan-out conv init, BN γ = 1, β = 0.
Module names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` …, ``fc``), so its state dict
loads as it is and the outputs are equal (tested).

``resnet18_d2l`` is d2l.ai's ResNet-18 (chapter "Residual Networks (ResNet) and ResNeXt",
``d2l.ai/chapter_convolutional-modern/resnet.html``): the same layout on one grey channel at 96×96,
but its convs have biases, the shortcut projection is a bare 1×1 conv (no BN), and Xavier init
(``d2l.init_cnn``). ``forward_features`` is the pooled vector before ``fc`` (512 or 2048).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import ConfiguredNet
from alexnet.models.registry import register

RESNET_STAGES = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
WIDTHS = (64, 128, 256, 512)
RESNET_FORMS = ("torchvision", "d2l")


@dataclass(frozen=True)
class ResNetConfig:
    block: str = "basic"  # basic: two 3×3 convs; bottleneck: 1×1, 3×3, 1×1 with 4× the maps out
    stages: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 224
    form: str = "torchvision"  # d2l: conv biases, shortcut projection without BN, Xavier init

    def __post_init__(self) -> None:
        if self.form not in RESNET_FORMS:
            raise ValueError(not_one_of("form=", self.form, RESNET_FORMS))
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(not_one_of("block=", self.block, ("basic", "bottleneck")))


def _conv(c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=bias)


class ResidualBlock(nn.Module):
    """relu(F(x) + shortcut(x)): F is conv-BN-ReLU-conv-BN (basic) or 1×1, 3×3, 1×1 (bottleneck, ×4 maps)."""

    def __init__(self, c_in: int, width: int, stride: int, bottleneck: bool, d2l: bool) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        c_out = width * 4 if bottleneck else width
        if bottleneck:
            self.conv1, self.bn1 = _conv(c_in, width, 1, 1, d2l), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = _conv(width, width, 3, stride, d2l), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = _conv(width, c_out, 1, 1, d2l), nn.BatchNorm2d(c_out)
        else:
            self.conv1, self.bn1 = _conv(c_in, width, 3, stride, d2l), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = _conv(width, width, 3, 1, d2l), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            projection = [_conv(c_in, c_out, 1, stride, d2l)] + ([] if d2l else [nn.BatchNorm2d(c_out)])
            self.downsample = nn.Sequential(*projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(self.relu(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class ResNet(ConfiguredNet):
    head_name = "fc"

    def __init__(self, config: ResNetConfig, *, name: str) -> None:
        super().__init__()
        self.config, self.name = config, name
        d2l, bottleneck = config.form == "d2l", config.block == "bottleneck"
        self.conv1 = nn.Conv2d(config.in_channels, 64, 7, 2, 3, bias=d2l)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for s, (blocks, width) in enumerate(zip(config.stages, WIDTHS), start=1):
            stage = []
            for b in range(blocks):
                stage.append(ResidualBlock(c_in, width, 2 if (b == 0 and s > 1) else 1, bottleneck, d2l))
                c_in = width * 4 if bottleneck else width
            self.add_module(f"layer{s}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """torchvision's init (He-normal fan-out convs, BN 1/0, nn.Linear's default), or d2l's Xavier."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and self.config.form == "d2l":
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def _resnet(depth: int, name: str, num_classes: int, in_channels: int, input_size: int, form: str) -> ResNet:
    block, stages = RESNET_STAGES[depth]
    config = ResNetConfig(block, stages, num_classes, in_channels, input_size, form)
    return ResNet(config, name=name)


@register("ResNet-18 (He et al. 2016) as torchvision's resnet18: basic blocks 2-2-2-2, 224 input")
def resnet18(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    return _resnet(18, "resnet18", num_classes, in_channels, input_size, "torchvision")


@register("ResNet-34 as torchvision's resnet34: basic blocks 3-4-6-3, 224 input")
def resnet34(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    return _resnet(34, "resnet34", num_classes, in_channels, input_size, "torchvision")


@register("ResNet-50 as torchvision's resnet50: bottleneck blocks 3-4-6-3 (stride on the 3×3), 224 input")
def resnet50(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    return _resnet(50, "resnet50", num_classes, in_channels, input_size, "torchvision")


@register("d2l.ai's ResNet-18 for Fashion-MNIST: 1×96×96, conv biases, unnormalised 1×1 shortcuts, Xavier init")
def resnet18_d2l(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 96) -> nn.Module:
    return _resnet(18, "resnet18_d2l", num_classes, in_channels, input_size, "d2l")
