"""The model contract: what every command may ask of a registered network, and nothing more.

:class:`Classifier` is the contract as a ``Protocol`` (what a function accepting "a model" may
use): ``name`` (its registry name), ``input_size`` (the square side it takes), ``in_channels``,
``forward`` (logits, or what :meth:`loss` needs in training mode), ``forward_features`` (the last
hidden code: fc7 for AlexNet, §6.1) and ``loss`` (the training loss of ``forward``'s output).
:class:`ConfiguredNet` fulfils it for every network built from a config dataclass with
``input_size``, ``in_channels`` and ``num_classes`` fields; a network whose training output is not
plain logits (GoogLeNet's auxiliary heads) overrides :meth:`ConfiguredNet.loss`, so the training
step never needs to know which model it trains.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


def classification_loss(outputs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, cross-entropy in fp32) of plain logits."""
    return outputs, F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)


@runtime_checkable
class Classifier(Protocol):
    name: str
    input_size: int
    in_channels: int

    def forward(self, x: torch.Tensor) -> Any: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def loss(self, outputs: Any, labels: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]: ...


class ConfiguredNet(nn.Module):
    config: Any  # a config dataclass with input_size, in_channels and num_classes
    name: str  # the registry name, set by alexnet.models.create

    @property
    def input_size(self) -> int:
        """The square side of the images it takes."""
        return self.config.input_size

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def loss(self, outputs: Any, labels: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, training loss) of what ``forward`` returned for ``labels``."""
        return classification_loss(outputs, labels, label_smoothing)
