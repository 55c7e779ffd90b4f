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
from alexnet.models import zoo as _zoo  # noqa: F401
from alexnet.models import lenet as _lenet  # noqa: F401
from alexnet.models import vgg as _vgg  # noqa: F401
from alexnet.models import nin as _nin  # noqa: F401
from alexnet.models import googlenet as _googlenet  # noqa: F401
from alexnet.models import resnet as _resnet  # noqa: F401
from alexnet.models import densenet as _densenet  # noqa: F401
from alexnet.models import cudaconvnet as _cudaconvnet  # noqa: F401  (cuda-convnet's CIFAR-10 nets of §3)
# isort: on
from alexnet.models.alexnet import AlexNet, AlexNetConfig, Conv, with_towers_and_pooling
from alexnet.models.layers import initialise, paper_init
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.registry import check_options, create, entry, names, register
from alexnet.models.summary import Summary, summarize
from alexnet.models.towers import PLACEMENT_OPTIONS, TwoTowerAlexNet

__all__ = [
    "AlexNet", "AlexNetConfig", "Conv", "LocalResponseNorm", "PLACEMENT_OPTIONS", "Summary", "TwoTowerAlexNet",
    "check_options", "create", "entry", "initialise", "names", "paper_init", "register", "summarize", "with_towers_and_pooling",
]
