"""The training loop (§5): SGD with momentum and weight decay, the recipes' schedules, resumable.

``train(config, options)`` trains ``config.model`` on ``config.data`` into a run folder
(:mod:`alexnet.training.run_folder` has its layout) and returns a :class:`TrainResult`. It reads top
to bottom as torchvision's ``references/classification/train.py`` does: :func:`load_data`,
:func:`setup` (model, optimiser, schedule, the one :class:`~alexnet.training.step.TrainStep`),
:func:`train_one_epoch`, :func:`end_epoch` (all-reduce, validate, record, checkpoint), :func:`finish`
(the final evaluation and report.json), wired by :func:`train`.

What is fixed for a run is the frozen :class:`Run`; what changes every step is
:class:`~alexnet.training.resume.Progress`, which :mod:`alexnet.training.resume` saves into every
checkpoint and restores on ``--resume``. Checkpoints are written atomically; a loss that is not finite
stops the run with the last good checkpoint kept. Under torchrun every rank trains on its shard and
only rank 0 writes. The loop draws no figures and writes no report.html: a :class:`Callback`'s
``on_end`` does that (alexnet.reporting.html_report.TrainingReport, which ``alexnet train`` passes).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet import __version__, models
from alexnet import checkpoint as ckpt_io
from alexnet.atomic import DiskFull, atomic_link
from alexnet.data import ImageSet, Preprocess, iter_batches, num_batches, open_dataset, pipeline
from alexnet.data.fitted import prefit, statistics
from alexnet.data.imageset import split_off
from alexnet.errors import AlexNetError, one_line
from alexnet.inference.evaluate import iter_probabilities, shown_split
from alexnet.jobs import RunLock
from alexnet.runtime import apply_process_settings, cpu_name, resolve_device
from alexnet.training import distributed as dist
from alexnet.training import finetune, resume
from alexnet.training import step as train_steps
from alexnet.training.config import TrainConfig
from alexnet.training.optim import Schedule, set_lr
from alexnet.training.resume import Meters, Progress
from alexnet.training.run_folder import RunFolder

log = logging.getLogger(__name__)

LOSS_CHECK_EVERY = 50  # on a GPU: steps between reads of the loss (each read waits for the GPU to catch up)
LIVE_EVERY = 2.0  # seconds between live.json writes (alexnet explore --run follows a run by it)
TB_EVERY = 10  # steps between the per-step loss and lr in TensorBoard (at least LOSS_CHECK_EVERY on a GPU)


class Callback:
    """Hooks into the loop, for printing, the report and tests; the ``on_`` hooks run on rank 0 only.

    ``stop_at``: a step after which the run stops, checkpointed, as if interrupted there (0: never).
    The loop reads it once at the start and checks it only where it decides to checkpoint.
    """

    stop_at: int = 0

    def on_start(self, run: Run, progress: Progress) -> None:
        """Once the folder, the data and the model are known to be good, before the first step."""

    def on_epoch(self, record: dict[str, Any]) -> None:
        """A finished epoch's metrics.jsonl record."""

    def on_end(self, run: Run, result: TrainResult) -> None:
        """The run ended, finished or stopped at ``stop_at`` (``result.report`` is None then)."""


@dataclass
class RunOptions:
    """How to run (not what to train): where, and what to do with an existing run folder."""

    out: Path
    resume: bool = False  # continue from out/checkpoints/last.pt, with the run's own configuration
    force: bool = False  # start afresh in a folder that already holds a run (its files are replaced)
    progress_bar: bool = True  # tqdm when stderr is a terminal
    loss_check_every: int = 0  # steps between reads of the loss; 0: every step on a CPU, LOSS_CHECK_EVERY elsewhere
    callbacks: Sequence[Callback] = ()


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns, finished or stopped by a callback's ``stop_at``."""

    run_dir: Path
    steps: int  # optimiser steps in all
    report: dict[str, Any] | None  # report.json's numbers; None when stopped early (resume the run to finish it)
    history: list[dict[str, Any]]  # metrics.jsonl's records
    probabilities: dict[str, torch.Tensor] = field(default_factory=dict)  # split → its final one-view softmax (CPU)

    @property
    def stopped(self) -> bool:
        return self.report is None


class TrainingDiverged(AlexNetError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; the message says what was kept and how to resume."""


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None
    classes: list[str]
    preprocess: Preprocess


def load_data(config: TrainConfig, kept: Preprocess | None = None) -> Data:
    """Open ``config.data.spec``, hold out a val split if it has none, and fit the preprocessing
    (the recipe's augmentation with ``kept``'s normalisation and statistics when given: --init's)."""
    if not config.data.spec:
        raise AlexNetError(f"preset {config.preset} needs --data PATH (an image folder, CIFAR-10, IDX files or a packed store)")
    dataset = open_dataset(config.data.spec)
    if "train" not in dataset.splits:
        raise AlexNetError(f"{config.data.spec}: no train split to train on (found: {', '.join(dataset.splits) or 'none'})")
    train, val, test = dataset.splits["train"], dataset.splits.get("val"), dataset.splits.get("test")
    if len(dataset.classes) < 2 or not len(train):
        what = ("its train split holds no images" if not len(train) else
                f"one class ({dataset.classes[0]!r})" if dataset.classes else "no classes")
        raise AlexNetError(f"{config.data.spec}: {what}; a classifier learns from images of at least two classes")
    if val is None and config.data.val_fraction > 0:
        train, val = split_off(train, config.data.val_fraction, config.seed)
        val = val if len(val) else None  # too few images to hold any out
    if test is None:
        _say_no_test_split(config, val is not None and "val" not in dataset.splits, val is not None)
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    if kept is not None:
        pipe = replace(pipe, normalize=kept.pipeline.normalize)
        if kept.stats is not None and pipe.normalize == "mean_image" and kept.stats.mean_image.shape[0] != pipe.resize:
            raise AlexNetError(f"--init's mean image is {kept.stats.mean_image.shape[0]} px but the recipe resizes to "
                               f"{pipe.resize}; set data.pipeline_options.resize={kept.stats.mean_image.shape[0]}")
    train, val, test = (prefit(s, pipe.resize, pipe.channels) for s in (train, val, test))
    if kept is not None:
        return Data(train, val, test, list(dataset.classes), Preprocess(pipe, kept.stats))
    stats = dataset.stats if dataset.stats is not None and dataset.stats.mean_image.shape[0] == pipe.resize else None
    if stats is None and (pipe.normalize != "unit" or pipe.lighting > 0):
        stats = statistics(train, pipe.resize, pipe.channels, config.data.workers)
    return Data(train, val, test, list(dataset.classes), Preprocess(pipe, stats))




def _say_no_test_split(config: TrainConfig, held_out: bool, has_val: bool) -> None:
    """At the start, not as an empty table at the end: what the final results will be on."""
    if has_val:
        what = f"{config.data.val_fraction:.0%} of train held out as val" if held_out else "its val split"
        log.warning("%s: no test split; the final results are on %s", config.data.spec, what)
    else:
        log.warning("%s: no test split and no val split (data.val_fraction=0, or too few images to hold any out): the "
                    "final results table will be empty; "
                    "--set data.val_fraction=0.1 holds out a tenth of train to evaluate on", config.data.spec)


def create_model(config: TrainConfig, data: Data) -> nn.Module:
    model = models.create(config.model.name, num_classes=len(data.classes), **config.model.options)
    pipe = data.preprocess.pipeline
    if model.in_channels != pipe.channels:
        raise AlexNetError(f"model {config.model.name} takes {model.in_channels} channels but pipeline {pipe.name} gives {pipe.channels}")
    if pipe.crop != model.input_size:
        raise AlexNetError(f"model {config.model.name} takes {model.input_size}×{model.input_size} input but the pipeline crops "
                           f"{pipe.crop}; set data.pipeline_options.crop={model.input_size}"
                           + (" (--init's checkpoint fixes the input size)" if config.finetune.init else
                              f" or model.options.input_size={pipe.crop}"))
    return model


# ---------------------------------------------------------------------------------------------
# Set-up


@dataclass(frozen=True)
class Run:
    """What is fixed for the whole run, made once by :func:`setup` (what changes is the Progress)."""

    config: TrainConfig
    options: RunOptions
    world: dist.World
    device: torch.device
    folder: RunFolder
    data: Data
    model: nn.Module
    train_step: train_steps.TrainStep
    schedule: Schedule  # its plateau state changes at epoch ends, and is saved with the Progress
    per_epoch: int  # batches per epoch, per process
    check_every: int  # steps between reads of the loss
    stop_at: int = 0  # the callbacks' earliest stop_at (0: none)
    init_rows: list[finetune.InitRow] = field(default_factory=list)  # --init: what was loaded, re-initialised, frozen
    lock: RunLock | None = None  # rank 0's hold on the folder
    tb: Any = None  # rank 0's TensorBoard writer, one for the run

    @property
    def callbacks(self) -> Sequence[Callback]:
        """The callbacks whose ``on_`` hooks run in this process (rank 0's)."""
        return self.options.callbacks if self.world.is_main else ()


def setup(config: TrainConfig, options: RunOptions, world: dist.World, device: torch.device) -> tuple[Run, Progress]:
    """Check the folder, load the data, build model and step; on resume restore the state. Nothing is
    written to the folder before the data and the model are known to be good."""
    folder = RunFolder(options.out, write=world.is_main)
    resume.check_folder(folder, resume=options.resume, force=options.force)
    changes = resume.resume_changes(folder, config) if options.resume else {}
    last = ckpt_io.load(folder.last, map_location="cpu") if options.resume else None
    if last is not None:
        resume.check_unfinished(folder, last, config)
    config, init = finetune.init_checkpoint(config, resume=options.resume)
    models.check_options(config.model.name, config.model.options)  # before the data is read: a typo fails at once
    torch.manual_seed(config.seed)
    kept = (init or last) if config.finetune.init and config.finetune.keep_preprocess else None  # a resume: the run's own
    kept_preprocess = None if kept is None else Preprocess.from_checkpoint(
        kept.preprocess, config.finetune.init if init is not None else folder.last, "the run keeps its checkpoint's preprocessing")
    data = load_data(config, kept_preprocess)
    model = create_model(config, data)
    init_rows = finetune.prepare(model, config, init, data.classes, folder.init) if config.finetune.init else []
    lr_mults = finetune.lr_multipliers(init_rows, config.finetune.loaded_lr_mult)
    settings = config.runtime_settings(device)
    apply_process_settings(settings)  # the process-wide ones (allocator, cudnn.benchmark): here, once per run
    train_step = train_steps.make_train_step(model, config, settings, distributed=world.enabled, lr_mults=lr_mults)
    per_epoch = num_batches(len(data.train), config.batch_size, drop_last=config.data.drop_last, world_size=world.world_size)
    if per_epoch < 1:
        raise AlexNetError(f"--batch-size {config.batch_size} × {world.world_size} process(es) is larger than the "
                           f"{len(data.train)} training images of {config.data.spec}; pass a smaller --batch-size")
    lock = RunLock(folder).acquire() if world.is_main else None  # one writer: a second train on this folder is refused here
    run = Run(config, options, world, device, folder, data, model, train_step, Schedule(config, per_epoch), per_epoch,
              check_every=options.loss_check_every or (1 if device.type == "cpu" else LOSS_CHECK_EVERY),
              stop_at=min((cb.stop_at for cb in options.callbacks if cb.stop_at), default=0), init_rows=init_rows, lock=lock)
    progress = Progress(aug=torch.Generator().manual_seed(config.seed + 7919 * world.rank), meters=Meters.zeros(device))
    try:
        open_folder(run, progress, last, changes)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    run = replace(run, tb=open_tensorboard(folder))
    dist.barrier(world)
    return run, progress


def open_folder(run: Run, progress: Progress, last: ckpt_io.Checkpoint | None, changes: dict[str, tuple[Any, Any]]) -> None:
    """A resume restores ``last`` (last.pt) and logs ``changes``; a new run clears the folder and writes config.json."""
    folder = run.folder
    if last is not None:
        resume.restore_run(folder, last, changes, model=run.model, progress=progress, train_step=run.train_step,
                           schedule=run.schedule, world=run.world)
        return
    folder.start()
    folder.write_config(run.config.to_dict())
    if run.init_rows:
        folder.write_init([r.to_dict() for r in run.init_rows])


def snapshot(run: Run, progress: Progress, path: Path) -> None:
    """Write a checkpoint of the run as it is now (rank 0; every rank takes part in gathering the RNG
    states). Weights that are no longer finite are never written: the last good checkpoint stays."""
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise diverged(run, f"weights became non-finite at epoch {progress.epoch + 1}, step {progress.steps}")
    train_state = resume.save_state(progress, run.train_step, run.schedule, run.world)
    if not run.world.is_main:
        return
    ck = ckpt_io.from_model(run.model, run.data.classes, model_options=dict(run.config.model.options),
                            preprocess=run.data.preprocess.to_state(), train_state=train_state,
                            provenance=ckpt_io.collect_provenance(run.config.preset, run.config.to_dict()))
    ckpt_io.save(path, ck)
    progress.last_checkpoint = progress.steps


def diverged(run: Run, what: str) -> TrainingDiverged:
    """The error that stops a run because ``what`` became non-finite, naming what was kept."""
    last = run.folder.last
    kept = f"The last good checkpoint is {last}" if last.is_file() else "No checkpoint was written before it"
    return TrainingDiverged(f"the {what}; stopped. {kept}; lower the learning rate or check the data")


# ---------------------------------------------------------------------------------------------
# The loop


def train_one_epoch(run: Run, progress: Progress) -> bool:
    """Train the rest of the current epoch; True when the run stopped at a callback's ``stop_at`` (checkpointed)."""
    cfg, p = run.config, progress
    run.model.train()
    started = time.time() - p.epoch_seconds
    batches = iter_batches(run.data.train, cfg.batch_size, size=run.data.preprocess.pipeline.resize, device=run.device,
                           shuffle=True, seed=cfg.seed, epoch=p.epoch, start=p.batch, workers=cfg.data.workers,
                           rank=run.world.rank, world_size=run.world.world_size, drop_last=cfg.data.drop_last)
    with StepLog(run, p) as step_log:
        for x, y in batches:
            lr = set_lr(run.train_step.optimizer, run.schedule, p.steps)
            logits, loss = checked_step(run, p, x, y, lr)
            p.meters.add(logits, y, loss.double() * len(y))
            p.steps, p.batch = p.steps + 1, p.batch + 1
            p.meters.mark(p.batch, run.per_epoch)
            step_log.step(loss, lr, len(y))
            if checkpoint_due(run, p):
                p.epoch_seconds = time.time() - started
                snapshot(run, p, run.folder.last)
                if p.steps == run.stop_at:
                    return True
            if cfg.max_steps and p.steps >= cfg.max_steps:
                break
    p.epoch_seconds = time.time() - started
    return False


def checked_step(run: Run, p: Progress, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One TrainStep on an augmented batch; the loss is read back every ``check_every`` steps."""
    try:
        return run.train_step(run.data.preprocess.augment(x, p.aug), y, check=(p.steps + 1) % run.check_every == 0)
    except train_steps.NonFiniteLoss as e:  # its value, where every step is checked; else which steps it may be
        value = e.value if run.check_every == 1 else "non-finite"
        raise diverged(run, f"loss became {value} at epoch {p.epoch + 1}, {loss_steps(run, p.steps + 1)} (lr {lr:g})") from None


def checkpoint_due(run: Run, p: Progress) -> bool:
    """Every ``checkpoint_every`` steps inside an epoch (its end has its own), and at a callback's ``stop_at``."""
    every = run.config.checkpoint_every
    return bool(every and p.steps % every == 0 and p.batch < run.per_epoch) or p.steps == run.stop_at


def loss_steps(run: Run, at_step: int) -> str:
    """Which steps a non-finite loss may have come from (``at_step``: the last step's number, from 1)."""
    if run.check_every == 1:
        return f"step {at_step}"
    return f"one of steps {max(at_step + 1 - run.check_every, 1)}–{at_step}"


class StepLog:
    """Rank 0's per-step output: the tqdm bar (on a terminal) and TensorBoard's step/loss and step/lr,
    both only on steps where the loss is read back anyway (a host sync on a GPU)."""

    def __init__(self, run: Run, progress: Progress) -> None:
        self.run, self.progress = run, progress
        self.started, self.images = time.time(), 0
        self.next_live = 0.0
        self.live: dict[str, Any] = {"state": "training"}
        show = run.options.progress_bar and run.world.is_main and sys.stderr.isatty()
        self.bar = tqdm(total=run.per_epoch, initial=progress.batch, desc=f"epoch {progress.epoch + 1}/{run.config.epochs}",
                        leave=False, unit="batch", dynamic_ncols=True) if show else None

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def step(self, loss: torch.Tensor, lr: float, batch: int) -> None:
        run, steps = self.run, self.progress.steps
        self.images += batch * run.world.world_size
        if self.bar is not None:
            self.bar.update(1)
            if steps % run.check_every == 0:
                elapsed = max(time.time() - self.started, 1e-9)
                left = (run.schedule.total_steps - steps) * elapsed * run.world.world_size / max(self.images / batch, 1)
                self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{self.images / elapsed:.0f}",
                                     run_left=tqdm.format_interval(left))
        if run.tb is not None and steps % max(run.check_every, TB_EVERY) == 0:
            run.tb.add_scalar("step/loss", loss.item(), steps)
            run.tb.add_scalar("step/lr", lr, steps)
        if time.monotonic() >= self.next_live:
            self.write_live(loss if steps % run.check_every == 0 else None, lr)

    def write_live(self, loss: torch.Tensor | None, lr: float) -> None:
        """live.json, at most every LIVE_EVERY seconds: one small atomic write, the loss only on steps
        that read it back anyway (so a GPU never waits for it)."""
        run, p = self.run, self.progress
        elapsed = max(time.time() - self.started, 1e-9)
        self.live.update(epoch=p.epoch + 1, epochs=run.config.epochs, batch=p.batch, per_epoch=run.per_epoch,
                         steps=p.steps, total_steps=run.schedule.total_steps, lr=lr,
                         images_per_second=self.images / elapsed, time=time.time())
        if loss is not None:
            self.live["loss"] = loss.item()
        run.folder.write_live(self.live)
        self.next_live = time.monotonic() + LIVE_EVERY


def end_epoch(run: Run, progress: Progress) -> dict[str, Any]:
    """All-reduce the training meters, validate, record, checkpoint last.pt (and best.pt when better)."""
    p = progress
    try:
        run.train_step.check()
    except train_steps.NonFiniteLoss as e:
        raise diverged(run, f"{e} at epoch {p.epoch + 1}, {loss_steps(run, p.steps)}") from None
    trained = p.meters.summed(run.world)
    record: dict[str, Any] = {"epoch": p.epoch + 1, "step": p.steps, "lr": run.schedule.lr(p.steps - 1),
                              **{f"train_{k}": v for k, v in trained.items() if k != "images"}}
    tested = {"val": run.data.val, "test": run.data.test if run.config.test_each_epoch else None}  # test: recorded, never chooses
    for name, images in tested.items():
        if images is None or not len(images):
            continue
        if not images.in_memory:  # images decoded now may be bad: keep the epoch's training first
            snapshot(run, p, run.folder.last)
        scores = evaluate_split(run, images, views=1)
        record.update({f"{name}_{k}": scores[k] for k in ("loss", "top1_error", "top5_error")})
    record.update(images_per_second=trained["images"] / max(p.epoch_seconds, 1e-9), epoch_seconds=p.epoch_seconds)
    run.schedule.epoch_end(record.get("val_top1_error"))
    p.history.append(record)
    run.folder.append_metrics(record)
    tensorboard(run, record)
    for cb in run.callbacks:
        cb.on_epoch(record)
    score = record.get("val_top1_error", record["train_top1_error"])  # lower is better, with or without a val split
    improved = score < p.best
    p.epoch, p.batch, p.epoch_seconds, p.best, p.meters = p.epoch + 1, 0, 0.0, min(p.best, score), Meters.zeros(run.device)
    snapshot(run, p, run.folder.last)
    if improved and run.world.is_main:
        atomic_link(run.folder.last, run.folder.best)
    return record


@torch.no_grad()
def evaluate_split(run: Run, images: ImageSet, views: int, keep: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Loss and top-1/top-5 error of the softmax averaged over ``views`` (1 or 10, §4.1), over all ranks;
    ``keep`` (a list) receives the probabilities batch by batch, on the CPU (one process only: under
    torchrun each rank holds a shard)."""
    meters = Meters.zeros(run.device)
    for probs, y in iter_probabilities(run.model, run.data.preprocess, images, views=views, batch_size=run.config.batch_size,
                                       device=run.device, precision=run.config.precision, workers=run.config.data.workers,
                                       rank=run.world.rank, world_size=run.world.world_size):
        meters.add(probs, y, F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
        if keep is not None and not run.world.enabled:
            keep.append(probs.float().cpu())
    return {**meters.summed(run.world), "views": views}


def train(config: TrainConfig, options: RunOptions) -> TrainResult:
    """Train as ``config`` says into ``options.out``; the callbacks see it start, each epoch, and its end."""
    device = resolve_device(config.device)
    try:
        world = dist.setup(device)
    except RuntimeError as e:  # under torchrun: the others could not be reached
        raise lost_a_rank(e, options) from None
    device = dist.local_device(device, world)
    run = progress = None
    try:
        run, progress = setup(config, options, world, device)
        result = run_epochs(run, progress)
        for cb in run.callbacks:
            cb.on_end(run, result)
        return result
    except KeyboardInterrupt:
        raise interrupted(progress, options) from None
    except RuntimeError as e:
        if world.enabled and any(w in str(e).lower() for w in ("gloo", "nccl", "connection", "peer", "timed out")):
            raise lost_a_rank(e, options) from None
        raise
    except DiskFull as e:  # the file it would have replaced is whole; say which checkpoint a resume starts from
        last = RunFolder(options.out, write=False).last
        raise DiskFull(e.path, f"the last checkpoint {last} is kept" if last.is_file() else "no checkpoint was written") from None
    finally:
        if run is not None and run.tb is not None:
            run.tb.close()
        if run is not None and run.lock is not None:
            run.lock.release()
        dist.cleanup(world)


def run_epochs(run: Run, progress: Progress) -> TrainResult:
    """Epoch after epoch until ``epochs`` or ``max_steps``, or a callback's ``stop_at``; then :func:`finish`."""
    for cb in run.callbacks:
        cb.on_start(run, progress)
    started, cfg = time.time(), run.config
    while progress.epoch < cfg.epochs and not (cfg.max_steps and progress.steps >= cfg.max_steps):
        if train_one_epoch(run, progress):
            return TrainResult(run.folder.root, progress.steps, None, list(progress.history))
        end_epoch(run, progress)
    return finish(run, progress, time.time() - started)


def lost_a_rank(e: RuntimeError, options: RunOptions) -> AlexNetError:
    """A collective failed: another process died (torchrun names which) or the network went."""
    last = RunFolder(options.out, write=False).last
    kept = f"the last checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    first = one_line(e, 160)
    return AlexNetError(f"lost another training process ({first}); torchrun's log names the rank that failed; {kept}; "
                        f"resume with: torchrun ... -m alexnet train --resume {options.out} (or --max-restarts N resumes by itself)")


def interrupted(progress: Progress | None, options: RunOptions) -> TrainingInterrupted:
    """Ctrl-C: where the run stopped, which checkpoint is kept, the exact command that continues it."""
    folder = RunFolder(options.out, write=False)
    if progress is None and folder.last.is_file():  # while a resume was setting up: the run is as it was
        return TrainingInterrupted(f"interrupted before training resumed; the last checkpoint is {folder.last}; resume with: "
                                   f"alexnet train --resume {folder.root}")
    if progress is None or not folder.last.is_file():
        return TrainingInterrupted(f"interrupted before any checkpoint was written to {folder.root}; nothing to resume: "
                                   "the same command with --force starts it again")
    kept = f"step {progress.last_checkpoint}" if progress.last_checkpoint is not None else "the one it resumed from"
    return TrainingInterrupted(f"interrupted at epoch {progress.epoch + 1}, step {progress.steps}; the last checkpoint is "
                               f"{folder.last} ({kept}); resume with: alexnet train --resume {folder.root}")


# ---------------------------------------------------------------------------------------------
# The end: final evaluation and report.json


def finish(run: Run, progress: Progress, wall: float) -> TrainResult:
    """Final evaluation (1 view, and 10 views where the preset asks) on val and test; report.json."""
    final, probabilities = final_evaluation(run)
    config = run.config
    report = {
        "preset": config.preset, "model": config.model.name, "model_options": config.model.options,
        "parameters": sum(p.numel() for p in run.model.parameters()), "classes": len(run.data.classes),
        "train_images": len(run.data.train), "epochs": len(progress.history), "steps": progress.steps, "wall_seconds": wall,
        "final": final, "best_val_top1_error": min((r.get("val_top1_error", math.inf) for r in progress.history), default=None),
        "hardware": hardware(run.device, run.world), "versions": versions(), "git_commit": ckpt_io.git_commit(),
        "run_dir": str(run.folder.root),
    }
    run.folder.write_report_json(report)
    if live := run.folder.read_live():  # a reader of live.json alone sees that the run has ended, and where
        run.folder.write_live({**live, "state": "finished", "epoch": len(progress.history), "batch": run.per_epoch,
                               "steps": progress.steps, "time": time.time()})
    return TrainResult(run.folder.root, progress.steps, report, list(progress.history), probabilities)


def final_evaluation(run: Run) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """report.json's ``final`` (split_Nview → errors), and the one-view probabilities of the split the
    report shows (test, else val), kept for its confusion matrix so that it costs no second pass."""
    final: dict[str, Any] = {}
    shown, kept = shown_split(run.data.test, run.data.val), []
    for split_name, images in (("val", run.data.val), ("test", run.data.test)):
        if images is None or not len(images):
            continue
        for v in sorted({1, run.config.eval_views}):
            r = evaluate_split(run, images, views=v, keep=kept if v == 1 and split_name == shown else None)
            final[f"{split_name}_{v}view"] = {"top1_error": r["top1_error"], "top5_error": r["top5_error"],
                                              "top1_accuracy": 1 - r["top1_error"], "top5_accuracy": 1 - r["top5_error"],
                                              "images": r["images"], "loss": r["loss"]}
    return final, ({shown: torch.cat(kept)} if kept else {})


def open_tensorboard(folder: RunFolder):
    """One event writer for the whole run (rank 0), or None without the optional tensorboard package."""
    if not folder.write:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        log.info("tensorboard is not installed; no events written")
        return None
    return SummaryWriter(str(folder.tb))


def tensorboard(run: Run, record: dict[str, Any]) -> None:
    """An epoch's scalars, at the step it ended (the per-step loss and lr share the axis)."""
    if run.tb is not None:
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                run.tb.add_scalar(f"epoch/{key}", value, record["step"])
        run.tb.flush()


def hardware(device: torch.device, world: dist.World) -> dict[str, Any]:
    hw = {"device": str(device), "processes": world.world_size, "cpu": cpu_name(),
          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def versions() -> dict[str, str]:
    return {"alexnet": __version__, "torch": str(torch.__version__), "torchvision": ckpt_io.torchvision_version(),
            "python": platform.python_version(), "numpy": np.__version__}
