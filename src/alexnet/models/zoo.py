"""The registered AlexNet variants (reference §1, §7), each a configuration of one class.

Every builder takes keyword-only options; the paper's ablations (§3) are options of the nets that
have the paper's design (``alexnet``, ``bvlc_alexnet``, ``caffenet``, ``alexnet_small``):

* ``activation``: "relu" (§3.1) or "tanh" (Fig. 1's comparison)
* ``lrn``: local response normalisation on or off (§3.3); ``lrn_convention`` "as_run" (α/n) or
  "as_printed" (α), see :mod:`alexnet.models.lrn`
* ``batch_norm``: BatchNorm2d after every conv, before its ReLU (``alexnet_bn`` has it in place of
  LRN); with ``lrn`` the norm study compares LRN (``lrn=True``), BN (``lrn=False, batch_norm=True``)
  and neither
* ``pooling``: "overlapping" 3/2 (§3.4) or "non-overlapping" 2/2
* ``dropout``: the probability on fc6 and fc7 (§4.2); 0 removes the layers; ``dropout_scaling``
  "paper" (§4.2: survivors unscaled, × (1 − p) at test; ``alexnet``'s default) or "inverted"
  (PyTorch's, Caffe's: survivors × 1/(1 − p) in training; the Caffe and small nets' default)
* ``towers``: 2 (the two-GPU connectivity as groups) or 1 (the half-width single-GPU net of §3.2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from alexnet.models.alexnet import AlexNet, AlexNetConfig, Conv, with_towers_and_pooling
from alexnet.models.registry import register
from alexnet.models.towers import place_towers


def _paper_design(
    config: AlexNetConfig,
    name: str,
    *,
    activation: str,
    lrn: bool,
    lrn_convention: str,
    pooling: str,
    dropout: float,
    towers: int,
    init: str,
    batch_norm: bool = False,
    dropout_scaling: str = "paper",
) -> AlexNet:
    config = replace(config, activation=activation, lrn=lrn, lrn_convention=lrn_convention, dropout=dropout, init=init,
                     batch_norm=batch_norm, dropout_scaling=dropout_scaling)
    return AlexNet(with_towers_and_pooling(config, towers=towers, pooling=pooling), name=name)


@register("the paper's network (§3.5): two towers as groups, LRN k=2 after ReLU, 227 input")
def alexnet(
    *,
    num_classes: int = 1000,
    activation: str = "relu",
    lrn: bool = True,
    lrn_convention: str = "as_run",
    pooling: str = "overlapping",
    dropout: float = 0.5,
    towers: int = 2,
    init: str = "paper",
    batch_norm: bool = False,
    dropout_scaling: str = "paper",
    devices: Sequence[str | torch.device] | None = None,
) -> nn.Module:
    """The paper's network. ``devices=(d0, d1)`` places the two towers on two devices (§3.2)."""
    model = _paper_design(
        AlexNetConfig(num_classes=num_classes), "alexnet",
        activation=activation, lrn=lrn, lrn_convention=lrn_convention, pooling=pooling,
        dropout=dropout, towers=towers, init=init, batch_norm=batch_norm, dropout_scaling=dropout_scaling,
    )
    return place_towers(model, devices)


@register("the paper's network with BatchNorm after every conv in place of LRN (227 input, paper widths)")
def alexnet_bn(
    *,
    num_classes: int = 1000,
    activation: str = "relu",
    pooling: str = "overlapping",
    dropout: float = 0.5,
    towers: int = 2,
    init: str = "paper",
    dropout_scaling: str = "paper",
) -> nn.Module:
    """``alexnet`` with ``lrn=False, batch_norm=True``: bn1…bn5 after conv1…conv5, before each ReLU.

    The FC layers keep the paper's dropout and have no BatchNorm1d, so against ``alexnet`` one thing
    changes. 60,967,976 parameters: the paper's 60,965,224 plus γ and β of its 1,376 conv maps (the
    running means and variances are buffers, not parameters).
    """
    return _paper_design(AlexNetConfig(num_classes=num_classes), "alexnet_bn", activation=activation, lrn=False,
                         lrn_convention="as_run", pooling=pooling, dropout=dropout, towers=towers, init=init,
                         batch_norm=True, dropout_scaling=dropout_scaling)


@register("Caffe's bvlc_alexnet: the paper's order, LRN k=1 across both towers, biases 0.1")
def bvlc_alexnet(
    *,
    num_classes: int = 1000,
    activation: str = "relu",
    lrn: bool = True,
    pooling: str = "overlapping",
    dropout: float = 0.5,
    towers: int = 2,
    init: str = "bvlc_alexnet",
    batch_norm: bool = False,
    dropout_scaling: str = "inverted",  # Caffe's DropoutLayer scales the survivors in training
) -> nn.Module:
    config = AlexNetConfig(num_classes=num_classes, lrn_k=1.0, lrn_groups=1)
    return _paper_design(config, "bvlc_alexnet", activation=activation, lrn=lrn, lrn_convention="as_run",
                         pooling=pooling, dropout=dropout, towers=towers, init=init, batch_norm=batch_norm,
                         dropout_scaling=dropout_scaling)


@register("Caffe's bvlc_reference_caffenet: pooling before LRN, LRN k=1, Caffe's fillers")
def caffenet(
    *,
    num_classes: int = 1000,
    activation: str = "relu",
    lrn: bool = True,
    pooling: str = "overlapping",
    dropout: float = 0.5,
    towers: int = 2,
    init: str = "caffenet",
    batch_norm: bool = False,
    dropout_scaling: str = "inverted",  # Caffe's DropoutLayer scales the survivors in training
) -> nn.Module:
    config = AlexNetConfig(num_classes=num_classes, lrn_k=1.0, lrn_groups=1, norm_position="after_pool")
    return _paper_design(config, "caffenet", activation=activation, lrn=lrn, lrn_convention="as_run",
                         pooling=pooling, dropout=dropout, towers=towers, init=init, batch_norm=batch_norm,
                         dropout_scaling=dropout_scaling)


@register("Krizhevsky's released ImageNet cfg (cuda-convnet2): 224 input, ceil sizes, LRN before conv1's ReLU, same-map norm")
def alexnet_cudaconvnet(
    *,
    num_classes: int = 1000,
    activation: str = "relu",
    lrn: bool = True,
    same_map_norm: bool = True,
    dropout: float = 0.5,
    dropout_scaling: str = "inverted",  # type=dropout: survivors ×1/keep in training (layer.cuh)
    init: str = "alexnet2012",
    devices: Sequence[str | torch.device] | None = None,
) -> nn.Module:
    """The network of akrizhevsky/cuda-convnet2 ``layers/layers-imagenet-2gpu-model.cfg`` with the
    normalisation parameters of ``layers/layer-params-imagenet-2gpu-model.cfg`` (reference §3).

    * 224×224 input; conv1 11×11/4 without padding gives 55×55 because cuda-convnet rounds output sizes
      up (``layer.py``: ``1 + ceil((2·padding + imgSize − filterSize) / stride)``): the last column of
      windows reads three columns of zeros past the image (``pad1``). The rest of the geometry is the
      paper's (27, 13, 13, 13, 6), and so are the 60,965,224 parameters.
    * conv1 has no neuron: its ``cmrnorm`` (size 5, scale 1e-4 ÷ size, pow 0.75, minDiv 2, per tower of
      48 maps) sees the pre-ReLU maps and the ReLU sits on pool1 (max pooling and ReLU commute, so
      ``norm1 relu1 pool1`` is the same function). conv2: ReLU, ``cmrnorm`` (the same), then the same-map
      ``rnorm`` (``cnorm2a``/``cnorm2b``: 5×5, scale 0.001 ÷ size², pow 0.75, minDiv 1), then pool2.
      conv5's ReLU sits on pool3 in the cfg: the same function again.
    * conv3 (``inputs=pool2a,pool2b``) and the FC layers read both towers; conv2, conv4, conv5 one
      (groups 2). ``fc2048bb`` lists its inputs as ``dropout1b,dropout1a``: a permutation of fc7's
      weight columns, the same family of functions.
    * init ``alexnet2012``: std 0.01, conv3–conv5 std 0.03 (``initW=0.03``), biases 1 in conv2, conv4,
      conv5, fc6, fc7 (``initB=1``); dropout ``type=dropout`` is inverted (``DropoutSmallerThanOperator``
      returns 1/keep for the survivors, ``layer.cuh``).

    ``same_map_norm=False`` and ``lrn=False`` remove the norms (ablations). ``devices=(d0, d1)`` places
    the two towers as for ``alexnet``.
    """
    config = AlexNetConfig(
        num_classes=num_classes,
        input_size=224,
        activation=activation,
        lrn=lrn,
        norm_position=("before_relu", "after_relu", "after_relu", "after_relu", "after_relu"),
        same_map_norm_after=(2,) if same_map_norm else (),
        output_rule="ceil",
        dropout=dropout,
        dropout_scaling=dropout_scaling,
        init=init,
    )
    model = AlexNet(config, name="alexnet_cudaconvnet")
    return place_towers(model, devices)


@register("torchvision's AlexNet ('one weird trick', 2014): 64-192-384-256-256, no LRN, no groups, 224 input")
def alexnet_owt(*, num_classes: int = 1000, dropout: float = 0.5, init: str = "torch") -> nn.Module:
    config = AlexNetConfig(
        num_classes=num_classes,
        input_size=224,
        convs=(Conv(64, 11, 4, 2), Conv(192, 5, padding=2), Conv(384, 3, padding=1), Conv(256, 3, padding=1), Conv(256, 3, padding=1)),
        lrn=False,
        adaptive_pool=6,
        dropout=dropout,
        dropout_position="before",
        dropout_scaling="inverted",  # torchvision's nn.Dropout, so its weights load and run unchanged
        init=init,
    )
    return AlexNet(config, name="alexnet_owt")


@register("d2l.ai's AlexNet for Fashion-MNIST: 1×224×224 input, no LRN, no groups, Xavier init")
def alexnet_d2l(*, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.5, init: str = "xavier") -> nn.Module:
    config = AlexNetConfig(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=224,
        convs=(Conv(96, 11, 4, 1), Conv(256, 5, padding=2), Conv(384, 3, padding=1), Conv(384, 3, padding=1), Conv(256, 3, padding=1)),
        lrn=False,
        dropout=dropout,
        dropout_scaling="inverted",  # d2l's nn.Dropout
        init=init,
    )
    return AlexNet(config, name="alexnet_d2l")


# The paper's design at small scale: conv1 5×5 stride 1 instead of 11×11 stride 4, half the paper's
# widths or less, FC 512, the same groups, LRN and 3/2 pooling. At 32 px the maps go 32→15→7→3.
SMALL_CONVS = (
    Conv(64, 5, padding=2),
    Conv(128, 5, padding=2, groups=2),
    Conv(192, 3, padding=1),
    Conv(192, 3, padding=1, groups=2),
    Conv(128, 3, padding=1, groups=2),
)


@register("the paper's eight-layer design scaled for 28–64 px images (digits, MNIST, CIFAR-10)")
def alexnet_small(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    width: float = 1.0,
    activation: str = "relu",
    lrn: bool = True,
    lrn_convention: str = "as_run",
    pooling: str = "overlapping",
    dropout: float = 0.5,
    towers: int = 2,
    init: str = "kaiming",
    batch_norm: bool = False,
    dropout_scaling: str = "inverted",
    devices: Sequence[str | torch.device] | None = None,
) -> nn.Module:
    """``width`` scales every layer's kernels and FC units (kept even, so the towers split evenly);
    ``devices=(d0, d1)`` places the two towers as for ``alexnet``.

    ``batch_norm=True, lrn=False`` is the small net's ``alexnet_bn`` (the norm study's BN arm).

    Initialised He-normal by default: at this depth and width N(0, 0.01) shrinks the signal ~100× per
    layer, which is the flat-loss failure of reference §4; ``init="paper"`` is there to see it.
    """
    if width <= 0:
        raise ValueError(f"width={width} must be positive")
    scale = lambda n: max(2, int(round(n * width / 2)) * 2)
    convs = tuple(replace(c, out_channels=scale(c.out_channels)) for c in SMALL_CONVS)
    config = AlexNetConfig(
        num_classes=num_classes, in_channels=in_channels, input_size=input_size,
        convs=convs, hidden=(scale(512), scale(512)),
    )
    model = _paper_design(config, "alexnet_small", activation=activation, lrn=lrn, lrn_convention=lrn_convention,
                          pooling=pooling, dropout=dropout, towers=towers, init=init, batch_norm=batch_norm,
                          dropout_scaling=dropout_scaling)
    return place_towers(model, devices)

