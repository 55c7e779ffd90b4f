"""One training step, the one that ``alexnet train`` runs and ``alexnet bench`` times.

:class:`TrainStep` is forward → loss → backward → (clip) → SGD step under one precision:
``fp32`` (autocast off), ``bf16`` (fp32's range, no scaler) or ``fp16`` (a gradient scaler: its
range is too narrow for raw gradients). The input is moved to the device in the step's memory
layout (channels_last by default: oneDNN's and cuDNN's native one); the loss is the model's own
(:meth:`alexnet.models.base.ConfiguredNet.loss`: cross-entropy in fp32, plus GoogLeNet's auxiliary
heads). A non-finite loss is noted on the device without a host sync; ``check=True`` reads the note
and raises :class:`NonFiniteLoss` *before* the backward pass, so the weights stay as they were.

:func:`make_train_step` makes the whole thing from a :class:`~alexnet.training.config.TrainConfig` (the
optimiser, clipping, smoothing) and a :class:`~alexnet.runtime.RuntimeSettings` (where and how it
runs): the model placed (:func:`alexnet.runtime.place`: moved, or left where it placed itself), DDP
and ``torch.compile`` wrappers when asked, §5's SGD (:func:`alexnet.training.optim.make_optimizer`).
It touches no process-wide setting: that is :func:`alexnet.runtime.apply_process_settings`'s, called
by the entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from alexnet.errors import AlexNetError
from alexnet.runtime import RuntimeSettings, autocast, place, placement
from alexnet.training.config import TrainConfig
from alexnet.training.optim import make_optimizer


class NonFiniteLoss(AlexNetError):
    """The loss of a step since the last check was NaN or infinite."""

    def __init__(self, value: float | None) -> None:
        super().__init__(f"loss became {value if value is not None else 'non-finite'}")
        self.value = value


class TrainStep:
    """Call with a batch (inputs [N, C, H, W] float, labels [N]); returns (logits, loss), detached."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, settings: RuntimeSettings, *, grad_clip: float = 0.0,
                 label_smoothing: float = 0.0, forward: Callable[[torch.Tensor], Any] | None = None) -> None:
        self.model, self.optimizer, self.settings = model, optimizer, settings
        self.device, self.precision, self.memory_format = settings.torch_device, settings.precision, settings.memory_format
        self.forward = forward or model  # the DDP / compiled wrapper when there is one
        self.grad_clip, self.label_smoothing = grad_clip, label_smoothing
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # a non-finite loss since the last check

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, *, check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs.to(self.device, memory_format=self.memory_format, non_blocking=True)
        y = labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            logits, loss = self.model.loss(self.forward(x), y, self.label_smoothing)
        self.nonfinite |= ~torch.isfinite(loss.detach())
        if check:
            self.check(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return logits.detach(), loss.detach()

    def check(self, loss: torch.Tensor | None = None) -> None:
        """Raise :class:`NonFiniteLoss` if any loss since the last check was not finite (one host sync)."""
        if bool(self.nonfinite.item()):
            raise NonFiniteLoss(loss.item() if loss is not None else None)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def make_train_step(model: nn.Module, config: TrainConfig, settings: RuntimeSettings, *, distributed: bool = False,
                    lr_mults: dict[str, float] | None = None) -> TrainStep:
    """``model`` placed as ``settings`` says (in place) with its optimiser, wrapped for DDP and
    ``torch.compile`` when asked, as one step; of ``config`` only the optimiser, ``grad_clip`` and
    ``label_smoothing`` are read (its runtime keys arrive as ``settings``: ``config.runtime_settings(device)``).
    ``lr_mults``: per-tensor learning-rate multipliers, for fine-tuning."""
    place(model, settings)
    forward: nn.Module = model
    if distributed:
        if placement(model):
            raise AlexNetError("model.options.devices places one process's model on several devices; "
                               "under torchrun leave it out (each process holds its own whole model)")
        device = settings.torch_device
        forward = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if settings.compile:
        forward = torch.compile(forward)
    optimizer = make_optimizer(model, config.optim, settings.torch_device, fused=settings.fused_optimizer, lr_mults=lr_mults)
    return TrainStep(model, optimizer, settings, grad_clip=config.grad_clip, label_smoothing=config.label_smoothing,
                     forward=forward)
