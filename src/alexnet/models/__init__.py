"""The AlexNet family: ``create(name, num_classes, **options)``, ``names()``, and the building blocks.

Besides AlexNet's variants (``zoo``), the registry holds the networks AlexNet is taught among
(docs/FAMILY.md): ``lenet`` before it; ``vgg11``…``vgg19``, ``nin``, ``googlenet`` and ``alexnet_bn``
after it, and ``resnet18``/``resnet34``/``resnet50``, ``densenet121`` from d2l's "modern CNNs" chapter,
each with its d2l.ai Fashion-MNIST form (``*_d2l``); and cuda-convnet's CIFAR-10 nets of §3
(``cifar_conv_local``, ``cifar_18pct``, ``cifar_80sec``).

>>> from alexnet import models
>>> model = models.create("alexnet")          # the paper's network, 60,965,224 parameters
>>> small = models.create("alexnet_small", num_classes=10, lrn=False)   # an ablation is an option
"""

# The registry lists models in the order they register: AlexNet's variants, then the family by date.
# isort: off
from . import zoo as _zoo  # noqa: F401
from . import lenet as _lenet  # noqa: F401
from . import vgg as _vgg  # noqa: F401
from . import nin as _nin  # noqa: F401
from . import googlenet as _googlenet  # noqa: F401
from . import resnet as _resnet  # noqa: F401
from . import densenet as _densenet  # noqa: F401
from . import cudaconvnet as _cudaconvnet  # noqa: F401  (cuda-convnet's CIFAR-10 nets of §3)
# isort: on
from .alexnet import AlexNet, AlexNetConfig, Conv, ablate
from .layers import LocalResponseNorm, initialise, paper_init
from .registry import check_options, create, entry, names, register
from .summary import Summary, summarize
from .towers import TwoTowerAlexNet

__all__ = [
    "AlexNet", "AlexNetConfig", "Conv", "LocalResponseNorm", "Summary", "TwoTowerAlexNet",
    "ablate", "check_options", "create", "entry", "initialise", "names", "paper_init", "register", "summarize",
]
