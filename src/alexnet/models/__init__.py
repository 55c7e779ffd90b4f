"""The AlexNet family: ``create(name, num_classes, **options)``, ``names()``, and the building blocks.

>>> from alexnet import models
>>> model = models.create("alexnet")          # the paper's network, 60,965,224 parameters
>>> small = models.create("alexnet_small", num_classes=10, lrn=False)   # an ablation is an option
"""

from . import zoo as _zoo  # noqa: F401  (registers the variants)
from .alexnet import AlexNet, AlexNetConfig, Conv, ablate
from .layers import LocalResponseNorm, initialise, paper_init
from .registry import create, entry, names, register
from .summary import Summary, summarize
from .towers import TwoTowerAlexNet

__all__ = [
    "AlexNet", "AlexNetConfig", "Conv", "LocalResponseNorm", "Summary", "TwoTowerAlexNet",
    "ablate", "create", "entry", "initialise", "names", "paper_init", "register", "summarize",
]
