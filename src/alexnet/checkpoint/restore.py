"""The model a checkpoint describes, rebuilt with its weights: :func:`restore_model`.

Each tensor is checked before loading (:func:`check_state_dict`, also what ``alexnet import``
checks converted weights with): a missing, extra or mis-shaped tensor is a one-line error naming the
tensor and both shapes, so a checkpoint for another number of classes says so instead of failing
deep inside ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from alexnet import models
from alexnet.checkpoint.format import Checkpoint
from alexnet.errors import AlexNetError


def restore_model(ckpt: Checkpoint, source: str = "checkpoint") -> nn.Module:
    """The model the checkpoint describes, with its weights, in eval mode, on the CPU.

    The model is built on the meta device and takes the checkpoint's tensors themselves (they share
    memory with ``ckpt.state_dict``), so its random initialisation (0.8 s for AlexNet's 61 M weights
    on a CPU core) and a second copy of its weights (0.4 s of page faults) are never paid.
    """
    options = dict(ckpt.model_options)
    num_classes = options.pop("num_classes", ckpt.num_classes)
    if num_classes != ckpt.num_classes:
        raise AlexNetError(f"{source}: model_options num_classes={num_classes} but {ckpt.num_classes} class names")
    try:
        model = _empty_model(ckpt.model, num_classes=num_classes, **options)
    except ValueError as e:
        raise AlexNetError(f"{source}: cannot build model {ckpt.model!r}: {e}") from None
    wanted = model.state_dict()
    check_state_dict(ckpt.state_dict, wanted, source)
    for key, tensor in ckpt.state_dict.items():
        if tensor.is_floating_point() and tensor.numel() and not torch.isfinite(torch.stack(tensor.aminmax())).all():  # NaN propagates
            raise AlexNetError(f"{source}: tensor {key!r} holds NaN or infinite values; these weights cannot give predictions")
    model.load_state_dict({k: v.to(wanted[k].dtype) for k, v in ckpt.state_dict.items()}, assign=True)  # no copy, no page faults
    if any(t.is_meta for t in _tensors(model)):  # a tensor outside the state dict: build it the ordinary way
        model = models.create(ckpt.model, num_classes=num_classes, **options)
        model.load_state_dict(ckpt.state_dict)
    return model.eval()


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


def _empty_model(name: str, **options: Any) -> nn.Module:
    """``models.create`` on the meta device: the architecture without the cost of initialising it (a
    model whose constructor computes with its tensors, which meta cannot, is built the ordinary way)."""
    try:
        with torch.device("meta"):
            return models.create(name, **options)
    except (NotImplementedError, RuntimeError):
        return models.create(name, **options)


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every tensor a model holds: parameters, buffers and plain tensor attributes of its modules."""
    yield from model.parameters()
    yield from model.buffers()
    for module in model.modules():
        yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))
