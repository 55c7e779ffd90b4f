"""The optimiser and the learning-rate schedules of the recipes (§5, Caffe's solvers, torchvision's
StepLR, cuda-convnet2's ``dexp``).

:func:`make_optimizer` is §5's SGD (momentum, weight decay) with two parameter groups, weights and
biases, for Caffe's ``lr_mult`` / ``decay_mult``; one fused kernel where the device has it.

The update rule, ``optim.update``. §5 writes v ← 0.9·v − 0.0005·ε·w − ε·∂L/∂w; w ← w + v: the
learning rate multiplies the gradient *before* it enters the momentum buffer, as in Caffe's
``src/caffe/solvers/sgd_solver.cpp`` and cuda-convnet2's ``cudaconvnet/src/weights.cu``.
``torch.optim.SGD`` ("torch") keeps b ← m·b + g; w ← w − ε·b: the same while ε is constant, but
after ε drops from ε₀ to ε₁ the momentum it carries is rescaled to ε₁ at once, where §5's keeps
ε₀'s for a while. ``"paper"`` keeps torch's (fused) step and, whenever a group's ε changes,
multiplies its momentum buffers by ε₀/ε₁ (b = −v/ε), which makes torch's step exactly §5's.

:class:`Schedule` is the learning rate as a function of the run's progress; its state is saved in
every checkpoint and restored on resume. The plateau kind stays hand-written rather than
``torch.optim.lr_scheduler.ReduceLROnPlateau``: torch reduces after ``patience`` + 1 bad epochs
(ours, and the runs already made with it, after ``patience``) and knows no "at most three times"
except through ``min_lr``, so replacing it would change every plateau run's schedule.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from alexnet.errors import AlexNetError, unknown
from alexnet.training.config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)


def layer_settings(model: nn.Module, layers: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``optim.layers`` per parameter: a layer name matches the parameters of the module of that name,
    at any depth (``fc10`` is ``fc10.weight``; ``conv1`` is ``features.conv1.weight`` too), as
    cuda-convnet's layer-params sections (dnouri/cuda-convnet, ``example-layers/layer-params-*.cfg``:
    epsW, wc per layer) and Caffe's per-layer ``param { lr_mult decay_mult }`` name them. A name that
    matches no parameter is refused, listing the model's layers."""
    out: dict[str, dict[str, float]] = {}
    for layer, settings in layers.items():
        names = [n for n, _ in model.named_parameters() if f".{n.rpartition('.')[0]}".endswith(f".{layer}")]
        if not names:
            known = dict.fromkeys(n.rpartition(".")[0] for n, _ in model.named_parameters())
            raise AlexNetError(f"setting optim.layers.{layer}: {unknown('layer', layer, known)}")
        for name in names:
            out.setdefault(name, {}).update(settings)
    return out


def param_groups(model: nn.Module, cfg: OptimConfig, lr_mults: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Weights and biases (every ``*.bias`` and every 1-d tensor: norm layers too) as two groups
    (Caffe's lr_mult / decay_mult for biases), each split by the per-tensor multipliers ``lr_mults``
    (fine-tuning's loaded layers) and by the per-layer settings of ``cfg.layers``
    (:func:`layer_settings`: an lr multiplier, and a weight decay in place of ``cfg.weight_decay``).
    Frozen parameters (``requires_grad`` off) are in no group: no update, no weight decay."""
    lr_mults, per_layer = lr_mults or {}, layer_settings(model, cfg.layers)
    groups: dict[tuple[bool, float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            mine = per_layer.get(name, {})
            bias = p.ndim <= 1 or name.endswith(".bias")  # a locally connected layer's biases are [C, H, W]
            key = (bias, lr_mults.get(name, 1.0) * mine.get("lr_mult", 1.0), mine.get("weight_decay", cfg.weight_decay))
            groups.setdefault(key, []).append(p)
    out = []
    for (biases, mult, weight_decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        lr_mult = mult * (cfg.bias_lr_mult if biases else 1.0)
        decay = weight_decay if not biases or cfg.bias_decay else 0.0
        out.append({"params": params, "lr": cfg.lr * lr_mult, "weight_decay": decay, "lr_mult": lr_mult, "biases": biases,
                    "paper_update": cfg.update == "paper"})
    return out


def sgd_kernel(device: torch.device, fused: bool = True) -> dict[str, bool]:
    """``SGD``'s implementation flag: one fused kernel where the device has it, else foreach."""
    return {"fused": True} if fused and device.type in ("cpu", "cuda", "mps") else {"foreach": True}


def make_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device, *, fused: bool = True,
                   lr_mults: dict[str, float] | None = None) -> torch.optim.SGD:
    """§5's SGD over :func:`param_groups`, in the update form ``cfg.update`` names (module docstring)."""
    return torch.optim.SGD(param_groups(model, cfg, lr_mults), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           **sgd_kernel(device, fused))


def set_lr(optimizer: torch.optim.Optimizer, schedule: Schedule, step: int) -> float:
    """Give every group its learning rate for ``step``; returns the weights' (what the logs show).

    A group with ``paper_update`` whose ε changes has its momentum buffers rescaled by old/new, so
    that the next torch step is §5's v ← m·v − ε·g (an ε of 0 leaves them: there the forms cannot
    agree, and only the last step of a cosine schedule reaches it)."""
    for group in optimizer.param_groups:
        new = schedule.lr(step, biases=group.get("biases", False)) * group.get("lr_mult", 1.0)
        old = group["lr"]
        if group.get("paper_update") and new != old and new > 0 and old > 0:
            for p in group["params"]:
                buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                if buffer is not None:
                    buffer.mul_(old / new)
        group["lr"] = new
    return schedule.lr(step)


def dexp(progress: float, tgt_factor: float, num_steps: int) -> float:
    """cuda-convnet2's ``dexp`` (``cudaconvnet/src/lr.cu``, DiscreteExpParameterSchedule) as a factor of the
    base rate: ``num_steps`` equal stages of the run, the rates spaced exponentially from 1 to
    1/``tgt_factor`` (the last stage exactly 1/``tgt_factor``); ``progress`` in [0, 1]."""
    rates = [tgt_factor ** (-i / (num_steps - 1)) for i in range(num_steps - 1)] + [1 / tgt_factor]
    for i, rate in enumerate(rates):
        if progress <= (i + 1) / num_steps:
            return rate
    return rates[-1]


class Schedule:
    """The learning rate as a function of the run's progress, for the six recipe kinds.

    ``plateau``: ×factor when the validation top-1 error has not improved for ``patience`` epochs,
    at most ``max_reductions`` times (§5); ``step``: ×factor every ``step_size`` epochs or
    iterations (torchvision's StepLR, Caffe's "step" policy); ``multistep``: ×factor at each of
    ``milestones`` (torch's MultiStepLR, Caffe's "multistep" with its ``stepvalue`` list); ``cosine``: half a cosine from lr to 0
    over the run; ``dexp``: cuda-convnet2's staircase exponential decay over the run (:func:`dexp`),
    with its own target and stages for the biases (epsB) where ``bias_tgt_factor`` is set; ``constant``.
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.cfg, self.base, self.total_epochs = config.schedule, config.optim.lr, config.epochs
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = config.max_steps or config.epochs * steps_per_epoch
        self.reductions, self.best, self.bad_epochs = 0, math.inf, 0

    def lr(self, step: int, biases: bool = False) -> float:
        """The base learning rate at ``step`` (0-based), before a group's ``lr_mult``."""
        c = self.cfg
        if c.kind == "plateau":
            return self.base * c.factor**self.reductions
        if c.kind in ("step", "multistep"):
            progress = step if c.unit == "iteration" else step // self.steps_per_epoch
            drops = progress // c.step_size if c.kind == "step" else sum(progress >= m for m in c.milestones)
            return self.base * c.factor**drops
        if c.kind == "cosine":
            return self.base * 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        if c.kind == "dexp":
            tgt, n = (c.bias_tgt_factor, c.bias_num_steps) if biases and c.bias_tgt_factor else (c.tgt_factor, c.num_steps)
            return self.base * dexp(min(step / self.total_steps, 1.0), tgt, n)
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
