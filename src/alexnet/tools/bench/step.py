"""Part ``step``: one training step (forward, backward, SGD step) on synthetic data.

The reference is what most people run: ``torchvision.models.alexnet`` in fp32, NCHW, with
pytorch/examples' ImageNet step (``CrossEntropyLoss``, SGD lr 0.1, momentum 0.9, weight decay 1e-4,
``zero_grad(); backward(); step()``) at 224×224. Ours is each AlexNet variant on the fast path
(:mod:`alexnet.runtime`) at its own input size (227 for the paper's net). The "baseline" row is
the paper's network written the naive way (``F.local_response_norm``, NCHW, fp32, a plain SGD loop):
the 0.44× this work started from. The synthetic batch sits on the device before timing, for every
row, in the layout each side's input pipeline delivers: NCHW for the reference (ToTensor) and the
baseline, channels_last for the fast path (Preprocess) — what is timed is the step, not a copy.

On the CPU the reference and the baseline run first, with the process's default allocator;
:func:`alexnet.runtime.tune_cpu_allocator` is then switched on (it cannot be switched off) and
the reference is measured again, so the report shows both what the fast path gains over the
reference as people run it and over the reference given the same allocator. Rows are timed
interleaved (round-robin): the reference with the baseline, then per precision the reference
with our models, so that a shared machine's drifting load does not bias their ratios.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from alexnet import models, runtime
from alexnet.models.base import classification_loss
from alexnet.models.layers import LocalResponseNorm, PlainLocalResponseNorm
from alexnet.tools.bench.timing import Measurement, measure_interleaved
from alexnet.training import step as steps
from alexnet.training.config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)

REFERENCE = "torchvision.alexnet"


def reference_model(num_classes: int = 1000) -> nn.Module:
    """torchvision's AlexNet, given the model contract (:class:`alexnet.models.base.Classifier`) so that
    our step can run it too: trained at 224 as pytorch/examples does, plain cross-entropy."""
    import torchvision

    model = torchvision.models.alexnet(num_classes=num_classes)
    model.name, model.input_size, model.in_channels, model.num_classes = REFERENCE, 224, 3, num_classes
    model.loss = classification_loss
    return model


def train_gflop(model: nn.Module) -> float:
    """GFLOP (2 per multiply-accumulate) of one training image of ``model`` at its input size."""
    from alexnet.models.summary import summarize

    return 2 * summarize(model).training_macs / 1e9


def flops(gflop: float, result: dict) -> dict:
    """A timed row with the training arithmetic it sustained: GFLOP per image and TFLOP/s."""
    return {**result, "train_gflop_per_image": gflop, "tflops": result["images_per_s"] * gflop / 1e3}


def reference_step(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """pytorch/examples imagenet/main.py ``train()``: one iteration, fp32, NCHW, SGD for-loop."""
    model.to(device)
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def plain_lrn(model: nn.Module) -> nn.Module:
    """Swap every fused LRN of ``model`` for the plain formula (same hyper-parameters); in place."""
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, LocalResponseNorm) and not isinstance(child, PlainLocalResponseNorm):
                setattr(parent, name, PlainLocalResponseNorm(child.size, child.alpha, child.beta, child.k,
                                                             convention=child.convention, groups=child.groups))
    return model


def synthetic_batch(model: nn.Module, batch_size: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size, channels = model.input_size, model.in_channels
    return torch.randn(batch_size, channels, size, size, generator=g), torch.randint(0, num_classes, (batch_size,), generator=g)


def train_step(model: nn.Module, fast: runtime.RuntimeSettings) -> steps.TrainStep:
    """The step ``alexnet train`` runs (:func:`alexnet.training.step.make_train_step`), for a recipe at §5's SGD with lr 0.01."""
    return steps.make_train_step(model, TrainConfig(optim=OptimConfig(lr=0.01)), fast)


def ours_step(model: nn.Module, fast: runtime.RuntimeSettings, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """:func:`train_step` on a batch that already sits on the device in the step's layout, as
    ``Preprocess`` delivers it (so the step is timed, not a host-to-device copy or a layout change)."""
    step = train_step(model, fast)
    images, labels = runtime.to_input(images, fast), labels.to(fast.device)
    return lambda: step(images, labels)


def row(label: str, impl: str, model: str, fast: runtime.RuntimeSettings, batch: int, size: int, m: Measurement, allocator: str,
        gflop: float) -> dict:
    return flops(gflop, {
        "part": "step", "label": label, "impl": impl, "model": model, "precision": fast.precision,
        "channels_last": fast.channels_last, "compile": fast.compile, "batch_size": batch, "input_size": size,
        "allocator": allocator, "images_per_s": batch / m.median, "ms": m.median * 1e3, **m.to_dict(),
    })


def run(cfg, device: torch.device) -> list[dict]:
    """All rows of the step part for a resolved :class:`alexnet.tools.bench.BenchConfig`."""
    rows: list[dict] = []
    cpu = device.type == "cpu"
    allocator = "tuned" if runtime.allocator_tuned() else "default"
    fp32_nchw = runtime.RuntimeSettings(device=str(device), channels_last=False, fused_optimizer=False, tune_allocator=False)

    def run_group(group: list[tuple]) -> None:
        """Time a group of (label, impl, model, fast, size, gflop, step) round-robin and add their rows."""
        log.info("step: timing %s", ", ".join(g[0] for g in group))
        ms = measure_interleaved([g[-1] for g in group], device, warmup=cfg.warmup, reps=cfg.reps)
        for (label, impl, name, fast, size, gflop, _), m in zip(group, ms):
            rows.append(row(label, impl, name, fast, cfg.batch_size, size, m, allocator, gflop))

    def reference(label: str, fast: runtime.RuntimeSettings) -> tuple:
        torch.manual_seed(0)
        model = reference_model()
        x, y = (t.to(device) for t in synthetic_batch(model, cfg.batch_size, 1000))  # on the device, NCHW
        gflop = train_gflop(model)
        if fast == fp32_nchw:
            run_step = reference_step(model, device)
            step = lambda: run_step(x, y)
        else:
            step = ours_step(model, fast, x, y)
        return (label, "reference", REFERENCE, fast, 224, gflop, step)

    first = [reference(f"{REFERENCE} fp32 NCHW (pytorch/examples)", fp32_nchw)]
    if cfg.baseline and "alexnet" in cfg.step_models:
        torch.manual_seed(0)
        model = plain_lrn(models.create("alexnet"))
        x, y = (t.to(device) for t in synthetic_batch(model, cfg.batch_size, 1000))
        step = reference_step(model, device)
        first.append(("alexnet naive (F.local_response_norm, NCHW, fp32)", "baseline", "alexnet", fp32_nchw,
                      model.input_size, train_gflop(model), lambda: step(x, y)))
    run_group(first)
    ref = rows[0]
    del first
    reference_tuned = None
    if cpu and cfg.tune_allocator and allocator == "default":
        allocator = "tuned" if runtime.tune_cpu_allocator() else "default"
        if allocator == "tuned":
            reference_tuned = f"{REFERENCE} fp32 NCHW, tuned allocator"

    for precision in cfg.precisions:  # one interleaved group per precision: the reference and ours
        fast = runtime.RuntimeSettings(device=str(device), precision=precision, channels_last=cfg.channels_last,
                                       tune_allocator=cfg.tune_allocator)
        group = []
        if precision == "fp32" and reference_tuned:
            group.append(reference(reference_tuned, fp32_nchw))
        elif precision != "fp32":  # the reference at the same precision, for context
            group.append(reference(f"{REFERENCE} {precision}{' channels_last' if cfg.channels_last else ''}", fast))
        for compiled in ((False, True) if cfg.compile else (False,)):
            f = replace(fast, compile=compiled)
            for name in cfg.step_models:
                torch.manual_seed(0)
                model = models.create(name)
                x, y = synthetic_batch(model, cfg.batch_size, model.num_classes)
                label = f"{name} {precision}{' channels_last' if f.channels_last else ''}{' compiled' if compiled else ''}"
                group.append((label, "ours", name, f, model.input_size, train_gflop(model), ours_step(model, f, x, y)))
        run_group(group)
        del group

    base = ref["images_per_s"]
    tuned = next((r["images_per_s"] for r in rows if r["impl"] == "reference" and r["allocator"] == "tuned" and r["precision"] == "fp32"), base)
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
        r["ratio_same_allocator"] = r["images_per_s"] / (tuned if r["allocator"] == "tuned" else base)
    return rows
