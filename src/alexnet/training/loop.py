"""The training loop (§5): SGD with momentum and weight decay, the recipes' schedules, resumable.

``train(config, run)`` trains ``config.model`` on ``config.data`` into a run folder
(:mod:`alexnet.training.run_folder` has its layout). It reads top to bottom as torchvision's
``references/classification/train.py`` does: :func:`load_data`, :func:`setup` (model, optimiser,
schedule, the one :class:`~alexnet.training.step.TrainStep`), :func:`train_one_epoch`, :func:`end_epoch`
(all-reduce, validate, record, checkpoint), :func:`finish` (the final evaluation and the report),
wired by :func:`train`.

Never losing work: checkpoints are written atomically; :class:`TrainState` saves and restores
model, optimiser, scaler, schedule, RNG states and the position inside the epoch in one place, so
on the CPU with a fixed seed a resumed run ends with the same weights as an uninterrupted one. A
resumed run continues its own saved configuration (``RunFolder.effective_config``); only
``epochs``, ``device`` and ``data.workers`` may change, and each change is appended to
resume.jsonl. A loss that is not finite stops the run with the last good checkpoint kept. Under
torchrun every rank trains on its shard and only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
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
from alexnet.errors import AlexNetError
from alexnet.inference.evaluate import iter_probabilities, shown_split, topk_correct
from alexnet.reporting.figures import plot_curves
from alexnet.reporting.html_report import evidence_from_training, write_report
from alexnet.runtime import apply_process_settings, resolve_device
from alexnet.training import distributed as dist
from alexnet.training import finetune
from alexnet.training import step as steps
from alexnet.training.config import TrainConfig, build, resume_changes
from alexnet.training.optim import Schedule, set_lr
from alexnet.training.run_folder import RunFolder, RunLock

log = logging.getLogger(__name__)

LOSS_CHECK_EVERY = 50  # on a GPU: steps between reads of the loss (each read waits for the GPU to catch up)
TB_EVERY = 10  # steps between the per-step loss and lr in TensorBoard (at least LOSS_CHECK_EVERY on a GPU)


class Callback:
    """Hooks into the loop, for printing and for tests; the loop calls them and reads nothing else."""

    def on_start(self, session: Session) -> None:
        """Once the folder, the data and the model are known to be good, before the first step (rank 0)."""

    def on_epoch(self, record: dict[str, Any]) -> None:
        """A finished epoch's metrics.jsonl record (rank 0)."""

    def after_step(self, state: TrainState) -> bool:
        """After every optimiser step; True stops the run there, checkpointed, as an interruption would."""
        return False


class StopAfter(Callback):
    """Stop as if killed right after the checkpoint at step ``steps`` (the resume tests)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def after_step(self, state: TrainState) -> bool:
        return state.step >= self.steps


class EpochPrinter(Callback):
    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.fn(record)


@dataclass
class RunOptions:
    """How to run (not what to train): where, and what to do with an existing run folder."""

    out: Path
    resume: bool = False  # continue from out/checkpoints/last.pt, with the run's own configuration
    force: bool = False  # start afresh in a folder that already holds a run (its files are replaced)
    progress_bar: bool = True  # tqdm when stderr is a terminal
    loss_check_every: int = 0  # steps between reads of the loss; 0: every step on a CPU, LOSS_CHECK_EVERY elsewhere
    callbacks: Sequence[Callback] = ()


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
    if val is None and config.data.val_fraction > 0:
        train, val = split_off(train, config.data.val_fraction, config.seed)
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    if kept is not None:
        pipe = replace(pipe, normalize=kept.pipeline.normalize)
        if kept.stats is not None and pipe.normalize == "image" and kept.stats.mean_image.shape[0] != pipe.resize:
            raise AlexNetError(f"--init's mean image is {kept.stats.mean_image.shape[0]} px but the recipe resizes to "
                               f"{pipe.resize}; set data.pipeline_options.resize={kept.stats.mean_image.shape[0]}")
    train, val, test = (prefit(s, pipe.resize, pipe.channels) for s in (train, val, test))
    if kept is not None:
        return Data(train, val, test, list(dataset.classes), Preprocess(pipe, kept.stats))
    stats = dataset.stats if dataset.stats is not None and dataset.stats.mean_image.shape[0] == pipe.resize else None
    if stats is None and (pipe.normalize != "unit" or pipe.lighting > 0):
        stats = statistics(train, pipe.resize, pipe.channels, config.data.workers)
    return Data(train, val, test, list(dataset.classes), Preprocess(pipe, stats))


# ---------------------------------------------------------------------------------------------
# The state of a run, saved and restored in one place


@dataclass
class TrainState:
    """Where the run is: counters, the running training meters, the augmentation stream."""

    aug: torch.Generator  # this rank's augmentation draws
    meters: torch.Tensor  # float64 [4]: loss sum, top-1 hits, top-5 hits, images of this epoch so far
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimiser steps in all
    best: float = math.inf  # the best epoch's score (val top-1 error, else train top-1 error)
    epoch_seconds: float = 0.0  # of the current epoch, before an interruption


@dataclass
class Session:
    """Everything :func:`setup` made; the loop's pieces take it."""

    config: TrainConfig
    run: RunOptions
    world: dist.World
    device: torch.device
    folder: RunFolder
    data: Data
    model: nn.Module
    step: steps.TrainStep
    schedule: Schedule
    state: TrainState
    per_epoch: int
    check_every: int
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: int | None = None  # the step of the last checkpoint this process wrote
    lock: RunLock | None = None  # rank 0's hold on the folder
    init_rows: list[finetune.InitRow] = field(default_factory=list)  # --init: what was loaded, re-initialised, frozen
    tb: Any = None  # rank 0's TensorBoard writer, one for the run


def save_state(s: Session) -> dict[str, Any]:
    """The checkpoint's ``train_state``: everything needed to continue exactly from here."""
    st = s.state
    rng = {"torch": torch.get_rng_state(), "aug": st.aug.get_state(),
           "cuda": torch.cuda.get_rng_state(s.device) if s.device.type == "cuda" else None}
    if s.world.enabled:  # every rank's augmentation stream
        states = [torch.empty_like(rng["aug"]) for _ in range(s.world.world_size)]
        torch.distributed.all_gather_object(states, rng["aug"])
        rng["aug"] = states
    return {"epoch": st.epoch, "batch": st.batch, "step": st.step, "best": st.best, "meters": st.meters.cpu(),
            "epoch_seconds": st.epoch_seconds, **s.step.state_dict(), "schedule": s.schedule.state_dict(), "rng": rng}


def restore_state(s: Session, ck: ckpt_io.Checkpoint) -> None:
    """The mirror of :func:`snapshot` and :func:`save_state`: the weights, then the training state."""
    s.model.load_state_dict(ck.state_dict)
    ts = ck.train_state
    st = s.state
    st.epoch, st.batch, st.step, st.best = ts["epoch"], ts["batch"], ts["step"], ts["best"]
    st.epoch_seconds, st.meters = ts.get("epoch_seconds", 0.0), ts["meters"].to(s.device)
    s.step.load_state_dict(ts)
    s.schedule.load_state_dict(ts["schedule"])
    torch.set_rng_state(ts["rng"]["torch"])
    aug = ts["rng"]["aug"]
    st.aug.set_state(aug[s.world.rank] if isinstance(aug, list) else aug)
    if s.device.type == "cuda" and ts["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(ts["rng"]["cuda"], s.device)


def snapshot(s: Session, path: Path) -> None:
    """Write a checkpoint of the run as it is now (rank 0; every rank takes part in gathering the RNG
    states). Weights that are no longer finite are never written: the last good checkpoint stays."""
    if not all(torch.isfinite(p).all() for p in s.model.parameters()):
        raise diverged(s, f"weights became non-finite at epoch {s.state.epoch + 1}, step {s.state.step}")
    train_state = save_state(s)
    if not s.world.is_main:
        return
    ck = ckpt_io.from_model(s.model, s.data.classes, model_options=dict(s.config.model.options),
                            preprocess=s.data.preprocess.to_state(),
                            provenance=ckpt_io.collect_provenance(s.config.preset, s.config.to_dict()), train_state=train_state)
    ckpt_io.save(path, ck)
    s.last_checkpoint = s.state.step


def diverged(s: Session, what: str) -> TrainingDiverged:
    """The error that stops a run because ``what`` became non-finite, naming what was kept."""
    kept = f"The last good checkpoint is {s.folder.last}" if s.folder.last.is_file() else "No checkpoint was written before it"
    return TrainingDiverged(f"the {what}; stopped. {kept}; lower the learning rate or check the data")


# ---------------------------------------------------------------------------------------------
# Set-up


def check_folder(folder: RunFolder, run: RunOptions) -> None:
    """Refuse, before anything is created, a folder that holds a run (unless resuming or forced) or nothing to resume."""
    if run.resume:
        if not folder.last.exists():
            raise AlexNetError(f"{folder.root}: nothing to resume (no checkpoints/last.pt)")
        return
    if folder.root.exists() and not folder.root.is_dir():
        raise AlexNetError(f"{folder.root} exists and is not a folder")
    if folder.root.exists() and folder.holds_run() and not run.force:
        raise AlexNetError(f"{folder.root} already holds a run; pass --resume to continue it or --force to start afresh")
    others = [p for p in folder.root.iterdir() if p.name != ".lock" and not p.name.endswith(".tmp")] if folder.root.is_dir() else []
    if others and not folder.holds_run() and not run.force:
        raise AlexNetError(f"{folder.root} holds other files and no run; choose a new or empty --out (or --force to train "
                           "into it: only the run's own files are written there)")


def resumed_config(folder: RunFolder, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """What ``config`` changes in the run saved in ``folder`` (only the resumable settings may differ)."""
    saved = build(TrainConfig, folder.effective_config())
    return resume_changes(saved, config, str(folder.root))


def build_model(config: TrainConfig, data: Data) -> nn.Module:
    model = models.create(config.model.name, num_classes=len(data.classes), **config.model.options)
    pipe = data.preprocess.pipeline
    if model.in_channels != pipe.channels:
        raise AlexNetError(f"model {config.model.name} takes {model.in_channels} channels but pipeline {pipe.name} gives {pipe.channels}")
    if pipe.crop != model.input_size:
        raise AlexNetError(f"model {config.model.name} takes {model.input_size}×{model.input_size} input but the pipeline crops "
                           f"{pipe.crop}; set data.pipeline_options.crop or the model's input size")
    return model


def setup(config: TrainConfig, run: RunOptions, world: dist.World, device: torch.device) -> Session:
    """Check the folder, load the data, build model and step; on resume restore the state. Nothing is
    written to the folder before the data and the model are known to be good."""
    folder = RunFolder(run.out, write=world.is_main)
    check_folder(folder, run)
    changes = resumed_config(folder, config) if run.resume else {}
    last = ckpt_io.load(folder.last, map_location="cpu") if run.resume else None
    config, init = finetune.init_checkpoint(config, resume=run.resume)
    models.check_options(config.model.name, config.model.options)  # before the data is read: a typo fails at once
    torch.manual_seed(config.seed)
    kept = (init or last) if config.finetune.init and config.finetune.keep_preprocess else None  # a resume: the run's own
    data = load_data(config, Preprocess.from_state(kept.preprocess) if kept is not None else None)
    model = build_model(config, data)
    init_rows = finetune.prepare(model, config, init, data.classes, folder.init) if config.finetune.init else []
    lr_mults = finetune.lr_multipliers(init_rows, config.finetune.loaded_lr_mult)
    settings = config.runtime_settings(device)
    apply_process_settings(settings)  # the process-wide ones (allocator, cudnn.benchmark): here, once per run
    step = steps.make_train_step(model, config, settings, distributed=world.enabled, lr_mults=lr_mults)
    per_epoch = num_batches(len(data.train), config.batch_size, drop_last=True, world_size=world.world_size)
    if per_epoch < 1:
        raise AlexNetError(f"--batch-size {config.batch_size} × {world.world_size} process(es) is larger than the "
                           f"{len(data.train)} training images of {config.data.spec}; pass a smaller --batch-size")
    state = TrainState(aug=torch.Generator().manual_seed(config.seed + 7919 * world.rank),
                       meters=torch.zeros(4, dtype=torch.float64, device=device))
    check_every = run.loss_check_every or (1 if device.type == "cpu" else LOSS_CHECK_EVERY)
    s = Session(config, run, world, device, folder, data, model, step, Schedule(config, per_epoch), state, per_epoch, check_every,
                init_rows=init_rows)
    if world.is_main:
        s.lock = RunLock(folder).acquire()  # one writer: a second train on this folder is refused here
    try:
        if last is not None:
            resume(s, last, changes)
        else:
            folder.start()
            folder.write_config(config.to_dict())
            if init_rows:
                folder.write_init([r.to_dict() for r in init_rows])
    except BaseException:
        if s.lock is not None:
            s.lock.release()
        raise
    s.tb = open_tensorboard(folder)
    dist.barrier(world)
    return s


def resume(s: Session, ck: ckpt_io.Checkpoint, changes: dict[str, tuple[Any, Any]]) -> None:
    """Restore the run from its last.pt, keep the metrics of the epochs it finished, log what changed."""
    if not ck.train_state:
        raise AlexNetError(f"{s.folder.last}: weights without a training state (an import or an export), so there is "
                           "nothing to resume; to start a new run from these weights use --init (fine-tuning)")
    restore_state(s, ck)
    s.history = s.folder.keep_metrics_of(s.state.epoch)
    if changes:
        s.folder.log_resume(changes, s.state.step)
    s.folder.clean_temporary()
    log.info("resuming %s at epoch %d, batch %d (step %d)", s.folder.root, s.state.epoch + 1, s.state.batch, s.state.step)


# ---------------------------------------------------------------------------------------------
# The loop


def train_one_epoch(s: Session) -> bool:
    """Train the rest of the current epoch; True when a callback stopped the run (checkpointed)."""
    cfg, st = s.config, s.state
    s.model.train()
    start_time = time.time() - st.epoch_seconds
    batches = iter_batches(s.data.train, cfg.batch_size, size=s.data.preprocess.pipeline.resize, device=s.device, shuffle=True,
                           seed=cfg.seed, epoch=st.epoch, start=st.batch, workers=cfg.data.workers, rank=s.world.rank,
                           world_size=s.world.world_size, drop_last=True)
    bar = progress_bar(s)
    wall_start, done, stop = time.time(), 0, False
    for x, y in batches:
        lr = set_lr(s.step.optimizer, s.schedule, st.step)
        try:
            logits, loss = s.step(s.data.preprocess.train(x, st.aug), y, check=(st.step + 1) % s.check_every == 0)
        except steps.NonFiniteLoss as e:  # its value, where every step is checked; else which steps it may be
            value = e.value if s.check_every == 1 else "non-finite"
            raise diverged(s, f"loss became {value} at epoch {st.epoch + 1}, {loss_steps(s, st.step + 1)} (lr {lr:g})") from None
        with torch.no_grad():
            st.meters[0] += loss.double() * len(y)
            st.meters[1] += topk_correct(logits, y, 1).sum()
            st.meters[2] += topk_correct(logits, y, 5).sum()
            st.meters[3] += len(y)
        st.step, st.batch, done = st.step + 1, st.batch + 1, done + len(y) * s.world.world_size
        if bar is not None:
            bar.update(1)
            if st.step % s.check_every == 0:  # the loss read back: a sync on a GPU
                elapsed = max(time.time() - wall_start, 1e-9)
                left = (s.schedule.total_steps - st.step) * elapsed * s.world.world_size / max(done / len(y), 1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{done / elapsed:.0f}",
                                run_left=tqdm.format_interval(left))
        if s.tb is not None and st.step % max(s.check_every, TB_EVERY) == 0:  # where the loss is read back anyway
            s.tb.add_scalar("step/loss", loss.item(), st.step)
            s.tb.add_scalar("step/lr", lr, st.step)
        stop = any(cb.after_step(st) for cb in s.run.callbacks)
        periodic = cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.batch < s.per_epoch
        if periodic or stop:
            st.epoch_seconds = time.time() - start_time
            snapshot(s, s.folder.last)
        if stop or (cfg.max_steps and st.step >= cfg.max_steps):
            break
    if bar is not None:
        bar.close()
    st.epoch_seconds = time.time() - start_time
    return stop


def loss_steps(s: Session, at_step: int) -> str:
    """Which steps a non-finite loss may have come from (``at_step``: the last step's number, from 1)."""
    if s.check_every == 1:
        return f"step {at_step}"
    return f"one of steps {max(at_step + 1 - s.check_every, 1)}–{at_step}"


def progress_bar(s: Session):
    if not (s.run.progress_bar and s.world.is_main and sys.stderr.isatty()):
        return None
    return tqdm(total=s.per_epoch, initial=s.state.batch, desc=f"epoch {s.state.epoch + 1}/{s.config.epochs}", leave=False,
                unit="batch", dynamic_ncols=True)


def end_epoch(s: Session) -> dict[str, Any]:
    """All-reduce the training meters, validate, record, checkpoint last.pt (and best.pt when better)."""
    st = s.state
    try:
        s.step.check()
    except steps.NonFiniteLoss as e:
        raise diverged(s, f"{e} at epoch {st.epoch + 1}, {loss_steps(s, st.step)}") from None
    totals = dist.all_reduce_sum(st.meters.clone(), s.world).tolist()
    n = max(totals[3], 1)
    record: dict[str, Any] = {
        "epoch": st.epoch + 1, "step": st.step, "lr": s.schedule.lr(st.step - 1),
        "train_loss": totals[0] / n, "train_top1_error": 1 - totals[1] / n, "train_top5_error": 1 - totals[2] / n,
    }
    if s.data.val is not None and len(s.data.val):
        if not s.data.val.in_memory:  # images decoded now may be bad: keep the epoch's training first
            snapshot(s, s.folder.last)
        val = evaluate_split(s, s.data.val, views=1)
        record.update(val_loss=val["loss"], val_top1_error=val["top1_error"], val_top5_error=val["top5_error"])
    record.update(images_per_second=totals[3] / max(st.epoch_seconds, 1e-9), epoch_seconds=st.epoch_seconds)
    s.schedule.epoch_end(record.get("val_top1_error"))
    s.history.append(record)
    s.folder.append_metrics(record)
    tensorboard(s, record)
    if s.world.is_main:
        for cb in s.run.callbacks:
            cb.on_epoch(record)
    score = record.get("val_top1_error", record["train_top1_error"])  # lower is better, with or without a val split
    improved = score < st.best
    st.epoch, st.batch, st.epoch_seconds, st.best = st.epoch + 1, 0, 0.0, min(st.best, score)
    st.meters.zero_()
    snapshot(s, s.folder.last)
    if improved and s.world.is_main:
        atomic_link(s.folder.last, s.folder.best)
    return record


@torch.no_grad()
def evaluate_split(s: Session, images: ImageSet, views: int, keep: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Loss and top-1/top-5 error of the softmax averaged over ``views`` (1 or 10, §4.1), over all ranks;
    ``keep`` (a list) receives the probabilities batch by batch, on the CPU (one process only: under
    torchrun each rank holds a shard)."""
    sums = torch.zeros(4, device=s.device, dtype=torch.float64)  # loss, top-1 hits, top-5 hits, images
    for probs, y in iter_probabilities(s.model, s.data.preprocess, images, views=views, batch_size=s.config.batch_size,
                                       device=s.device, precision=s.config.precision, workers=s.config.data.workers,
                                       rank=s.world.rank, world_size=s.world.world_size):
        sums[0] += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
        sums[1] += topk_correct(probs, y, 1).sum()
        sums[2] += topk_correct(probs, y, 5).sum()
        sums[3] += len(y)
        if keep is not None and not s.world.enabled:
            keep.append(probs.float().cpu())
    loss, top1, top5, n = dist.all_reduce_sum(sums, s.world).tolist()
    n = max(n, 1)
    return {"loss": loss / n, "top1_error": 1 - top1 / n, "top5_error": 1 - top5 / n, "images": int(n), "views": views}


def train(config: TrainConfig, run: RunOptions, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train as ``config`` says into ``run.out``; returns the results (also written as report.json)."""
    if on_epoch is not None:
        run = RunOptions(**{**run.__dict__, "callbacks": [*run.callbacks, EpochPrinter(on_epoch)]})
    device = resolve_device(config.device)
    try:
        world = dist.setup(device)
    except RuntimeError as e:  # under torchrun: the others could not be reached
        raise lost_a_rank(e, run) from None
    device = dist.local_device(device, world)
    s = None
    try:
        s = setup(config, run, world, device)
        if world.is_main:
            for cb in run.callbacks:
                cb.on_start(s)
        wall_start = time.time()
        while s.state.epoch < s.config.epochs and not (s.config.max_steps and s.state.step >= s.config.max_steps):
            if train_one_epoch(s):
                return {"stopped_at_step": s.state.step, "run_dir": str(s.folder.root)}
            end_epoch(s)
        return finish(s, time.time() - wall_start)
    except KeyboardInterrupt:
        raise interrupted(s, run) from None
    except RuntimeError as e:
        if world.enabled and any(w in str(e).lower() for w in ("gloo", "nccl", "connection", "peer", "timed out")):
            raise lost_a_rank(e, run) from None
        raise
    except DiskFull as e:  # the file it would have replaced is whole; say which checkpoint a resume starts from
        last = RunFolder(run.out, write=False).last
        raise DiskFull(e.path, f"the last checkpoint {last} is kept" if last.is_file() else "no checkpoint was written") from None
    finally:
        if s is not None and s.tb is not None:
            s.tb.close()
        if s is not None and s.lock is not None:
            s.lock.release()
        dist.cleanup(world)


def lost_a_rank(e: RuntimeError, run: RunOptions) -> AlexNetError:
    """A collective failed: another process died (torchrun names which) or the network went."""
    last = RunFolder(run.out, write=False).last
    kept = f"the last checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    first = " ".join(str(e).split())[:160]
    return AlexNetError(f"lost another training process ({first}); torchrun's log names the rank that failed; {kept}; "
                        f"resume with: torchrun ... -m alexnet train --resume {run.out} (or --max-restarts N resumes by itself)")


def interrupted(s: Session | None, run: RunOptions) -> TrainingInterrupted:
    """Ctrl-C: where the run stopped, which checkpoint is kept, the exact command that continues it."""
    folder = RunFolder(run.out, write=False)
    if s is None or not folder.last.is_file():
        return TrainingInterrupted(f"interrupted before any checkpoint was written to {folder.root}; nothing to resume")
    kept = f"step {s.last_checkpoint}" if s.last_checkpoint is not None else "the one it resumed from"
    return TrainingInterrupted(f"interrupted at epoch {s.state.epoch + 1}, step {s.state.step}; the last checkpoint is "
                               f"{folder.last} ({kept}); resume with: alexnet train --resume {folder.root}")


# ---------------------------------------------------------------------------------------------
# The end: final evaluation, report.json, curves and report.html


def finish(s: Session, wall: float) -> dict[str, Any]:
    """Final evaluation (1 view, and 10 views where the preset asks) on val and test; the report."""
    final: dict[str, Any] = {}
    shown, kept = shown_split(s.data.test, s.data.val), []  # its one-view probabilities: the report's confusion matrix
    for split_name, images in (("val", s.data.val), ("test", s.data.test)):
        if images is None or not len(images):
            continue
        for v in sorted({1, s.config.eval_views}):
            r = evaluate_split(s, images, views=v, keep=kept if v == 1 and split_name == shown else None)
            final[f"{split_name}_{v}view"] = {"top1_error": r["top1_error"], "top5_error": r["top5_error"],
                                              "top1_accuracy": 1 - r["top1_error"], "top5_accuracy": 1 - r["top5_error"],
                                              "images": r["images"], "loss": r["loss"]}
    config = s.config
    results = {
        "preset": config.preset, "model": config.model.name, "model_options": config.model.options,
        "parameters": sum(p.numel() for p in s.model.parameters()), "classes": len(s.data.classes),
        "train_images": len(s.data.train), "epochs": len(s.history), "steps": s.state.step, "wall_seconds": wall,
        "final": final, "best_val_top1_error": min((r.get("val_top1_error", math.inf) for r in s.history), default=None),
        "hardware": hardware(s.device, s.world), "versions": versions(), "git_commit": ckpt_io.git_commit(),
        "run_dir": str(s.folder.root),
    }
    if s.world.is_main:
        s.folder.write_report(results)
        write_figures(s, {shown: torch.cat(kept)} if kept else {})
    return results


def write_figures(s: Session, probabilities: dict[str, torch.Tensor]) -> None:
    """curves.png and report.html: a figure must never cost the run its report."""
    try:
        plot_curves(s.history, s.folder.figure("curves.png"))
    except Exception as e:
        log.warning("could not draw curves.png: %s", e)
    try:
        write_report(s.folder.root, evidence_from_training(s.model, s.data.preprocess, s.data.classes, s.data.test, s.data.val,
                                                           s.device, probabilities))
    except Exception as e:
        log.warning("could not write report.html: %s", e)


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


def tensorboard(s: Session, record: dict[str, Any]) -> None:
    """An epoch's scalars, at the step it ended (the per-step loss and lr share the axis)."""
    if s.tb is not None:
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                s.tb.add_scalar(f"epoch/{key}", value, record["step"])
        s.tb.flush()


def hardware(device: torch.device, world: dist.World) -> dict[str, Any]:
    hw = {"device": str(device), "processes": world.world_size, "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def versions() -> dict[str, str]:
    return {"alexnet": __version__, "torch": str(torch.__version__), "torchvision": ckpt_io.torchvision_version(),
            "python": platform.python_version(), "numpy": np.__version__}
