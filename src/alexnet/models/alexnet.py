"""The AlexNet family as one configurable network.

One class, :class:`AlexNet`, built from an :class:`AlexNetConfig`. The paper's network (§3.5,
Fig. 2), Caffe's two reference models, torchvision's "one weird trick" net, d2l's Fashion-MNIST net
and a small-image net are all configurations of it, and so are the paper's ablations (§3: ReLU vs
tanh, LRN, overlapping pooling, one or two towers, dropout): an ablation is a field, never a copy.

Layers carry the paper's / Caffe's names, so state-dict keys are ``conv1.weight`` … ``fc8.bias``
for every variant, and grouped weights are shaped as Caffe stores them (conv2.weight is
[256, 48, 5, 5] in the paper's net). The modules run in this order (those a config turns off are
absent)::

    [pad1] conv1 [bn1] relu1 norm1 pool1 conv2 [bn2] relu2 norm2 [rnorm2] pool2 conv3 [bn3] relu3
    conv4 [bn4] relu4 conv5 [bn5] relu5 pool5 avgpool flatten [drop6] fc6 relu6 [drop6] [drop7] fc7
    relu7 [drop7] fc8

``norm_position`` moves the LRN before the ReLU (Krizhevsky's 2012 code, conv1) or after the pool
(CaffeNet), for every layer or per layer (a tuple); ``dropout_position`` puts dropout on the inputs
of fc6/fc7 (torchvision) instead of on the outputs of fc6/fc7 (paper §4.2, Caffe); ``dropout_scaling`` is the paper's (survivors unscaled in
training, every output × (1 − p) at test, §4.2) or the inverted one of PyTorch, Caffe and torchvision
(survivors × 1/(1 − p) in training): see :class:`~alexnet.models.layers.PaperDropout` for why it matters.

``output_rule="ceil"`` sizes outputs by cuda-convnet's rule (a ``pad{i}`` of zeros at the bottom and
right where it differs, ceil-mode pooling) and ``same_map_norm_after`` adds its same-map ``rnorm{i}``
after the LRN: together they are Krizhevsky's released ImageNet configuration (``alexnet_cudaconvnet``,
:mod:`alexnet.models.cudaconvnet_layers`).

``batch_norm`` puts a BatchNorm2d ``bn{i}`` after every conv, before its ReLU (Ioffe & Szegedy
2015, §3.2: normalise Wx+b, then the nonlinearity); ``alexnet_bn`` is the paper's net with it in
place of LRN. The FC layers are left as the paper has them (dropout, no BatchNorm1d), so the
comparison with LRN changes one thing. The conv biases are kept (redundant before BN, as in
torchvision's ``vgg*_bn``) so every variant has the same ``conv{i}.bias`` keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import StagedNet
from alexnet.models.cudaconvnet_layers import SameMapResponseNorm, ceil_extra, ceil_output_size
from alexnet.models.layers import DROPOUT_SCALINGS, INITS, conv_output_size, dropout_layer, initialise
from alexnet.models.lrn import LRN_CONVENTIONS, LocalResponseNorm

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
NORM_POSITIONS = ("after_relu", "before_relu", "after_pool")
OUTPUT_RULES = ("floor", "ceil")
DROPOUT_POSITIONS = ("after", "before")


@dataclass(frozen=True)
class Conv:
    """One convolutional layer: ``out_channels`` kernels of ``kernel``×``kernel``, split into ``groups``."""

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1


# §3.5 and Fig. 2: the two-GPU net. groups=2 where a layer sees only its own tower's maps.
PAPER_CONVS = (
    Conv(96, 11, stride=4),
    Conv(256, 5, padding=2, groups=2),
    Conv(384, 3, padding=1),
    Conv(384, 3, padding=1, groups=2),
    Conv(256, 3, padding=1, groups=2),
)


@dataclass(frozen=True)
class AlexNetConfig:
    """Everything that defines one member of the family. The defaults are the paper's network."""

    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 227  # §3.5 says 224, but only 227 gives 55×55 without padding (reference §1)
    convs: tuple[Conv, ...] = PAPER_CONVS
    hidden: tuple[int, ...] = (4096, 4096)  # fc6, fc7
    activation: str = "relu"  # §3.1; "tanh" is Fig. 1's comparison
    lrn: bool = True  # §3.3
    lrn_after: tuple[int, ...] = (1, 2)  # conv layers (1-based) followed by LRN
    lrn_size: int = 5  # n
    lrn_alpha: float = 1e-4  # α
    lrn_beta: float = 0.75  # β
    lrn_k: float = 2.0  # k (Caffe's models use 1)
    lrn_convention: str = "as_run"  # α' = α/n as run by the 2012 code, Caffe, PyTorch; "as_printed": α' = α
    lrn_groups: int = 2  # 2: each tower normalises its own maps (§3.2); Caffe: 1
    batch_norm: bool = False  # BatchNorm2d after every conv, before its ReLU (alexnet_bn); independent of lrn
    norm_position: str | tuple[str, ...] = "after_relu"  # §3.5 order conv → ReLU → LRN → pool; a tuple: one per conv layer
    same_map_norm_after: tuple[int, ...] = ()  # conv layers whose LRN is followed by cuda-convnet's same-map rnorm
    same_map_size: int = 5  # the rnorm's spatial window (released ImageNet cfg: 5×5)
    same_map_scale: float = 1e-3  # as written in the cfg; divided by size² (cuda-convnet's layer.py)
    same_map_pow: float = 0.75
    same_map_min_div: float = 1.0
    output_rule: str = "floor"  # PyTorch's; "ceil": cuda-convnet's 1 + ceil((2p + size − k)/s), e.g. 55×55 from 224
    pool_after: tuple[int, ...] = (1, 2, 5)  # conv layers followed by max pooling
    pool_kernel: int = 3  # 3/2 overlapping pooling (§3.4); 2/2 is the non-overlapping ablation
    pool_stride: int = 2
    adaptive_pool: int | None = None  # torchvision's AdaptiveAvgPool2d(6) before fc6
    dropout: float = 0.5  # §4.2
    dropout_position: str = "after"  # on the outputs of fc6, fc7 (paper, Caffe); "before": torchvision
    dropout_scaling: str = "paper"  # §4.2: survivors unscaled, ×(1 − p) at test; "inverted": ×1/(1 − p) in training (PyTorch, Caffe)
    init: str = "paper"  # §5; see layers.INITS

    def __post_init__(self) -> None:
        choices = {
            "activation": (self.activation, tuple(ACTIVATIONS)),
            "lrn_convention": (self.lrn_convention, LRN_CONVENTIONS),
            "output_rule": (self.output_rule, OUTPUT_RULES),
            "dropout_position": (self.dropout_position, DROPOUT_POSITIONS),
            "dropout_scaling": (self.dropout_scaling, DROPOUT_SCALINGS),
            "init": (self.init, INITS),
        }
        for key, (value, valid) in choices.items():
            if value not in valid:
                raise ValueError(not_one_of(f"{key}=", value, valid))
        for position in self.norm_positions():
            if position not in NORM_POSITIONS:
                raise ValueError(not_one_of("norm_position=", position, NORM_POSITIONS))
        if isinstance(self.norm_position, tuple) and len(self.norm_position) != len(self.convs):
            raise ValueError(f"norm_position has {len(self.norm_position)} entries for {len(self.convs)} conv layers")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be at least 1")

    def norm_positions(self) -> tuple[str, ...]:
        """Where each conv layer's LRN sits: ``norm_position`` itself if a tuple, else it for every layer."""
        if isinstance(self.norm_position, tuple):
            return self.norm_position
        return (self.norm_position,) * len(self.convs)

    def output_size(self, size: int, kernel: int, stride: int, padding: int) -> int:
        rule = ceil_output_size if self.output_rule == "ceil" else conv_output_size
        return rule(size, kernel, stride, padding)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlexNetConfig:
        d = dict(d)
        d["convs"] = tuple(Conv(**c) if isinstance(c, dict) else Conv(*c) for c in d["convs"])
        for key in ("hidden", "lrn_after", "pool_after", "same_map_norm_after"):
            if key in d:
                d[key] = tuple(d[key])
        if isinstance(d.get("norm_position"), list):
            d["norm_position"] = tuple(d["norm_position"])
        return cls(**d)

    def feature_size(self, input_size: int | None = None) -> tuple[int, int]:
        """(channels, side) of the last conv stage's output for a square input (pool5 in the paper)."""
        side = input_size or self.input_size
        for i, conv in enumerate(self.convs, start=1):
            side = self.output_size(side, conv.kernel, conv.stride, conv.padding)
            if i in self.pool_after:
                side = self.output_size(side, self.pool_kernel, self.pool_stride, 0)
            if side < 1:
                raise ValueError(f"input {input_size or self.input_size} is too small: nothing is left after conv{i}")
        if self.adaptive_pool:
            side = self.adaptive_pool
        return self.convs[-1].out_channels, side


class AlexNet(StagedNet):
    """Five conv layers and three FC layers (§3.5), configured by an :class:`AlexNetConfig`.

    ``forward(x)`` maps [N, C, H, W] images to [N, num_classes] logits (softmax is left to the loss
    and to evaluation). ``forward_features(x)`` returns the 4096-d fc7 code (after its ReLU) that
    §6.1 uses for image retrieval; ``forward_conv(x)`` the pool5 maps.
    """

    def __init__(self, config: AlexNetConfig, *, name: str = "alexnet") -> None:
        super().__init__()
        self.config, self.name = config, name
        self.conv_order = self._add_conv_stages()
        self.fc_order, width = self._add_hidden_fcs()
        self.head_name = f"fc{len(config.convs) + len(config.hidden) + 1}"  # fc8
        self.add_module(self.head_name, nn.Linear(width, config.num_classes))
        self.reset_parameters()

    # -- layers ----------------------------------------------------------------------------------
    def _add_conv_stages(self) -> list[str]:
        """conv1…conv5 with what follows each, then [avgpool]; their names in forward order."""
        c = self.config
        order: list[str] = []
        in_ch, side = c.in_channels, c.input_size
        for i, (spec, position) in enumerate(zip(c.convs, c.norm_positions()), start=1):
            names, side = self._add_conv_stage(i, spec, position, in_ch, side)
            order += names
            in_ch = spec.out_channels
        if c.adaptive_pool:
            self.avgpool = nn.AdaptiveAvgPool2d(c.adaptive_pool)
            order.append("avgpool")
        return order

    def _add_conv_stage(self, i: int, spec: Conv, position: str, in_ch: int, side: int) -> tuple[list[str], int]:
        """[pad{i}] conv{i} [bn{i}] and relu{i}, norm{i}, [rnorm{i}], pool{i} in ``position``'s order: their
        names in forward order, and the side of the maps after the stage."""
        c = self.config
        ceil = c.output_rule == "ceil"
        extra = ceil_extra(side, spec.kernel, spec.stride, spec.padding) if ceil else 0
        pad = f"pad{i}" if extra else None  # cuda-convnet's last windows run past the image into zeros
        if pad:
            self.add_module(pad, nn.ZeroPad2d((0, extra, 0, extra)))
        self.add_module(f"conv{i}", nn.Conv2d(in_ch, spec.out_channels, spec.kernel, spec.stride, spec.padding, groups=spec.groups))
        side = c.output_size(side, spec.kernel, spec.stride, spec.padding)
        bn = f"bn{i}" if c.batch_norm else None
        if bn:
            self.add_module(bn, nn.BatchNorm2d(spec.out_channels))
        norm = f"norm{i}" if c.lrn and i in c.lrn_after else None
        same_map = f"rnorm{i}" if norm and i in c.same_map_norm_after else None
        pool = f"pool{i}" if i in c.pool_after else None
        if norm:
            self.add_module(norm, LocalResponseNorm(c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k, convention=c.lrn_convention, groups=c.lrn_groups))
        if same_map:
            self.add_module(same_map, SameMapResponseNorm(c.same_map_size, c.same_map_scale, c.same_map_pow, c.same_map_min_div))
        self.add_module(f"relu{i}", ACTIVATIONS[c.activation]())
        if pool:
            self.add_module(pool, nn.MaxPool2d(c.pool_kernel, c.pool_stride, ceil_mode=ceil))
            side = c.output_size(side, c.pool_kernel, c.pool_stride, 0)
        stage = {
            "after_relu": [f"relu{i}", norm, same_map, pool],
            "before_relu": [norm, same_map, f"relu{i}", pool],
            "after_pool": [f"relu{i}", pool, norm, same_map],
        }[position]
        return [m for m in (pad, f"conv{i}", bn, *stage) if m], side

    def _add_hidden_fcs(self) -> tuple[list[str], int]:
        """fc6, fc7 with their ReLUs and dropout (on their outputs, or inputs for ``dropout_position="before"``):
        their names in forward order, and the width the head reads."""
        c = self.config
        channels, side = c.feature_size()
        widths = [channels * side * side, *c.hidden]
        order: list[str] = []
        for j, (w_in, w_out) in enumerate(zip(widths, widths[1:]), start=len(c.convs) + 1):
            drop = f"drop{j}" if c.dropout > 0 else None
            self.add_module(f"fc{j}", nn.Linear(w_in, w_out))
            self.add_module(f"relu{j}", ACTIVATIONS[c.activation]())
            if drop:
                self.add_module(drop, dropout_layer(c.dropout, c.dropout_scaling))
            if c.dropout_position == "before":
                order += [m for m in (drop, f"fc{j}", f"relu{j}") if m]
            else:
                order += [m for m in (f"fc{j}", f"relu{j}", drop) if m]
        return order, widths[-1]

    # -- weights ---------------------------------------------------------------------------------
    def weighted_layers(self) -> dict[str, nn.Module]:
        """The conv and FC layers by their paper names, in order: what the initialisers fill."""
        return {n: m for n, m in self.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))}

    def reset_parameters(self) -> None:
        initialise(self.weighted_layers(), self.config.init)

    # -- forward ---------------------------------------------------------------------------------
    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        side = self.config.input_size
        if self.config.output_rule == "ceil" and tuple(x.shape[-2:]) != (side, side):
            # the pad{i} layers are sized for one input: another would run and mean something else
            raise ValueError(f"{self.name} takes {side}×{side} input (its padding is cuda-convnet's for that size), got {x.shape[-2]}×{x.shape[-1]}")
        for name in self.conv_order:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_conv(x)
        expected = self.fc6_inputs
        if x[0].numel() != expected:
            got = "×".join(str(d) for d in x.shape[1:])
            raise ValueError(
                f"{self.name}: the conv stages give {got} = {x[0].numel()} features but the first FC layer "
                f"expects {expected}; this model takes {self.config.input_size}×{self.config.input_size} input"
            )
        x = torch.flatten(x, 1)
        for name in self.fc_order:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head_name)(self.forward_features(x))

    @property
    def fc6_inputs(self) -> int:
        return getattr(self, f"fc{len(self.config.convs) + 1}").in_features


def half_width(convs: tuple[Conv, ...]) -> tuple[Conv, ...]:
    """One tower of a two-tower net (§3.2): half the kernels of every layer, no groups."""
    return tuple(replace(c, out_channels=c.out_channels // 2, groups=1) for c in convs)


def with_towers_and_pooling(config: AlexNetConfig, *, towers: int = 2, pooling: str = "overlapping") -> AlexNetConfig:
    """``config`` with §3's two structural options, which change several fields at once (what the
    ``towers`` and ``pooling`` options of the paper's builders apply; ``alexnet ablate`` varies them).

    ``towers=1``: the half-width single-GPU net the paper compares against (§3.2: 1.7 / 1.2 points
    worse top-1 / top-5): half the kernels of every layer and half the FC units, no groups.
    ``pooling="non-overlapping"``: 2×2 windows with stride 2 instead of 3×3 with stride 2 (§3.4;
    the output sizes are the same at 227).
    """
    if towers not in (1, 2):
        raise ValueError(f"towers={towers} must be 1 or 2")
    if pooling not in ("overlapping", "non-overlapping"):
        raise ValueError(f"pooling={pooling!r} must be 'overlapping' or 'non-overlapping'")
    if towers == 1:
        config = replace(config, convs=half_width(config.convs), hidden=tuple(h // 2 for h in config.hidden), lrn_groups=1)
    if pooling == "non-overlapping":
        config = replace(config, pool_kernel=2, pool_stride=2)
    return config

