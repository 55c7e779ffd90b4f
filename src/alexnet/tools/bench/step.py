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
from alexnet.models import lrn
from alexnet.models.base import classification_loss
from alexnet.models.lrn import LocalResponseNorm, PlainLocalResponseNorm
from alexnet.reporting.stats import paired_ratio
from alexnet.tools.bench.rows import Row, measure_rows, with_ratios
from alexnet.training import step as steps
from alexnet.training.config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)

REFERENCE = "torchvision.alexnet"


def reference_model(num_classes: int = 1000) -> nn.Module:
    """torchvision's AlexNet, given the part of the model contract (:mod:`alexnet.models.base`) that our
    step and ``summarize`` use, so that they run it too: trained at 224 as pytorch/examples does, plain cross-entropy."""
    import torchvision

    model = torchvision.models.alexnet(num_classes=num_classes)
    model.name, model.input_size, model.in_channels, model.num_classes = REFERENCE, 224, 3, num_classes
    model.loss = classification_loss
    return model


def train_gflop(model: nn.Module) -> float:
    """GFLOP (2 per multiply-accumulate) of one training image of ``model`` at its input size."""
    from alexnet.models.summary import summarize

    return 2 * summarize(model).training_macs / 1e9


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

    def call() -> None:
        runtime.set_lrn_kernel(fast.lrn_kernel)  # rows are timed round-robin: each runs under its own kernel
        step(images, labels)

    return call


def reference_path(cfg, device: torch.device, label: str, fast: runtime.RuntimeSettings, allocator: str) -> tuple[Row, Callable]:
    """torchvision's AlexNet on a batch on the device in NCHW: pytorch/examples' step when ``fast`` is
    :func:`fp32_nchw`, else our step at ``fast``'s precision and layout."""
    torch.manual_seed(0)
    model = reference_model()
    x, y = (t.to(device) for t in synthetic_batch(model, cfg.batch_size, 1000))  # on the device, NCHW
    gflop = train_gflop(model)
    if fast == fp32_nchw(device):
        run_step = reference_step(model, device)
        step = lambda: run_step(x, y)
    else:
        step = ours_step(model, fast, x, y)
    return _row(cfg, label, "reference", REFERENCE, fast, 224, gflop, allocator), step


def baseline_path(cfg, device: torch.device, allocator: str) -> tuple[Row, Callable]:
    """The paper's network written the naive way: plain LRN formula, NCHW, fp32, pytorch/examples' step."""
    torch.manual_seed(0)
    model = plain_lrn(models.create("alexnet"))
    x, y = (t.to(device) for t in synthetic_batch(model, cfg.batch_size, 1000))
    step = reference_step(model, device)
    return (_row(cfg, "alexnet naive (F.local_response_norm, NCHW, fp32)", "baseline", "alexnet", fp32_nchw(device),
                 model.input_size, train_gflop(model), allocator), lambda: step(x, y))


def our_path(cfg, name: str, fast: runtime.RuntimeSettings, allocator: str) -> tuple[Row, Callable]:
    """Model ``name`` on the fast path ``fast``, at its own input size."""
    torch.manual_seed(0)
    model = models.create(name)
    x, y = synthetic_batch(model, cfg.batch_size, model.num_classes)
    label = f"{name} {fast.precision}{' channels_last' if fast.channels_last else ''}{' compiled' if fast.compile else ''}"
    if fast.lrn_kernel == "eager" and cfg.lrn_kernel != "eager":
        label += ", LRN eager"
    return _row(cfg, label, "ours", name, fast, model.input_size, train_gflop(model), allocator), ours_step(model, fast, x, y)


def fp32_nchw(device: torch.device) -> runtime.RuntimeSettings:
    """The reference's settings: fp32, NCHW, torch's for-loop SGD, the process's allocator."""
    return runtime.RuntimeSettings(device=str(device), channels_last=False, fused_optimizer=False, tune_allocator=False)


def _row(cfg, label: str, impl: str, model: str, fast: runtime.RuntimeSettings, size: int, gflop: float, allocator: str) -> Row:
    return Row("step", label, impl, "step", cfg.batch_size, images_per_call=cfg.batch_size, train_gflop=gflop, settings={
        "model": model, "precision": fast.precision, "channels_last": fast.channels_last, "compile": fast.compile,
        "input_size": size, "allocator": allocator, "lrn_kernel": fast.lrn_kernel})


def run(cfg, device: torch.device) -> list[Row]:
    """All rows of the step part for a resolved :class:`alexnet.tools.bench.BenchConfig`: the reference
    (and the baseline) with the process's allocator, then one interleaved group per precision."""
    before = allocator_label()
    first = [reference_path(cfg, device, f"{REFERENCE} fp32 NCHW (pytorch/examples)", fp32_nchw(device), before)]
    if cfg.baseline and "alexnet" in cfg.step_models:
        first.append(baseline_path(cfg, device, before))
    rows = _measure(cfg, device, first)
    del first
    after = _switch_allocator(cfg, device, before)
    for precision in cfg.precisions:
        rows += _measure(cfg, device, precision_group(cfg, device, precision, after, retime_reference=after != before))
    return like_for_like(same_allocator_ratios(with_ratios(rows)))


def precision_group(cfg, device: torch.device, precision: str, allocator: str, *, retime_reference: bool
                    ) -> list[tuple[Row, Callable]]:
    """The reference (again with the tuned allocator in fp32), torchvision's net on our step at
    ``precision`` (like for like: same layout, optimiser and process), and our models; the paper's net
    also with the eager LRN kernel where the rule picks the compiled one (what the kernel gains)."""
    fast = runtime.RuntimeSettings(device=str(device), precision=precision, channels_last=cfg.channels_last,
                                   tune_allocator=cfg.tune_allocator, lrn_kernel=cfg.lrn_kernel)
    group = []
    if precision == "fp32" and retime_reference:
        group.append(reference_path(cfg, device, f"{REFERENCE} fp32 NCHW, tuned allocator", fp32_nchw(device), allocator))
    layout = " channels_last" if cfg.channels_last else ""
    group.append(reference_path(cfg, device, f"{REFERENCE} {precision}{layout} (like for like)", fast, allocator))
    for compiled in ((False, True) if cfg.compile else (False,)):
        group += [our_path(cfg, name, replace(fast, compile=compiled), allocator) for name in cfg.step_models]
    if "alexnet" in cfg.step_models and cfg.lrn_kernel != "eager" and lrn.picks_compiled(device, (cfg.batch_size, 96, 55, 55)):  # conv1's LRN
        group.append(our_path(cfg, "alexnet", replace(fast, lrn_kernel="eager"), allocator))
    return group


def like_for_like(rows: list[Row]) -> list[Row]:
    """``like_for_like``: each of our rows' images/s over torchvision's net's on the same step, precision,
    layout and allocator (issue 24's ratio), and ``like_for_like_by_round``: the same ratio taken round by
    round (the two were timed in the same rounds), its geometric mean and 95 % interval
    (:func:`alexnet.reporting.stats.paired_ratio`): how far a shared machine's drift leaves the ratio known."""
    same = {(r.settings["precision"], r.settings["allocator"]): r for r in rows
            if r.impl == "reference" and r.label.endswith("(like for like)")}
    out = []
    for r in rows:
        ref = same.get((r.settings.get("precision"), r.settings.get("allocator"))) if r.impl == "ours" else None
        if ref is not None:
            r = replace(r, settings={**r.settings, "like_for_like": r.images_per_s / ref.images_per_s,
                                     "like_for_like_by_round": paired_ratio(ref.timing.times, r.timing.times)})
        out.append(r)
    return out


def same_allocator_ratios(rows: list[Row]) -> list[Row]:
    """``ratio_same_allocator``: images/s over the fp32 reference's with the same allocator (the tuned
    reference where there is one), beside ``ratio``, which is always over the reference as people run it."""
    base = rows[0].images_per_s
    tuned = next((r.images_per_s for r in rows if r.impl == "reference" and r.settings["allocator"] == "tuned"
                  and r.settings["precision"] == "fp32"), base)
    return [replace(r, settings={**r.settings, "ratio_same_allocator": r.images_per_s
                                 / (tuned if r.settings["allocator"] == "tuned" else base)}) for r in rows]


def _measure(cfg, device: torch.device, group: list[tuple[Row, Callable]]) -> list[Row]:
    log.info("step: timing %s", ", ".join(row.label for row, _ in group))
    return measure_rows(group, device, warmup=cfg.warmup, reps=cfg.reps)


def allocator_label() -> str:
    """The CPU allocator the process runs with now, as rows record it: "tuned" or "default"."""
    return "tuned" if runtime.allocator_tuned() else "default"


def _switch_allocator(cfg, device: torch.device, allocator: str) -> str:
    """On a CPU, tune the allocator between the reference as people run it and ours (it cannot be switched
    back off); returns the allocator the rest runs with."""
    if device.type == "cpu" and cfg.tune_allocator and allocator == "default":
        return "tuned" if runtime.tune_cpu_allocator() else "default"
    return allocator
