"""torchvision's AlexNet state dict ↔ ``alexnet_owt``.

torchvision names its layers by position in two ``nn.Sequential``s (``features.0`` … ``classifier.6``);
ours carry the paper's names. The layers and shapes are otherwise identical, so the conversion is a
renaming, checked tensor by tensor in the manner of nanoGPT's ``from_pretrained``: every expected
tensor present with the right shape, nothing left over.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from alexnet import models
from alexnet.checkpoint import Checkpoint, check_state_dict, collect_provenance, from_model, read_weights_only, what_file
from alexnet.data.stats import imagenet_stats
from alexnet.data.transforms import Preprocess, pipeline
from alexnet.errors import AlexNetError
from alexnet.tools.interop.imagenet import imagenet_classes

__all__ = ["TORCHVISION_TO_OURS", "check_state_dict", "from_torchvision", "import_torchvision", "rename_keys", "to_torchvision"]

# torchvision.models.alexnet layer → our layer
TORCHVISION_TO_OURS = {
    "features.0": "conv1",
    "features.3": "conv2",
    "features.6": "conv3",
    "features.8": "conv4",
    "features.10": "conv5",
    "classifier.1": "fc6",
    "classifier.4": "fc7",
    "classifier.6": "fc8",
}


def rename_keys(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename ``LAYER.weight`` / ``LAYER.bias`` keys by ``mapping``; a key outside it is an error."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        layer, _, kind = key.rpartition(".")
        if layer not in mapping:
            raise AlexNetError(f"unexpected tensor {key!r} {tuple(tensor.shape)}: not a layer of torchvision's AlexNet")
        out[f"{mapping[layer]}.{kind}"] = tensor
    return out


def from_torchvision(state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str = "state dict") -> None:
    """Load torchvision AlexNet weights into an ``alexnet_owt`` model in place, after checking every shape."""
    ours = rename_keys(state, TORCHVISION_TO_OURS)
    check_state_dict(ours, model.state_dict(), source)
    model.load_state_dict(ours, assign=True)  # assign: also fills a model built on the meta device


def to_torchvision(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An ``alexnet_owt`` model's weights under torchvision's keys (for ``torchvision.models.alexnet``)."""
    back = {v: k for k, v in TORCHVISION_TO_OURS.items()}
    return {f"{back[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v for k, v in model.state_dict().items()}


def import_torchvision(path: str | os.PathLike) -> Checkpoint:
    """torchvision's AlexNet state dict file (e.g. ``alexnet-owt-7be5be79.pth``) → an ``alexnet_owt``
    checkpoint with ImageNet's class names and torchvision's evaluation preprocessing.

    The file is read with ``torch.load(weights_only=True)``. The preprocessing is torchvision's
    ``Resize(256)``, ``CenterCrop(224)``, ``Normalize(mean, std)`` (``imagenet_stats()``), so the
    checkpoint predicts what ``torchvision.models.alexnet`` does on the same images.
    """
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if (kind := what_file(path)) is not None:  # an image, a .npy, text: said so, not as a pickle refused
        raise AlexNetError(f"{path}: {kind.replace('not a checkpoint', 'not torchvision weights')}")
    state = read_weights_only(path)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a training checkpoint of torchvision's reference scripts
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AlexNetError(f"{path}: not a state dict (expected a mapping of tensor names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    classes = imagenet_classes()
    with torch.device("meta"):  # shapes only: no time spent on a random initialisation we overwrite
        model = models.create("alexnet_owt", num_classes=len(classes))
    try:
        from_torchvision(state, model, source=str(path))
    except AlexNetError as e:
        raise AlexNetError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    preprocess = Preprocess(pipeline("torchvision"), imagenet_stats(256)).to_state()
    return from_model(model, classes, preprocess=preprocess,
                      provenance=collect_provenance(recipe="torchvision", source=f"torchvision state dict {path.name}"))
