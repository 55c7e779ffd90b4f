"""The optimiser and the learning-rate schedule of the recipes (§5, Caffe's solvers, torchvision's StepLR).

:func:`make_optimizer` is §5's SGD (momentum, weight decay) with two parameter groups, weights and
biases, for Caffe's ``lr_mult`` / ``decay_mult``; one fused kernel where the device has it.
:class:`Schedule` is the learning rate as a function of the run's progress; its state is saved in
every checkpoint and restored on resume.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from .config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Weights and biases as two groups: Caffe's lr_mult / decay_mult for biases (and norm layers)."""
    weights = [p for p in model.parameters() if p.ndim > 1 and p.requires_grad]
    biases = [p for p in model.parameters() if p.ndim <= 1 and p.requires_grad]
    return [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_mult, "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0,
         "lr_mult": cfg.bias_lr_mult},
    ]


def sgd_kernel(device: torch.device, fused: bool = True) -> dict[str, bool]:
    """``SGD``'s implementation flag: one fused kernel where the device has it, else foreach."""
    return {"fused": True} if fused and device.type in ("cpu", "cuda", "mps") else {"foreach": True}


def make_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device, *, fused: bool = True) -> torch.optim.SGD:
    """§5's SGD over :func:`param_groups` (torch's form: ε applied after the momentum; equal at constant ε)."""
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           **sgd_kernel(device, fused))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


class Schedule:
    """The learning rate as a function of the run's progress, for the four recipe kinds.

    ``plateau``: ×factor when the validation top-1 error has not improved for ``patience`` epochs,
    at most ``max_reductions`` times (§5); ``step``: ×factor every ``step_size`` epochs or
    iterations (torchvision's StepLR, Caffe's "step" policy); ``cosine``: half a cosine from lr to 0
    over the run; ``constant``.
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.cfg, self.base, self.total_epochs = config.schedule, config.optim.lr, config.epochs
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = config.max_steps or config.epochs * steps_per_epoch
        self.reductions, self.best, self.bad_epochs = 0, math.inf, 0

    def lr(self, step: int) -> float:
        c = self.cfg
        if c.kind == "plateau":
            return self.base * c.factor**self.reductions
        if c.kind == "step":
            progress = step if c.unit == "iteration" else step // self.steps_per_epoch
            return self.base * c.factor ** (progress // c.step_size)
        if c.kind == "cosine":
            return self.base * 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        return self.base

    def epoch_end(self, val_error: float | None) -> None:
        if self.cfg.kind != "plateau" or val_error is None:
            return
        if val_error < self.best - 1e-6:
            self.best, self.bad_epochs = val_error, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.cfg.patience and self.reductions < self.cfg.max_reductions:
            self.reductions, self.bad_epochs = self.reductions + 1, 0
            log.info("validation error stopped improving: lr divided by %g (reduction %d)", 1 / self.cfg.factor, self.reductions)

    def state_dict(self) -> dict[str, Any]:
        return {"reductions": self.reductions, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reductions, self.best, self.bad_epochs = state["reductions"], state["best"], state["bad_epochs"]
