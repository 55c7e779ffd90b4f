"""GoogLeNet, Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions"): parallel branches.

An Inception module (§4, Fig. 2b) runs four branches on the same input and concatenates their maps:
a 1×1 conv; a 1×1 reduction then a 3×3 conv; a 1×1 reduction then a 5×5 conv; 3×3/1 max pooling
then a 1×1 projection. Nine modules (3a–5b, Table 1) on a stem of 7×7/2 and 3×3 convolutions, then
global average pooling, dropout and one linear layer: 22 layers, 6.6–7.0 M parameters, 1.5 G MACs.

Three forms, configurations of one class (``form=`` on ``googlenet``):

* ``"torchvision"`` (the default, loads ``torchvision.models.googlenet`` weights): every conv is
  conv (no bias) → BatchNorm(eps 0.001) → ReLU, which the 2014 network did not have; the "5×5"
  branch is a 3×3 conv (a slip kept in torchvision for its weights); the stem has no LRN; max
  pooling rounds up (``ceil_mode``); pool4 is 2×2/2; dropout 0.2; auxiliary heads average-pool
  adaptively to 4×4. 6,624,904 parameters at 1000 classes without auxiliary heads.
* ``"paper"`` (Table 1 and Caffe's bvlc_googlenet): convs with biases and no BatchNorm, LRN
  (n=5, α=1e-4, β=0.75, k=1) after pool1 and after conv3, true 5×5 convs, pool4 3×3/2, dropout
  0.4, auxiliary heads average-pool 5×5/3. 6,998,552 parameters.
* ``"d2l"`` (``googlenet_d2l``): d2l.ai's Fashion-MNIST net: no BatchNorm, no LRN, 5×5 convs, max
  pooling 3×3/2 padded by 1 and rounded down, no dropout, 1×96×96 input.

Names follow torchvision (``conv1`` … ``conv3``, ``maxpool1`` … ``maxpool4``, ``inception3a`` …
``inception5b`` with ``branch1`` … ``branch4``, ``aux1``, ``aux2``, ``fc``), so torchvision's state
dict loads as it is. ``forward_features`` is the 1024-d global average (before dropout).

Auxiliary heads (§5: on 4a's and 4d's outputs, their losses weighted 0.3 in training, dropped at
inference) are off by default (``aux_logits=False``). With them on, ``forward`` in training mode
returns :class:`GoogLeNetOutputs` ``(logits, aux_logits2, aux_logits1)``, the namedtuple and field
order of torchvision, so code written for torchvision's GoogLeNet works; in eval mode it always
returns the logits tensor, so evaluation, prediction and export never see the heads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from alexnet.errors import not_one_of
from alexnet.models.base import ConfiguredNet, classification_loss
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.registry import register

AUX_LOSS_WEIGHT = 0.3  # §5: the auxiliary losses' weight in the total training loss


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


# Table 1: (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj)
INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
GOOGLENET_INITS = ("torchvision", "xavier", "torch")


@dataclass(frozen=True)
class GoogLeNetConfig:
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int = 224
    batch_norm: bool = True  # conv → BN → ReLU (torchvision); False: conv with bias → ReLU (the paper)
    lrn: bool = False  # LRN after pool1 and after conv3 (the paper, Caffe)
    branch3_kernel: int = 3  # the "5×5" branch: 3 in torchvision, 5 in the paper and d2l
    ceil_mode: bool = True  # max pooling rounds up (Caffe, torchvision)
    pool_padding: int = 0  # d2l pads its 3×3/2 poolings by 1 and rounds down
    pool4_kernel: int = 2  # torchvision 2×2/2; the paper 3×3/2
    dropout: float = 0.2  # before fc: 0.2 torchvision, 0.4 the paper
    aux_logits: bool = False
    aux_dropout: float = 0.7
    aux_pool: str = "adaptive"  # "adaptive": to 4×4 (torchvision); "paper": average 5×5/3
    init: str = "torchvision"  # truncated N(0, 0.01²) in [−2, 2] for convs and FC

    def __post_init__(self) -> None:
        if self.init not in GOOGLENET_INITS:
            raise ValueError(not_one_of("init=", self.init, GOOGLENET_INITS))
        if self.aux_pool not in ("adaptive", "paper"):
            raise ValueError(not_one_of("aux_pool=", self.aux_pool, ("adaptive", "paper")))
        for key in ("dropout", "aux_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key}={getattr(self, key)} must be in [0, 1)")
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be at least 1")


FORMS = {
    "torchvision": GoogLeNetConfig(),
    "paper": GoogLeNetConfig(batch_norm=False, lrn=True, branch3_kernel=5, pool4_kernel=3, dropout=0.4,
                             aux_pool="paper", init="xavier"),
    "d2l": GoogLeNetConfig(in_channels=1, input_size=96, num_classes=10, batch_norm=False, branch3_kernel=5,
                           ceil_mode=False, pool_padding=1, pool4_kernel=3, dropout=0.0, init="xavier"),
}


class ConvUnit(nn.Module):
    """conv → [BatchNorm] → ReLU; torchvision's ``BasicConv2d`` keys (``conv.weight``, ``bn.*``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=not batch_norm)
        if batch_norm:
            self.bn = nn.BatchNorm2d(out_ch, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.relu(x)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels (§4, Fig. 2b)."""

    def __init__(self, in_ch: int, widths: tuple[int, ...], *, branch3_kernel: int, ceil_mode: bool, batch_norm: bool) -> None:
        super().__init__()
        c1, c3r, c3, c5r, c5, proj = widths
        unit = lambda i, o, k: ConvUnit(i, o, k, padding=k // 2, batch_norm=batch_norm)
        self.branch1 = unit(in_ch, c1, 1)
        self.branch2 = nn.Sequential(unit(in_ch, c3r, 1), unit(c3r, c3, 3))
        self.branch3 = nn.Sequential(unit(in_ch, c5r, 1), unit(c5r, c5, branch3_kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1, ceil_mode=ceil_mode), unit(in_ch, proj, 1))
        self.out_channels = c1 + c3 + c5 + proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """§5's auxiliary classifier: average pool to 4×4, 1×1 conv 128, FC 1024, dropout 0.7, FC classes."""

    def __init__(self, in_ch: int, c: GoogLeNetConfig) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4) if c.aux_pool == "adaptive" else nn.AvgPool2d(5, 3)
        self.conv = ConvUnit(in_ch, 128, 1, batch_norm=c.batch_norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(c.aux_dropout)
        self.fc2 = nn.Linear(1024, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(ConfiguredNet):
    """Inception v1 configured by a :class:`GoogLeNetConfig`; see the module docstring for the forms."""

    head_name = "fc"  # the auxiliary heads (training only) are not the classifier

    def __init__(self, config: GoogLeNetConfig, *, name: str = "googlenet") -> None:
        super().__init__()
        self.config, self.name = config, name
        c = config
        bn = c.batch_norm
        pool = lambda k=3: nn.MaxPool2d(k, 2, padding=c.pool_padding, ceil_mode=c.ceil_mode)
        self.conv1 = ConvUnit(c.in_channels, 64, 7, stride=2, padding=3, batch_norm=bn)
        self.maxpool1 = pool()
        if c.lrn:
            self.norm1 = LocalResponseNorm(5, 1e-4, 0.75, 1.0)
        self.conv2 = ConvUnit(64, 64, 1, batch_norm=bn)
        self.conv3 = ConvUnit(64, 192, 3, padding=1, batch_norm=bn)
        if c.lrn:
            self.norm2 = LocalResponseNorm(5, 1e-4, 0.75, 1.0)
        self.maxpool2 = pool()
        in_ch = 192
        for stage in INCEPTIONS:
            module = Inception(in_ch, INCEPTIONS[stage], branch3_kernel=c.branch3_kernel, ceil_mode=c.ceil_mode, batch_norm=bn)
            self.add_module(f"inception{stage}", module)
            in_ch = module.out_channels
            if stage == "3b":
                self.maxpool3 = pool()
            elif stage == "4e":
                self.maxpool4 = pool(c.pool4_kernel) if c.pool4_kernel == 3 else nn.MaxPool2d(2, 2, ceil_mode=c.ceil_mode)
        if c.aux_logits:
            self.aux1 = InceptionAux(512, c)  # on 4a's output
            self.aux2 = InceptionAux(528, c)  # on 4d's output
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(in_ch, c.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.config.init == "torchvision":
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif self.config.init == "xavier":  # Caffe's bvlc_googlenet fillers and d2l's init_cnn
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                else:
                    m.reset_parameters()

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(1024-d features, aux1 logits, aux2 logits); the aux logits only in training with the heads on."""
        aux = self.config.aux_logits and self.training
        x = self.maxpool1(self.conv1(x))
        if self.config.lrn:
            x = self.norm1(x)
        x = self.conv3(self.conv2(x))
        if self.config.lrn:
            x = self.norm2(x)
        x = self.maxpool3(self.inception3b(self.inception3a(self.maxpool2(x))))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if aux else None
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(x))))
        return torch.flatten(self.avgpool(x), 1), aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        features, aux1, aux2 = self._forward(x)
        logits = self.fc(self.dropout(features))
        if self.config.aux_logits and self.training:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits

    def loss(self, outputs: torch.Tensor | GoogLeNetOutputs, labels: torch.Tensor, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, loss): in training mode with auxiliary heads, Szegedy et al. §5 add each head's loss × 0.3."""
        if not isinstance(outputs, GoogLeNetOutputs):
            return classification_loss(outputs, labels, label_smoothing)
        logits, loss = classification_loss(outputs.logits, labels, label_smoothing)
        for aux in (outputs.aux_logits1, outputs.aux_logits2):
            if aux is not None:
                loss = loss + AUX_LOSS_WEIGHT * classification_loss(aux, labels, label_smoothing)[1]
        return logits, loss


def _form(form: str, **changes) -> GoogLeNetConfig:
    if form not in FORMS:
        raise ValueError(not_one_of("form=", form, FORMS))
    return replace(FORMS[form], **{k: v for k, v in changes.items() if v is not None})


@register("GoogLeNet / Inception v1 (Szegedy et al. 2015): torchvision's BN form; form='paper' the 2014 net; 224 input")
def googlenet(
    *,
    num_classes: int = 1000,
    form: str = "torchvision",
    aux_logits: bool = False,
    dropout: float | None = None,
    init: str | None = None,
) -> nn.Module:
    """``form`` "torchvision" or "paper"; ``dropout`` and ``init`` default to the form's own (None)."""
    if form not in ("torchvision", "paper"):
        raise ValueError(not_one_of("form=", form, ("torchvision", "paper"), more=" (d2l's form is googlenet_d2l)"))
    config = _form(form, num_classes=num_classes, aux_logits=aux_logits, dropout=dropout, init=init)
    return GoogLeNet(config, name="googlenet")


@register("d2l.ai's GoogLeNet for Fashion-MNIST: 1×96×96, no BatchNorm, no LRN, 5×5 branches, Xavier init")
def googlenet_d2l(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 96, batch_norm: bool = False,
                  aux_logits: bool = False, init: str = "xavier") -> nn.Module:
    """``input_size``: d2l's 96, or smaller (32 leaves 1×1 maps in inception 5; global pooling follows);
    ``batch_norm``: torchvision's conv unit (conv without bias → BN → ReLU) in every branch."""
    config = _form("d2l", num_classes=num_classes, in_channels=in_channels, input_size=input_size, batch_norm=batch_norm,
                   aux_logits=aux_logits, init=init)
    return GoogLeNet(config, name="googlenet_d2l")
