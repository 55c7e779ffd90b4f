"""torchvision's AlexNet state dict ↔ ``alexnet_owt``.

torchvision names its layers by position in two ``nn.Sequential``s (``features.0`` … ``classifier.6``);
ours carry the paper's names. The layers and shapes are otherwise identical, so the conversion is a
renaming, checked tensor by tensor in the manner of nanoGPT's ``from_pretrained``: every expected
tensor present with the right shape, nothing left over.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import AlexNetError

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


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Every expected tensor present with its shape, nothing left over; the error names the tensor."""
    for key, ref in expected.items():
        if key not in state:
            raise AlexNetError(f"{source}: tensor {key!r} {tuple(ref.shape)} is missing")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise AlexNetError(f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise AlexNetError(f"{source}: unexpected tensors {', '.join(extra)}")


def from_torchvision(state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str = "state dict") -> None:
    """Load torchvision AlexNet weights into an ``alexnet_owt`` model in place, after checking every shape."""
    ours = rename_keys(state, TORCHVISION_TO_OURS)
    check_state_dict(ours, model.state_dict(), source)
    model.load_state_dict(ours)


def to_torchvision(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An ``alexnet_owt`` model's weights under torchvision's keys (for ``torchvision.models.alexnet``)."""
    back = {v: k for k, v in TORCHVISION_TO_OURS.items()}
    return {f"{back[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v for k, v in model.state_dict().items()}
