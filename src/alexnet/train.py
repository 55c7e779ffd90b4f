"""The training loop (§5): SGD with momentum and weight decay, the recipes' schedules, resumable.

``train(config, run)`` trains ``config.model`` on ``config.data`` and writes a run folder::

    config.json      the resolved configuration
    metrics.jsonl    one line per epoch: train/val loss and top-1/top-5 error, lr, images/s, seconds
    tb/              TensorBoard events
    checkpoints/     last.pt (every epoch and every ``checkpoint_every`` steps) and best.pt (val top-1)
    report.json      final val/test errors (1 view, and 10 views where the preset asks), parameters,
                     wall time, hardware, versions, git commit
    curves.png       loss and error per epoch

Never losing work: checkpoints are written atomically; a resumed run restores model, optimiser,
schedule, RNG states and the position inside the epoch, so on the CPU with a fixed seed it ends
with the same weights as an uninterrupted run; a loss that is not finite stops the run with the
last good checkpoint kept. Under torchrun every rank trains on its shard and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt_io
from . import distributed as dist
from . import models
from .config import TrainConfig
from .data import ImageSet, Preprocess, StatsAccumulator, iter_batches, num_batches, pipeline
from .data.imageset import split_off
from .data.transforms import fit_images
from .device import autocast, resolve_device
from .errors import AlexNetError
from .evaluate import batch_probabilities, topk_correct
from .fastpath import sgd_kernel, tune_process
from .models.googlenet import AUX_LOSS_WEIGHT, GoogLeNetOutputs

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """How to run (not what to train): where, and what to do with an existing run folder."""

    out: Path
    resume: bool = False  # continue from out/checkpoints/last.pt
    force: bool = False  # start afresh in a folder that already holds a run (its files are replaced)
    progress_bar: bool = True  # tqdm when stderr is a terminal
    stop_after_steps: int = 0  # stop as if killed right after the checkpoint at this step (tests)
    loss_check_every: int = 0  # steps between reads of the loss; 0: every step on a CPU, LOSS_CHECK_EVERY elsewhere


LOSS_CHECK_EVERY = 50  # on a GPU: steps between reads of the loss (each read waits for the GPU to catch up)


class TrainingDiverged(AlexNetError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Set-up: device, data, model, optimiser, schedule


@dataclass
class Data:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None
    classes: list[str]
    preprocess: Preprocess


def load_data(config: TrainConfig) -> Data:
    """Open ``config.data.spec``, hold out a val split if it has none, and fit the preprocessing."""
    from .data import open_dataset

    if not config.data.spec:
        raise AlexNetError(f"preset {config.preset} needs --data PATH (an image folder, CIFAR-10, IDX files or a packed store)")
    dataset = open_dataset(config.data.spec)
    if "train" not in dataset.splits:
        raise AlexNetError(f"{config.data.spec}: no train split to train on (found: {', '.join(dataset.splits) or 'none'})")
    train, val, test = dataset.splits["train"], dataset.splits.get("val"), dataset.splits.get("test")
    if val is None and config.data.val_fraction > 0:
        train, val = split_off(train, config.data.val_fraction, config.seed)
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    train, val, test = (prefit(s, pipe.resize, pipe.channels) for s in (train, val, test))
    stats = dataset.stats if dataset.stats is not None and dataset.stats.mean_image.shape[0] == pipe.resize else None
    if stats is None and (pipe.normalize != "unit" or pipe.lighting > 0):
        stats = statistics(train, pipe.resize, pipe.channels, config.data.workers)
    return Data(train, val, test, list(dataset.classes), Preprocess(pipe, stats))


def prefit(images: ImageSet | None, size: int, channels: int) -> ImageSet | None:
    """An in-memory set stored at another size (digits 8×8, CIFAR-10 32×32) fitted once to size × size
    × channels, instead of on every batch; lazy and already-fitting sets are returned as they are."""
    if images is None or not images.in_memory or images.images.shape[1:] == (size, size, channels):
        return images
    # One C-ordered [N, H, W, C] array, as a store's memmap is, written chunk by chunk: np.take of a
    # batch from the NCHW-strided views of the permuted chunks gathers byte by byte (≈200 ms for 128
    # images at 256×256, against ≈2 ms)
    fitted_images = np.empty((len(images), size, size, channels), dtype=np.uint8)
    for i in range(0, len(images), 1024):
        chunk = fit_images(torch.from_numpy(np.asarray(images.images[i : i + 1024])), size, channels)
        fitted_images[i : i + len(chunk)] = chunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return ImageSet(images.labels, images.classes, images=fitted_images, paths=images.paths, info=images.info)


def statistics(images: ImageSet, size: int, channels: int, workers: int = 0):
    """Training-set statistics of the images as the model sees them (fitted to size × size × channels)."""
    acc = StatsAccumulator()
    for x, _ in iter_batches(images, 256, size=size, workers=workers):
        acc.update(fit_images(x, size, channels).permute(0, 2, 3, 1).numpy())
    return acc.finish()


def param_groups(model: nn.Module, cfg) -> list[dict[str, Any]]:
    """Weights and biases as two groups: Caffe's lr_mult / decay_mult for biases (and norm layers)."""
    weights = [p for p in model.parameters() if p.ndim > 1]
    biases = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_mult, "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0,
         "lr_mult": cfg.bias_lr_mult},
    ]


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


# ---------------------------------------------------------------------------------------------
# Metrics


def training_loss(outputs: torch.Tensor | GoogLeNetOutputs, y: torch.Tensor, label_smoothing: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of a training forward pass. GoogLeNet with auxiliary heads returns
    :class:`GoogLeNetOutputs` in training mode: Szegedy et al. §5 add each head's loss × 0.3."""
    if not isinstance(outputs, GoogLeNetOutputs):
        return outputs, F.cross_entropy(outputs.float(), y, label_smoothing=label_smoothing)
    loss = F.cross_entropy(outputs.logits.float(), y, label_smoothing=label_smoothing)
    for aux in (outputs.aux_logits1, outputs.aux_logits2):
        if aux is not None:
            loss = loss + AUX_LOSS_WEIGHT * F.cross_entropy(aux.float(), y, label_smoothing=label_smoothing)
    return outputs.logits, loss


@torch.no_grad()
def evaluate_images(model: nn.Module, images: ImageSet, preprocess: Preprocess, *, views: int, batch_size: int,
                    device: torch.device, info: dist.Dist, amp: str = "off", workers: int = 0) -> dict[str, float]:
    """Loss and top-1/top-5 error of the softmax averaged over ``views`` (1 or 10, §4.1)."""
    model.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1 hits, top-5 hits, images
    for x, y in iter_batches(images, batch_size, size=preprocess.pipeline.resize, device=device,
                             rank=info.rank, world_size=info.world_size, workers=workers):
        with autocast(device, amp):
            probs = batch_probabilities(model, preprocess, x, views).float()
        sums[0] += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
        sums[1] += topk_correct(probs, y, 1).sum()
        sums[2] += topk_correct(probs, y, 5).sum()
        sums[3] += len(y)
    dist.all_reduce_sum(sums, info)
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1)
    return {"loss": loss / n, "top1_error": 1 - top1 / n, "top5_error": 1 - top5 / n, "images": int(n), "views": views}


# ---------------------------------------------------------------------------------------------
# The run folder


class RunFolder:
    def __init__(self, root: Path, write: bool) -> None:
        self.root, self.write = root, write
        self.checkpoints = root / "checkpoints"
        self.last, self.best = self.checkpoints / "last.pt", self.checkpoints / "best.pt"
        self.metrics = root / "metrics.jsonl"

    def holds_run(self) -> bool:
        return (self.root / "config.json").exists() or self.last.exists()

    def write_json(self, name: str, data: Any) -> None:
        if self.write:
            atomic_write(self.root / name, json.dumps(data, indent=2, default=str) + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.write:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def keep_metrics_of(self, completed: int) -> list[dict[str, Any]]:
        """On resume: keep the records of the ``completed`` epochs, drop those that will be trained again."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= completed]
        if self.write:
            atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        return kept


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig, run: RunOptions, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train as ``config`` says into ``run.out``; returns the report (also written as report.json)."""
    device = resolve_device(config.device)
    info = dist.setup(device)
    device = dist.local_device(device, info)
    folder = RunFolder(Path(run.out), write=info.is_main)
    try:
        return _train(config, run, folder, device, info, on_epoch)
    finally:
        dist.cleanup(info)


def _prepare_folder(folder: RunFolder, run: RunOptions, info: dist.Dist) -> None:
    if run.resume:
        if not folder.last.exists():
            raise AlexNetError(f"{folder.root}: nothing to resume (no checkpoints/last.pt)")
        return
    if folder.root.exists() and folder.holds_run() and not run.force:
        raise AlexNetError(f"{folder.root} already holds a run; pass --resume to continue it or --force to start afresh")
    if folder.root.exists() and not folder.root.is_dir():
        raise AlexNetError(f"{folder.root} exists and is not a folder")
    if info.is_main:
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        for stale in (folder.metrics, folder.last, folder.best, folder.root / "report.json"):
            stale.unlink(missing_ok=True)
    dist.barrier(info)


def _train(config: TrainConfig, run: RunOptions, folder: RunFolder, device: torch.device, info: dist.Dist,
           on_epoch: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    _prepare_folder(folder, run, info)
    torch.manual_seed(config.seed)
    data = load_data(config)
    options = {**config.model.options}
    model = models.create(config.model.name, num_classes=len(data.classes), **options)
    if getattr(model, "in_channels", data.preprocess.pipeline.channels) != data.preprocess.pipeline.channels:
        raise AlexNetError(f"model {config.model.name} takes {model.in_channels} channels but pipeline "
                           f"{data.preprocess.pipeline.name} gives {data.preprocess.pipeline.channels}")
    if data.preprocess.pipeline.crop != model.input_size:
        raise AlexNetError(f"model {config.model.name} takes {model.input_size}×{model.input_size} input but the pipeline crops "
                           f"{data.preprocess.pipeline.crop}; set data.pipeline_options.crop or the model's input size")
    n_params = sum(p.numel() for p in model.parameters())
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    tune_process(device)  # CPU: reuse freed activations instead of page-faulting them back; CUDA: cudnn.benchmark
    optimizer = torch.optim.SGD(param_groups(model, config.optim), lr=config.optim.lr, momentum=config.optim.momentum,
                                nesterov=config.optim.nesterov, **sgd_kernel(device))
    per_epoch = num_batches(len(data.train), config.batch_size, drop_last=True, world_size=info.world_size)
    if per_epoch < 1:
        raise AlexNetError(f"batch size {config.batch_size} × {info.world_size} process(es) is larger than the "
                           f"{len(data.train)} training images")
    schedule = Schedule(config, per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    aug = torch.Generator().manual_seed(config.seed + 7919 * info.rank)
    epoch, batch_in_epoch, step, best = 0, 0, 0, math.inf
    meters = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, images
    history: list[dict[str, Any]] = []
    epoch_seconds = 0.0

    if run.resume:
        state = ckpt_io.load(folder.last, map_location="cpu")
        model.load_state_dict(state.state_dict)
        ts = state.train_state or {}
        optimizer.load_state_dict(ts["optimizer"])
        schedule.load_state_dict(ts["schedule"])
        scaler.load_state_dict(ts["scaler"]) if ts.get("scaler") else None
        epoch, batch_in_epoch, step, best = ts["epoch"], ts["batch"], ts["step"], ts["best"]
        epoch_seconds = ts.get("epoch_seconds", 0.0)
        meters = ts["meters"].to(device)
        torch.set_rng_state(ts["rng"]["torch"])
        aug.set_state(ts["rng"]["aug"][info.rank] if isinstance(ts["rng"]["aug"], list) else ts["rng"]["aug"])
        if device.type == "cuda" and ts["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ts["rng"]["cuda"])
        history = folder.keep_metrics_of(epoch)
        log.info("resuming %s at epoch %d, batch %d (step %d)", folder.root, epoch + 1, batch_in_epoch, step)
    folder.write_json("config.json", config.to_dict())

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)

    def diverged(what: str) -> TrainingDiverged:
        """The error that stops a run because ``what`` became non-finite, naming what was kept."""
        kept = f"The last good checkpoint is {folder.last}" if folder.last.is_file() else "No checkpoint was written before it"
        return TrainingDiverged(f"the {what}; stopped. {kept}; lower the learning rate or check the data")

    def snapshot(path: Path) -> None:
        """Write a checkpoint of everything needed to continue exactly from here (rank 0 only).

        Weights that are no longer finite are never written: the last good checkpoint stays."""
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise diverged(f"weights became non-finite at epoch {epoch + 1}, step {step}")
        rng = {"torch": torch.get_rng_state(), "aug": aug.get_state(),
               "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
        if info.enabled:  # every rank's augmentation stream
            states = [torch.empty_like(rng["aug"]) for _ in range(info.world_size)]
            torch.distributed.all_gather_object(states, rng["aug"])
            rng["aug"] = states
        if not info.is_main:
            return
        train_state = {"epoch": epoch, "batch": batch_in_epoch, "step": step, "best": best, "meters": meters.cpu(),
                       "epoch_seconds": epoch_seconds, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                       "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rng}
        ck = ckpt_io.from_model(model, data.classes, model_options=options, preprocess=data.preprocess.to_state(),
                                provenance=ckpt_io.collect_provenance(config.preset, config.to_dict()), train_state=train_state)
        ckpt_io.save(path, ck)

    # A GPU runs ahead of the host; reading the loss back every step would make it wait for the host's
    # next batch. There the loss is checked every LOSS_CHECK_EVERY steps (non-finite weights are never
    # written: snapshot() checks them), on a CPU every step, before the backward pass.
    check_every = run.loss_check_every or (1 if device.type == "cpu" else LOSS_CHECK_EVERY)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss since the last check
    loss, lr = None, config.optim.lr  # the last step's

    def check_loss(loss: torch.Tensor | None, lr: float, at_step: int) -> None:
        """Raise if a loss since the last check was not finite (``at_step``: the last step's number, from 1)."""
        if loss is None or not nonfinite.item():
            return
        value = loss.item() if check_every == 1 else "non-finite"
        where = f"step {at_step}" if check_every == 1 else f"one of steps {max(at_step + 1 - check_every, 1)}–{at_step}"
        raise diverged(f"loss became {value} at epoch {epoch + 1}, {where} (lr {lr:g})")

    bar = None
    wall_start = time.time()
    images_seen = 0
    stopped = False
    while epoch < config.epochs and not stopped:
        if config.max_steps and step >= config.max_steps:
            break
        model.train()
        start_time = time.time() - epoch_seconds
        batches = iter_batches(data.train, config.batch_size, size=data.preprocess.pipeline.resize, device=device,
                               shuffle=True, seed=config.seed, epoch=epoch, start=batch_in_epoch, workers=config.data.workers,
                               rank=info.rank, world_size=info.world_size, drop_last=True)
        if run.progress_bar and info.is_main and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=per_epoch, initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       unit="batch", dynamic_ncols=True)
        for x, y in batches:
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            inputs = data.preprocess.train(x, aug).contiguous(memory_format=memory_format)
            with autocast(device, config.amp):
                logits, loss = training_loss(train_model(inputs), y, config.label_smoothing)
            nonfinite |= ~torch.isfinite(loss.detach())
            if (step + 1) % check_every == 0:
                check_loss(loss, lr, step + 1)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                meters[0] += loss.detach().double() * len(y)
                meters[1] += topk_correct(logits.detach(), y, 1).sum()
                meters[2] += topk_correct(logits.detach(), y, 5).sum()
                meters[3] += len(y)
            step += 1
            batch_in_epoch += 1
            images_seen += len(y) * info.world_size
            if bar is not None:
                bar.update(1)
            if bar is not None and step % check_every == 0:  # the loss read back: a sync on a GPU
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}",
                                img_s=f"{images_seen / max(time.time() - wall_start, 1e-9):.0f}")
            last_of_epoch = batch_in_epoch == per_epoch
            if config.checkpoint_every and step % config.checkpoint_every == 0 and not last_of_epoch:
                epoch_seconds = time.time() - start_time
                snapshot(folder.last)
            if run.stop_after_steps and step >= run.stop_after_steps:
                if not (config.checkpoint_every and step % config.checkpoint_every == 0):
                    epoch_seconds = time.time() - start_time
                    snapshot(folder.last)
                stopped = True
                break
            if config.max_steps and step >= config.max_steps:
                break
        if bar is not None:
            bar.close()
            bar = None
        if stopped:
            break
        # ---- the end of an epoch: all-reduce the training meters, validate, record, checkpoint
        check_loss(loss, lr, step)
        seconds = time.time() - start_time
        totals = dist.all_reduce_sum(meters.clone(), info).tolist()
        n = max(totals[3], 1)
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": schedule.lr(step - 1),
            "train_loss": totals[0] / n, "train_top1_error": 1 - totals[1] / n, "train_top5_error": 1 - totals[2] / n,
        }
        if data.val is not None and len(data.val):
            val = evaluate_images(model, data.val, data.preprocess, views=1, batch_size=config.batch_size, device=device,
                                  info=info, amp=config.amp, workers=config.data.workers)
            record.update(val_loss=val["loss"], val_top1_error=val["top1_error"], val_top5_error=val["top5_error"])
        record.update(images_per_second=totals[3] / max(seconds, 1e-9), epoch_seconds=seconds)
        schedule.epoch_end(record.get("val_top1_error"))
        history.append(record)
        folder.append_metrics(record)
        _tensorboard(folder, record)
        if on_epoch and info.is_main:
            on_epoch(record)
        epoch, batch_in_epoch, epoch_seconds = epoch + 1, 0, 0.0
        meters.zero_()
        improved = record.get("val_top1_error", -record["train_top1_error"]) < best
        if improved:
            best = record.get("val_top1_error", -record["train_top1_error"])
        snapshot(folder.last)
        if improved and info.is_main:
            atomic_copy(folder.last, folder.best)
        model.train()

    check_loss(loss, lr, step)
    if stopped:
        return {"stopped_at_step": step, "run_dir": str(folder.root)}
    return _finish(config, model, data, folder, device, info, history, n_params, time.time() - wall_start, step)


def _finish(config, model, data: Data, folder: RunFolder, device, info, history, n_params, wall, step) -> dict[str, Any]:
    """Final evaluation (1 view, and 10 views where the preset asks) on val and test; the report."""
    final: dict[str, Any] = {}
    views = sorted({1, config.eval_views})
    for split_name, images in (("val", data.val), ("test", data.test)):
        if images is None or not len(images):
            continue
        for v in views:
            r = evaluate_images(model, images, data.preprocess, views=v, batch_size=config.batch_size, device=device,
                                info=info, amp=config.amp, workers=config.data.workers)
            final[f"{split_name}_{v}view"] = {
                "top1_error": r["top1_error"], "top5_error": r["top5_error"],
                "top1_accuracy": 1 - r["top1_error"], "top5_accuracy": 1 - r["top5_error"], "images": r["images"],
                "loss": r["loss"],
            }
    report = {
        "preset": config.preset, "model": config.model.name, "model_options": config.model.options,
        "parameters": n_params, "classes": len(data.classes), "train_images": len(data.train),
        "epochs": len(history), "steps": step, "wall_seconds": wall,
        "final": final, "best_val_top1_error": min((r.get("val_top1_error", math.inf) for r in history), default=None),
        "hardware": hardware(device, info), "versions": versions(), "git_commit": ckpt_io.git_commit(),
        "run_dir": str(folder.root),
    }
    if info.is_main:
        folder.write_json("report.json", report)
        try:
            from .visualize import plot_curves

            plot_curves(history, folder.root / "curves.png")
        except Exception as e:  # a figure must never cost the run its report
            log.warning("could not draw curves.png: %s", e)
        try:
            from .report import evidence_from_training, write_report

            write_report(folder.root, evidence_from_training(model, data.preprocess, data.classes, data.test, data.val, device))
        except Exception as e:  # nor the page
            log.warning("could not write report.html: %s", e)
    return report


def _tensorboard(folder: RunFolder, record: dict[str, Any]) -> None:
    if not folder.write:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        log.info("tensorboard is not installed; no events written")
        return
    with SummaryWriter(str(folder.root / "tb")) as writer:
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                writer.add_scalar(key, value, record["epoch"])


def hardware(device: torch.device, info: dist.Dist) -> dict[str, Any]:
    hw = {"device": str(device), "processes": info.world_size, "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def versions() -> dict[str, str]:
    import torchvision

    from . import __version__

    return {"alexnet": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version(), "numpy": np.__version__}
