"""The CIFAR-10 networks of §3, as Krizhevsky's cuda-convnet defines them.

§3.1 (Figure 1: ReLU reaches 25 % training error six times faster than tanh) and §3.3 ("a four-layer
CNN achieved 13 % test error without normalization and 11 % with") were measured with the example
nets of cuda-convnet, read in repository dnouri/cuda-convnet, folder ``example-layers/``:

* ``cifar_conv_local`` (``layers-conv-local-11pct.cfg``): conv 5×5 64 → pool 3/2 → cross-map norm →
  conv 5×5 64 → cross-map norm → pool 3/2 → two **locally connected** 3×3 layers (64, then 32 filters)
  → fc10. The norms are ``cmrnorm`` size 9, scale 0.001 (÷ size, as ``layer.py`` does), pow 0.75 and
  k = 1 (the 2012 kernels in ``src/cudaconv2/conv_util.cu`` add 1). ``lrn=False`` is
  ``layers-conv-local-13pct.cfg``, which also gives local3 32 filters instead of 64 (``local3=`` sets
  it either way). Trained on 24×24 crops of the 32×32 images with reflections (the
  ``--crop-border=4`` data provider of ``convdata.py``), tested on ten views.
* ``cifar_18pct`` (``layers-18pct.cfg``): conv 5×5 32 → max 3/2 → ReLU → same-map ``rnorm`` 3×3
  (scale 5e-5 ÷ 9) → conv 5×5 32 → ReLU → avg 3/2 → rnorm → conv 5×5 64 → ReLU → avg 3/2 → fc10, on
  the whole 32×32 image.
* ``cifar_80sec`` (``layers-80sec.cfg``): ``cifar_18pct`` without the norms, with an fc64 (ReLU)
  before fc10.

Sizes follow cuda-convnet's ceil rule (:mod:`alexnet.models.cudaconvnet_layers`): 3/2 pooling takes
32 to 16 (PyTorch's floor rule: 15), 24 to 12. Weights are N(0, initW²) with each layer's ``initW``
from the cfg (1e-4 for conv1, 0.01 for conv2/3 and fc10, 0.04 for the local layers, 0.1 in 80sec's FC
layers) and biases 0. Module names are the cfg's (``conv1``, ``pool1``, ``rnorm1``, ``local3``,
``fc10`` whatever the number of classes); a neuron is ``<layer>_neuron``. ``activation="tanh"`` swaps every ReLU for tanh (Fig. 1).
``forward_features`` is the input of the last FC layer, flattened.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import ConfiguredNet
from alexnet.models.cudaconvnet_layers import LocallyConnected2d, SameMapResponseNorm, ceil_output_size
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.registry import register

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class Layer:
    """One ``[section]`` of a cuda-convnet layer file: what the builder needs of it."""

    name: str
    type: str  # conv | local | pool | cmrnorm | rnorm | fc
    filters: int = 0  # conv/local filters, fc outputs
    size: int = 0  # filterSize, pooling sizeX, norm size
    stride: int = 1
    padding: int = 0
    init_w: float = 0.01  # initW: std of the Gaussian weights
    neuron: bool = False  # neuron=relu on this layer
    pool: str = "max"
    scale: float = 0.0  # norms: the cfg's scale (before cuda-convnet divides it)
    power: float = 0.75


def _conv_local(lrn: bool, local3: int) -> tuple[Layer, ...]:
    norm1 = (Layer("rnorm1", "cmrnorm", size=9, scale=0.001),) if lrn else ()
    norm2 = (Layer("rnorm2", "cmrnorm", size=9, scale=0.001),) if lrn else ()
    return (
        Layer("conv1", "conv", 64, 5, padding=2, init_w=1e-4, neuron=True),
        Layer("pool1", "pool", size=3, stride=2),
        *norm1,
        Layer("conv2", "conv", 64, 5, padding=2, init_w=0.01, neuron=True),
        *norm2,
        Layer("pool2", "pool", size=3, stride=2),
        Layer("local3", "local", local3, 3, padding=1, init_w=0.04, neuron=True),
        Layer("local4", "local", 32, 3, padding=1, init_w=0.04, neuron=True),
    )


def _net_18pct(rnorm: bool, fc64: bool) -> tuple[tuple[Layer, ...], float]:
    norm1 = (Layer("rnorm1", "rnorm", size=3, scale=5e-5),) if rnorm else ()
    norm2 = (Layer("rnorm2", "rnorm", size=3, scale=5e-5),) if rnorm else ()
    fc_w = 0.1 if fc64 else 0.01  # layers-80sec.cfg: initW=0.1 for fc64 and fc10
    return (
        Layer("conv1", "conv", 32, 5, padding=2, init_w=1e-4),
        Layer("pool1", "pool", size=3, stride=2, neuron=True),
        *norm1,
        Layer("conv2", "conv", 32, 5, padding=2, init_w=0.01, neuron=True),
        Layer("pool2", "pool", size=3, stride=2, pool="avg"),
        *norm2,
        Layer("conv3", "conv", 64, 5, padding=2, init_w=0.01, neuron=True),
        Layer("pool3", "pool", size=3, stride=2, pool="avg"),
        *((Layer("fc64", "fc", 64, init_w=fc_w, neuron=True),) if fc64 else ()),
    ), fc_w


@dataclass(frozen=True)
class CudaConvnetConfig:
    layers: tuple[Layer, ...]
    head_init_w: float = 0.01  # fc10's initW
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 24
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(not_one_of("activation=", self.activation, ACTIVATIONS))
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be at least 1")


class CudaConvnetNet(ConfiguredNet):
    """A cuda-convnet layer file as a network: its layers in order, then the fc head (``fc10``)."""

    def __init__(self, config: CudaConvnetConfig, *, name: str) -> None:
        super().__init__()
        self.config, self.name = config, name
        act = ACTIVATIONS[config.activation]
        channels, side, flat = config.in_channels, config.input_size, 0
        self.order: list[str] = []
        for layer in config.layers:
            module, channels, side, flat = self._build(layer, channels, side, flat)
            self.add_module(layer.name, module)
            self.order.append(layer.name)
            if layer.neuron:
                self.add_module(f"{layer.name}_neuron", act())
                self.order.append(f"{layer.name}_neuron")
        self.head_name = "fc10"  # the cfg's name, whatever num_classes is
        self.add_module(self.head_name, nn.Linear(flat or channels * side * side, config.num_classes))
        self._init_linear(getattr(self, self.head_name), config.head_init_w)

    @staticmethod
    def _init_linear(layer: nn.Module, std: float) -> None:
        with torch.no_grad():
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)

    def _build(self, layer: Layer, channels: int, side: int, flat: int) -> tuple[nn.Module, int, int, int]:
        """The module for one cfg section and the (channels, side, flat features) after it."""
        if side < 1:
            raise ValueError(f"{self.name}: input {self.config.input_size} is too small: nothing is left before {layer.name}")
        if layer.type == "conv":
            conv = nn.Conv2d(channels, layer.filters, layer.size, layer.stride, layer.padding)
            self._init_linear(conv, layer.init_w)
            return conv, layer.filters, ceil_output_size(side, layer.size, layer.stride, layer.padding), 0
        if layer.type == "local":
            local = LocallyConnected2d(channels, layer.filters, layer.size, side, stride=layer.stride,
                                       padding=layer.padding, init_std=layer.init_w)
            return local, layer.filters, local.output_size, 0
        if layer.type == "pool":
            pool_type = nn.MaxPool2d if layer.pool == "max" else nn.AvgPool2d
            return pool_type(layer.size, layer.stride, ceil_mode=True), channels, ceil_output_size(side, layer.size, layer.stride, 0), 0
        if layer.type == "cmrnorm":  # 2012 kernels: k = 1; scale ÷ size is LocalResponseNorm's "as_run"
            return LocalResponseNorm(layer.size, layer.scale, layer.power, 1.0, convention="as_run"), channels, side, 0
        if layer.type == "rnorm":
            return SameMapResponseNorm(layer.size, layer.scale, layer.power, 1.0), channels, side, 0
        if layer.type == "fc":
            fc = nn.Linear(flat or channels * side * side, layer.filters)
            self._init_linear(fc, layer.init_w)
            return fc, channels, side, layer.filters
        raise ValueError(f"unknown cuda-convnet layer type {layer.type!r}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.config.in_channels, self.config.input_size, self.config.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.name} takes {'×'.join(map(str, expected))} input, got {'×'.join(map(str, x.shape[1:]))}")
        for name in self.order:
            module = getattr(self, name)
            x = module(torch.flatten(x, 1) if isinstance(module, nn.Linear) else x)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head_name)(self.forward_features(x))


@register("cuda-convnet's CIFAR-10 net of §3.3: conv-pool-norm, conv-norm-pool, two locally connected layers, fc (11 %/13 %)")
def cifar_conv_local(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 24,
    lrn: bool = True,
    local3: int | None = None,
    activation: str = "relu",
) -> nn.Module:
    """``lrn=True``: layers-conv-local-11pct.cfg; ``lrn=False``: layers-conv-local-13pct.cfg.

    ``local3`` is local3's filter count: ``None`` takes the file's (64 in 11pct, 32 in 13pct); give
    it to change one thing only (``lrn=False, local3=64`` is 11pct without its norms).
    """
    filters = local3 if local3 is not None else (64 if lrn else 32)
    config = CudaConvnetConfig(_conv_local(lrn, filters), num_classes=num_classes, in_channels=in_channels,
                               input_size=input_size, activation=activation)
    return CudaConvnetNet(config, name="cifar_conv_local")


@register("cuda-convnet's layers-18pct.cfg: three 5×5 convs, max/avg pooling, same-map norms, fc (18 % on CIFAR-10)")
def cifar_18pct(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    rnorm: bool = True,
    activation: str = "relu",
) -> nn.Module:
    layers, head_w = _net_18pct(rnorm, fc64=False)
    config = CudaConvnetConfig(layers, head_w, num_classes=num_classes, in_channels=in_channels,
                               input_size=input_size, activation=activation)
    return CudaConvnetNet(config, name="cifar_18pct")


@register("cuda-convnet's layers-80sec.cfg: cifar_18pct without norms, plus fc64 (26 % on CIFAR-10 in 80 s)")
def cifar_80sec(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    activation: str = "relu",
) -> nn.Module:
    layers, head_w = _net_18pct(rnorm=False, fc64=True)
    config = CudaConvnetConfig(layers, head_w, num_classes=num_classes, in_channels=in_channels,
                               input_size=input_size, activation=activation)
    return CudaConvnetNet(config, name="cifar_80sec")
