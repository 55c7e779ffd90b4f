"""Network in Network (Lin, Chen & Yan 2014): 1×1 convolutions and global average pooling.

Each mlpconv block (§3.1) is one spatial convolution followed by two 1×1 convolutions ("cascaded
cross-channel parametric pooling", Caffe's ``cccp`` layers), every one with a ReLU: a small MLP
slid over the image. The last block outputs one map per class and global average pooling turns the
maps into the logits (§3.2), so there are no fully-connected layers at all: the ImageNet model has
7.6 M parameters against AlexNet's 61 M, with AlexNet's first-layer shapes (11×11/4, 5×5, 3×3).

Layers carry the Caffe model's names::

    conv1 relu1 cccp1 relu_cccp1 cccp2 relu_cccp2 pool1   (block 1; blocks 2 and 3 alike)
    drop3 conv4 relu4 cccp7 relu_cccp7 cccp8 relu_cccp8 avgpool flatten

``nin`` is the authors' ImageNet model (Caffe Model Zoo, ``nin_imagenet``; the paper itself reports
CIFAR, SVHN and MNIST): 96-256-384-1024 wide, the last block 3×3 → 1024, 1×1 → 1024, 1×1 → 1000,
3×3/2 max pooling rounded up as Caffe does (``ceil_mode``; 224 → 54 → 27 → 13 → 6), dropout 0.5
before block 4. ``nin_d2l`` is d2l.ai's Fashion-MNIST form: one grey channel, block 4 is
3×3 → classes, 1×1 → classes, 1×1 → classes, pooling rounded down (224 → 54 → 26 → 12 → 5).

The logits are the global average of the class maps after their ReLU (both sources keep it).
``forward_features`` is the penultimate layer: the global average of the block-4 maps that the last
1×1 convolution reads (cccp7's output: 1024-d for ``nin``, ``num_classes``-d for ``nin_d2l``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import ConfiguredNet
from alexnet.models.registry import register


@dataclass(frozen=True)
class MlpConv:
    """One mlpconv block: a ``kernel``×``kernel`` conv then two 1×1 convs, widths ``widths``."""

    widths: tuple[int, int, int]
    kernel: int
    stride: int = 1
    padding: int = 0


NIN_IMAGENET = (
    MlpConv((96, 96, 96), 11, stride=4),
    MlpConv((256, 256, 256), 5, padding=2),
    MlpConv((384, 384, 384), 3, padding=1),
    MlpConv((1024, 1024, 1000), 3, padding=1),  # the last width is num_classes
)
NIN_INITS = ("kaiming", "xavier", "torch")


@dataclass(frozen=True)
class NiNConfig:
    blocks: tuple[MlpConv, ...] = NIN_IMAGENET
    num_classes: int = 1000  # replaces the last block's last width
    in_channels: int = 3
    input_size: int = 224
    dropout: float = 0.5  # before the last block
    ceil_mode: bool = True  # Caffe rounds pooled sizes up; d2l (PyTorch's default) rounds down
    init: str = "kaiming"

    def __post_init__(self) -> None:
        if self.init not in NIN_INITS:
            raise ValueError(not_one_of("init=", self.init, NIN_INITS))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be at least 1")


class NiN(ConfiguredNet):
    """Four mlpconv blocks with 3×3/2 max pooling between them, then global average pooling."""

    def __init__(self, config: NiNConfig, *, name: str = "nin") -> None:
        super().__init__()
        self.config, self.name = config, name
        c = config
        order: list[str] = []
        in_ch, cccp = c.in_channels, 0
        last = len(c.blocks)
        for b, block in enumerate(c.blocks, start=1):
            widths = list(block.widths)
            if b == last:
                widths[-1] = c.num_classes
            if b == last and c.dropout > 0:
                self.add_module(f"drop{b - 1}", nn.Dropout(c.dropout))
                order.append(f"drop{b - 1}")
            self.add_module(f"conv{b}", nn.Conv2d(in_ch, widths[0], block.kernel, block.stride, block.padding))
            self.add_module(f"relu{b}", nn.ReLU(inplace=True))
            order += [f"conv{b}", f"relu{b}"]
            for w_in, w_out in zip(widths, widths[1:]):
                cccp += 1
                self.add_module(f"cccp{cccp}", nn.Conv2d(w_in, w_out, 1))
                self.add_module(f"relu_cccp{cccp}", nn.ReLU(inplace=True))
                order += [f"cccp{cccp}", f"relu_cccp{cccp}"]
            if b < last:
                self.add_module(f"pool{b}", nn.MaxPool2d(3, 2, ceil_mode=c.ceil_mode))
                order.append(f"pool{b}")
            in_ch = widths[-1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_name = f"cccp{cccp}"
        self.feature_order = order[:-2]  # everything before the last 1×1 conv and its ReLU
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if self.config.init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif self.config.init == "xavier":  # d2l's init_cnn
                    nn.init.xavier_uniform_(m.weight)
                else:
                    m.reset_parameters()

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The maps the last 1×1 convolution reads (after cccp7's ReLU in the four-block nets)."""
        for name in self.feature_order:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_maps(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, f"relu_{self.head_name}")(getattr(self, self.head_name)(self.forward_maps(x)))
        return torch.flatten(self.avgpool(x), 1)


@register("Network in Network (Lin et al. 2014), the authors' ImageNet model: mlpconv blocks, global average pooling, 224 input")
def nin(*, num_classes: int = 1000, dropout: float = 0.5, init: str = "kaiming") -> nn.Module:
    return NiN(NiNConfig(num_classes=num_classes, dropout=dropout, init=init), name="nin")


@register("d2l.ai's NiN for Fashion-MNIST: 1×224×224, last block 3×3 and 1×1 convs to the classes, Xavier init")
def nin_d2l(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 224, dropout: float = 0.5,
            init: str = "xavier") -> nn.Module:
    """``input_size``: d2l's 224, or down to 67 (11×11/4 and three 3×3/2 poolings leave 1×1 maps)."""
    blocks = NIN_IMAGENET[:3] + (MlpConv((num_classes,) * 3, 3, padding=1),)
    config = NiNConfig(blocks=blocks, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                       dropout=dropout, ceil_mode=False, init=init)
    return NiN(config, name="nin_d2l")
