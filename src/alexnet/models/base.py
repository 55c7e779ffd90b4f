"""What every registered network shares: a config with its input size and channels.

Commands (``summary``, ``train``, ``eval``, ``export``, ``bench``) ask a model for ``input_size``,
``in_channels``, ``name``, ``forward_features`` and ``forward``; a network built from a config
dataclass with ``input_size`` and ``in_channels`` fields gets the first two from here.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class ConfiguredNet(nn.Module):
    config: Any  # a config dataclass with input_size and in_channels

    @property
    def input_size(self) -> int:
        """The square side of the images it takes."""
        return self.config.input_size

    @property
    def in_channels(self) -> int:
        return self.config.in_channels
