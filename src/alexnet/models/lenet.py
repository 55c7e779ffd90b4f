"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, §II.B, Fig. 2): the network AlexNet scaled up.

Two conv layers with subsampling, then three fully-connected layers, on 32×32 grey digits::

    conv1 act1 pool1 conv2 act2 pool2 flatten fc3 act3 fc4 act4 fc5

named in the AlexNet scheme (convN, then fcN continuing the count): the paper's C1, S2, C3, S4,
C5, F6 and output layer. C5 is a 5×5 convolution over 5×5 maps, which is exactly a fully-connected
layer on the 400 flattened values, so it is one here. ``forward_features`` is F6's 84-d code.

What this builds differs from the 1998 network, by choice (each difference is a simplification
every modern reimplementation makes, d2l's included):

* C3 connects every S2 map to every C3 map (2,416 parameters) instead of the paper's sparse table
  (Table I, 1,516 parameters);
* S2 and S4 are plain 2×2 average pooling, where the paper multiplies the 2×2 sum by a trainable
  coefficient, adds a trainable bias and applies the sigmoid (12 and 32 parameters);
* the output layer is a linear layer giving logits for cross-entropy, not Euclidean RBF units with
  fixed ±1 codes scored by the paper's MAP criterion.

The two registered forms, which differ only in configuration:

============  =====================================  =====================================
              ``lenet`` (LeNet-5, 1998)              ``lenet_d2l`` (d2l.ai's LeNet)
============  =====================================  =====================================
input         1×32×32, conv1 unpadded                1×28×28 (Fashion-MNIST), conv1 pad 2
activation    1.7159·tanh(2a/3) (Appendix A)         sigmoid
pooling       average 2×2/2                          average 2×2/2
init          LeCun uniform ±2.4/fan_in (App. C)     Xavier-uniform (d2l's ``init_cnn``)
============  =====================================  =====================================

Both have 61,706 parameters at 10 classes (156 + 2,416 + 48,120 + 10,164 + 850). ReLU and max
pooling, what AlexNet brought (§3.1, §3.4), are the options ``activation="relu"``,
``pooling="max"``.

``lenet_bn_d2l`` is d2l's LeNet with batch normalization (d2l-ai/d2l-zh and d2l-ai/d2l-en,
chapter_convolutional-modern/batch-norm.md, the concise form): conv1 unpadded (28 → 24, so fc3 takes
16·4·4 = 256 values), a BatchNorm before each of the four sigmoids (``bn1`` … ``bn4``), 44,878
parameters at 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import ConfiguredNet
from alexnet.models.layers import conv_output_size
from alexnet.models.registry import register


class ScaledTanh(nn.Module):
    """LeCun 1998, Appendix A: f(a) = A·tanh(S·a) with A = 1.7159, S = 2/3, so f(±1) = ±1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


LENET_ACTIVATIONS = {"scaled_tanh": ScaledTanh, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}
LENET_POOLING = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
LENET_INITS = ("lecun", "xavier", "torch")


@dataclass(frozen=True)
class LeNetConfig:
    num_classes: int = 10
    in_channels: int = 1
    input_size: int = 32  # the paper's 32×32 (digits centred in a 28×28 field, §II.B)
    conv1_padding: int = 0  # d2l pads 28×28 by 2, which gives the paper's 28×28 C1 maps
    channels: tuple[int, int] = (6, 16)  # C1, C3
    hidden: tuple[int, int] = (120, 84)  # C5, F6
    activation: str = "scaled_tanh"
    pooling: str = "avg"
    init: str = "lecun"
    batch_norm: bool = False  # BatchNorm2d/1d between each conv/fc3/fc4 and its activation (d2l's BN-LeNet)

    def __post_init__(self) -> None:
        for key, value, valid in (("activation", self.activation, tuple(LENET_ACTIVATIONS)),
                                  ("pooling", self.pooling, tuple(LENET_POOLING)), ("init", self.init, LENET_INITS)):
            if value not in valid:
                raise ValueError(not_one_of(f"{key}=", value, valid))
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be at least 1")

    def feature_side(self) -> int:
        """Side of the S4 maps for this input: 5 for 32 unpadded or 28 padded by 2."""
        side = conv_output_size(self.input_size, 5, 1, self.conv1_padding) // 2
        side = conv_output_size(side, 5, 1, 0) // 2
        if side < 1:
            raise ValueError(f"input {self.input_size} is too small for LeNet's two 5×5 convolutions")
        return side


def _identity(_features: int) -> nn.Module:
    return nn.Identity()


class LeNet(ConfiguredNet):
    """LeNet-5 configured by a :class:`LeNetConfig`; [N, C, H, W] → [N, num_classes] logits."""

    head_name = "fc5"

    def __init__(self, config: LeNetConfig, *, name: str = "lenet") -> None:
        super().__init__()
        self.config, self.name = config, name
        c = config
        act, pool = LENET_ACTIVATIONS[c.activation], LENET_POOLING[c.pooling]
        norm2d, norm1d = (nn.BatchNorm2d, nn.BatchNorm1d) if c.batch_norm else (_identity, _identity)
        self.conv1 = nn.Conv2d(c.in_channels, c.channels[0], 5, padding=c.conv1_padding)
        self.bn1, self.act1 = norm2d(c.channels[0]), act()
        self.pool1 = pool(2, 2)
        self.conv2 = nn.Conv2d(c.channels[0], c.channels[1], 5)
        self.bn2, self.act2 = norm2d(c.channels[1]), act()
        self.pool2 = pool(2, 2)
        self.fc3 = nn.Linear(c.channels[1] * c.feature_side() ** 2, c.hidden[0])
        self.bn3, self.act3 = norm1d(c.hidden[0]), act()
        self.fc4 = nn.Linear(c.hidden[0], c.hidden[1])
        self.bn4, self.act4 = norm1d(c.hidden[1]), act()
        self.fc5 = nn.Linear(c.hidden[1], c.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for layer in (self.conv1, self.conv2, self.fc3, self.fc4, self.fc5):
            if self.config.init == "lecun":  # Appendix C: U(−2.4/F, 2.4/F), F the fan-in
                fan_in = layer.weight[0].numel()
                nn.init.uniform_(layer.weight, -2.4 / fan_in, 2.4 / fan_in)
                nn.init.zeros_(layer.bias)
            elif self.config.init == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                layer.reset_parameters()

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        return self.pool2(self.act2(self.bn2(self.conv2(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """F6's 84-d code (after its activation)."""
        x = torch.flatten(self.forward_conv(x), 1)
        if x.shape[1] != self.fc3.in_features:
            raise ValueError(f"{self.name}: the conv stages give {x.shape[1]} features but fc3 expects "
                             f"{self.fc3.in_features}; this model takes {self.input_size}×{self.input_size} input")
        return self.act4(self.bn4(self.fc4(self.act3(self.bn3(self.fc3(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc5(self.forward_features(x))


@register("LeNet-5 (LeCun et al. 1998): 1×32×32, scaled tanh, average pooling; AlexNet's ancestor")
def lenet(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "scaled_tanh",
    pooling: str = "avg",
    init: str = "lecun",
) -> nn.Module:
    config = LeNetConfig(num_classes=num_classes, in_channels=in_channels, activation=activation, pooling=pooling, init=init)
    return LeNet(config, name="lenet")


@register("d2l.ai's LeNet for Fashion-MNIST: 1×28×28 padded by 2, sigmoid, average pooling, Xavier init")
def lenet_d2l(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "sigmoid",
    pooling: str = "avg",
    init: str = "xavier",
) -> nn.Module:
    config = LeNetConfig(num_classes=num_classes, in_channels=in_channels, input_size=28, conv1_padding=2,
                         activation=activation, pooling=pooling, init=init)
    return LeNet(config, name="lenet_d2l")


@register("d2l.ai's LeNet with batch norm for Fashion-MNIST: 1×28×28 unpadded, BatchNorm before each sigmoid, Xavier init")
def lenet_bn_d2l(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "sigmoid",
    pooling: str = "avg",
    init: str = "xavier",
) -> nn.Module:
    config = LeNetConfig(num_classes=num_classes, in_channels=in_channels, input_size=28, conv1_padding=0,
                         activation=activation, pooling=pooling, init=init, batch_norm=True)
    return LeNet(config, name="lenet_bn_d2l")
