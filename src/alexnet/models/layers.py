"""Building blocks of the AlexNet family besides the LRN (:mod:`alexnet.models.lrn`): dropout in the
paper's scaling and the initialisers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.errors import not_one_of, unknown

# ---------------------------------------------------------------------------------------------
# Dropout (§4.2) in the paper's scaling and in the inverted one every framework uses.

DROPOUT_SCALINGS: tuple[str, ...] = ("paper", "inverted")


class PaperDropout(nn.Dropout):
    """Dropout as §4.2 describes it: in training each output is zeroed with probability p and the
    others pass *unscaled*; at test time "we use all the neurons but multiply their outputs by 0.5"
    (by 1 − p).

    ``nn.Dropout`` (and Caffe's, torchvision's, d2l's) is *inverted*: the survivors are multiplied by
    1/(1 − p) in training and nothing is done at test time. The two have the same expected output, but
    not the same training: with the paper's init (biases of 1 in fc6/fc7, so the fc6/fc7 codes are
    all positive) inverted dropout doubles what fc7 sees, and fc8 sees twice fc7's larger output: at
    init the fc7 code's squared norm is 7× the paper's and the first SGD step moves the logits 14× as
    far, enough at ε = 0.01 to blow the first steps up and leave the loss flat at ln(classes)
    (docs/TRAINING.md, measured). With this scaling the paper's init and ε
    learn. Weights trained one way run the other way after halving the weights of the layers that read
    the dropped outputs (fc7 and fc8 in the paper's placement).

    In training it draws the same mask as ``nn.Dropout`` with the same generator state
    (``F.dropout`` then × (1 − p): exact for p = 0.5).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.dropout(x, self.p, True) * (1.0 - self.p)
        return x * (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, scaling=paper"


def dropout_layer(p: float, scaling: str) -> nn.Dropout:
    """The dropout module for ``scaling`` "paper" (:class:`PaperDropout`) or "inverted" (``nn.Dropout``)."""
    if scaling not in DROPOUT_SCALINGS:
        raise ValueError(not_one_of("dropout scaling ", scaling, DROPOUT_SCALINGS))
    return PaperDropout(p) if scaling == "paper" else nn.Dropout(p)


# ---------------------------------------------------------------------------------------------
# Initialisers. Each takes the model's named layers (name -> Conv2d/Linear) and fills them in place.

InitName = Literal["paper", "alexnet2012", "bvlc_alexnet", "caffenet", "xavier", "kaiming", "torch"]
INITS: tuple[str, ...] = ("paper", "alexnet2012", "bvlc_alexnet", "caffenet", "xavier", "kaiming", "torch")


@torch.no_grad()
def init_gaussian(layers: dict[str, nn.Module], std: dict[str, float], bias: dict[str, float]) -> None:
    """Weights ~ N(0, std[name]²) and constant biases, the form of every Caffe/cuda-convnet filler."""
    for name, layer in layers.items():
        nn.init.normal_(layer.weight, mean=0.0, std=std[name])
        nn.init.constant_(layer.bias, bias.get(name, 0.0))


def paper_init(layers: dict[str, nn.Module]) -> None:
    """§5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 in the others.

    The bias of 1 "accelerates the early stages of learning by providing the ReLUs with positive
    inputs". Layers are addressed by the paper's names, so the same function serves every variant
    that uses them (a model without, say, conv4 simply has no entry for it).
    """
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, {n: 0.01 for n in layers}, {n: 1.0 for n in layers if n in ones})


def alexnet2012_init(layers: dict[str, nn.Module]) -> None:
    """Krizhevsky's layers-145.cfg: as the paper, but conv3–conv5 weights with std 0.03 (reference §3)."""
    std = {n: (0.03 if n in {"conv3", "conv4", "conv5"} else 0.01) for n in layers}
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, std, {n: 1.0 for n in layers if n in ones})


def bvlc_alexnet_init(layers: dict[str, nn.Module]) -> None:
    """Caffe's models/bvlc_alexnet fillers: std 0.01, fc6/fc7 std 0.005; biases 0.1 where the paper has 1."""
    std = {n: (0.005 if n in {"fc6", "fc7"} else 0.01) for n in layers}
    point_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, std, {n: 0.1 for n in layers if n in point_one})


def caffenet_init(layers: dict[str, nn.Module]) -> None:
    """Caffe's bvlc_reference_caffenet fillers: std 0.01, fc6/fc7 std 0.005; biases 1 as in the paper."""
    std = {n: (0.005 if n in {"fc6", "fc7"} else 0.01) for n in layers}
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    init_gaussian(layers, std, {n: 1.0 for n in layers if n in ones})


@torch.no_grad()
def xavier_init(layers: dict[str, nn.Module]) -> None:
    """d2l's ``init_cnn``: Xavier-uniform weights for every Conv2d and Linear; biases keep torch's default."""
    for layer in layers.values():
        nn.init.xavier_uniform_(layer.weight)


@torch.no_grad()
def kaiming_init(layers: dict[str, nn.Module]) -> None:
    """He-normal weights (fan-in, ReLU gain) and zero biases: keeps activations at unit scale in small nets."""
    for layer in layers.values():
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)


def torch_init(layers: dict[str, nn.Module]) -> None:
    """PyTorch's layer defaults (Kaiming-uniform with a=√5), which torchvision's AlexNet keeps."""
    for layer in layers.values():
        layer.reset_parameters()


INITIALISERS = {
    "paper": paper_init,
    "alexnet2012": alexnet2012_init,
    "bvlc_alexnet": bvlc_alexnet_init,
    "caffenet": caffenet_init,
    "xavier": xavier_init,
    "kaiming": kaiming_init,
    "torch": torch_init,
}


def initialise(layers: dict[str, nn.Module], scheme: str) -> None:
    """Apply the named scheme (one of ``INITS``) to the model's conv and fc layers."""
    try:
        fn = INITIALISERS[scheme]
    except KeyError:
        raise ValueError(unknown("init", scheme, INITS)) from None
    fn(layers)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch's floor rule, 1 + ⌊(size + 2p − k) / s⌋ (Caffe's pooling rounds up; AlexNet's sizes divide evenly)."""
    return 1 + math.floor((size + 2 * padding - kernel) / stride)
