"""The model contract: what every registered network provides, and all that the commands above ask of one.

Every builder in the registry returns a :class:`ConfiguredNet` (tests/test_model_contract.py walks
``models.names()`` to hold them to it). The contract, with its types:

* ``name: str``: its registry name (``"alexnet"``, ``"nin_d2l"``), what a checkpoint records;
* ``config``: a config dataclass with ``input_size``, ``in_channels`` and ``num_classes`` fields,
  read through the properties :attr:`~ConfiguredNet.input_size` (the square side it takes),
  :attr:`~ConfiguredNet.in_channels` and :attr:`~ConfiguredNet.num_classes`;
* ``head_name: str``: the child module whose output is the logits (``fc8``; ``fc`` in ResNet and
  GoogLeNet; ``classifier`` in DenseNet; NiN's last 1×1 conv ``cccp…``, whose maps are averaged
  into the logits). :func:`classifier_head` is the one place that looks it up;
* ``forward(x) -> Tensor``: [N, C, S, S] → [N, num_classes] logits in eval mode (in training mode,
  whatever :meth:`~ConfiguredNet.loss` takes: GoogLeNet's auxiliary outputs);
* ``forward_features(x) -> Tensor``: [N, D], the last hidden code (fc7 for AlexNet, §6.1);
* ``loss(outputs, labels, label_smoothing) -> (logits, loss)``: the training loss of ``forward``'s
  output, so the training step never needs to know which model it trains;
* :meth:`~ConfiguredNet.layer_order` and :meth:`~ConfiguredNet.last_hidden`: child module names in
  forward order, and the one whose output ``forward_features`` returns (what ``--layer`` reads);
  :class:`StagedNet` gives both for the networks that run by ``conv_order`` and ``fc_order`` lists.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def classification_loss(outputs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, cross-entropy in fp32) of plain logits."""
    return outputs, F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)


class ConfiguredNet(nn.Module):
    """The base of every registered network: the contract of the module docstring."""

    config: Any  # a config dataclass with input_size, in_channels and num_classes
    name: str  # the registry name, set by the builder
    head_name: str  # the child module whose output is the logits, set by the network's __init__

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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D]: the last hidden code, the input of the head's layer (each network defines it)."""
        raise NotImplementedError

    def loss(self, outputs: Any, labels: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, training loss) of what ``forward`` returned for ``labels``."""
        return classification_loss(outputs, labels, label_smoothing)

    def layer_order(self) -> list[str]:
        """Child module names in the order ``forward`` runs them: registration order, unless a network
        that registers out of order (AlexNet's ``norm_position``) says otherwise."""
        return [name for name, _ in self.named_children()]

    def last_hidden(self) -> str | None:
        """The child whose output ``forward_features`` returns (AlexNet: fc7's ReLU or dropout), or None
        when ``forward_features`` ends in an operation of no child (pooling and flatten in ResNet)."""
        return None


class StagedNet(ConfiguredNet):
    """A network whose forward runs its children by two name lists, then the head: ``conv_order`` (the
    conv stages up to the flatten) and ``fc_order`` (the hidden FC layers with their ReLUs and
    dropout). AlexNet and VGG, whose modules register in another order than they run."""

    conv_order: list[str]
    fc_order: list[str]

    def layer_order(self) -> list[str]:
        return [*self.conv_order, *self.fc_order, self.head_name]

    def last_hidden(self) -> str | None:
        return self.fc_order[-1] if self.fc_order else None


def classifier_head(model: ConfiguredNet) -> str:
    """The name of the layer that gives the logits: what fine-tuning re-initialises and keeps trainable
    under ``--freeze features``, what ``features`` lists last and what the explorer shows whole (one
    tower). fc8 for AlexNet; for NiN its last 1×1 conv, although it is no ``nn.Linear``."""
    return model.head_name
