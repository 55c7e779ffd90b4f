"""What a resume does: which run folder, with which configuration, and the training state it restores.

A resumed run continues its own saved configuration, not the command line's defaults (nanoGPT reads
``model_args`` back from its checkpoint): :func:`saved_config` is config.json with every change of
resume.jsonl applied in order. Only :data:`RESUMABLE` settings may differ (:func:`resume_changes`);
each resume that changes one appends a line to resume.jsonl (:func:`log_changes`) and config.json,
the record of how the run started, is never rewritten.

The training state is :class:`Progress` (counters, the running :class:`Meters`, the augmentation
stream); :func:`save_state` and :func:`restore_state` are mirrors, written side by side, so that on
the CPU with a fixed seed a resumed run ends with the same weights as an uninterrupted one.

``torchrun --max-restarts N`` runs the same command again after a rank fails; :func:`elastic_restart`
turns that command into a resume of its ``--out`` (the command line is not rewritten).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet import jobs
from alexnet.checkpoint import Checkpoint
from alexnet.errors import AlexNetError
from alexnet.inference.evaluate import topk_correct
from alexnet.training import distributed as dist
from alexnet.training.config import FLAGS, TrainConfig, flatten, from_dict, resolve_from
from alexnet.training.optim import Schedule
from alexnet.training.run_folder import CONFIG, OWN_NAMES, RunFolder
from alexnet.training.step import TrainStep

log = logging.getLogger(__name__)

RESUMABLE = ("epochs", "device", "data.workers", "lrn_kernel")  # settings a resume may change (recorded in resume.jsonl)


# ---------------------------------------------------------------------------------------------
# Which folder, which configuration


def folder_to_resume(named: Path | None, out: Path | None) -> Path:
    """``--resume RUN_DIR`` (``named``), or ``--resume --out RUN_DIR``; both given must agree."""
    if named and out and named.resolve() != out.resolve():
        raise AlexNetError(f"--resume {named} and --out {out} name different run folders; give one")
    folder = named or out
    if folder is None:
        raise AlexNetError("--resume needs the run folder: alexnet train --resume RUN_DIR")
    if not folder.is_dir():
        raise AlexNetError(f"--resume {folder}: no such run folder")
    return folder


def elastic_restart(out: Path | None, resume: bool, force: bool) -> tuple[bool, bool]:
    """(resume, force) for this process. Started again by ``torchrun --max-restarts`` (with the command
    that started the run), it continues ``out`` from its last checkpoint, or starts afresh over the
    partial run when none was written yet."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if restarted and not resume and out is not None:
        return RunFolder(out).last.is_file(), True
    return resume, force


def saved_config(folder: RunFolder) -> dict[str, Any]:
    """config.json with every change that a resume recorded in resume.jsonl applied, in order."""
    config = folder.read_config()
    for entry in folder.read_resume_log():
        for key, change in entry.get("changes", {}).items():
            node = config
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = change["to"]
    return config


def resumed_config(out: Path, preset: str | None, flags: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """The run's own configuration with the flags given now applied (:func:`resume_changes` refuses,
    when the run starts, the ones a resume may not change)."""
    folder = RunFolder(out)
    if not folder.config.is_file():
        raise AlexNetError(f"--resume {out}: not a run folder (no config.json)")
    saved = saved_config(folder)
    if preset and Path(preset).stem != saved.get("preset"):
        raise AlexNetError(f"--resume {out}: the run was started with preset {saved.get('preset')!r}, not {preset!r}; "
                           "a resumed run keeps its recipe (leave out --preset)")
    return resolve_from(saved, flags, overrides)


def resume_changes(folder: RunFolder, wanted: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """The settings ``wanted`` changes in the run saved in ``folder`` (key → (was, now)).

    Only :data:`RESUMABLE` settings may change; any other difference is refused, naming each key with
    both values, before anything is trained or written.
    """
    a, b = flatten(from_dict(TrainConfig, saved_config(folder)).to_dict()), flatten(wanted.to_dict())
    changed = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    refused = {k: v for k, v in changed.items() if k not in RESUMABLE}
    if refused:
        listed = "; ".join(f"{k}: {was!r} in the run, {now!r} given" for k, (was, now) in refused.items())
        raise AlexNetError(f"--resume {folder.root}: a resumed run keeps its own configuration, but the command changes "
                           f"{listed} (only {', '.join(FLAGS[k] for k in RESUMABLE)} may "
                           "change; start a new run with another --out to change the rest)")
    return changed


def check_unfinished(folder: RunFolder, last: Checkpoint, config: TrainConfig) -> None:
    """Refuse to resume a run whose last checkpoint is its end (all ``config.epochs``, or ``max_steps``): it
    evaluated again and rewrote every output, saying nothing. A torchrun restart is let through (a rank that
    died after the end is not the user's mistake)."""
    state = last.train_state or {}
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 or not state:
        return
    if config.max_steps and state.get("step", 0) >= config.max_steps:
        raise AlexNetError(f"--resume {folder.root}: the run has ended at its max_steps={config.max_steps}, which a resume "
                           "keeps (the recipe's); alexnet visualize report --force redraws its page")
    if state.get("epoch", 0) >= config.epochs:
        raise AlexNetError(f"--resume {folder.root}: the run has finished its {config.epochs} epochs; --epochs N (more than "
                           f"{config.epochs}) continues it, alexnet visualize report --force redraws its page")


def log_changes(folder: RunFolder, changes: dict[str, tuple[Any, Any]], at_step: int) -> None:
    """Append what this resume changed (key → (was, now)) to resume.jsonl; nothing when nothing changed."""
    if changes:
        folder.append_resume_log({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": at_step,
                                  "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}})


def check_folder(folder: RunFolder, *, resume: bool, force: bool) -> None:
    """Refuse, before anything is created, a folder that holds a run (unless resuming or forced) or nothing to resume."""
    if resume:
        if not folder.last.exists():
            raise AlexNetError(f"{folder.root}: nothing to resume (no checkpoints/last.pt)")
        return
    if folder.root.is_dir() and folder.holds_run():
        if not force:
            raise AlexNetError(f"{folder.root} already holds a run; pass --resume to continue it or --force to start afresh")
        return
    jobs.claim(folder.root, "train", force=force, own=OWN_NAMES, record=CONFIG)  # other files: jobs' one rule


# ---------------------------------------------------------------------------------------------
# The training state, saved and restored side by side


MARKS = 10  # the epoch's training error is also kept per tenth of an epoch (Fig. 1's race, finer than an epoch)


@dataclass
class Meters:
    """Running sums over the images seen so far, kept on the device: adding to them never waits for the GPU.

    The checkpoint and the all-reduce hold them as one float64 tensor [loss, top-1 hits, top-5 hits,
    images, then (top-1 hits, images) so far at the end of each of the epoch's :data:`MARKS` tenths];
    a tensor of the first four alone (older checkpoints) starts the tenths at zero.
    """

    loss: torch.Tensor  # the sum of per-image losses
    top1: torch.Tensor  # top-1 hits
    top5: torch.Tensor  # top-5 hits
    images: torch.Tensor
    marks: torch.Tensor  # [MARKS, 2]: top-1 hits and images so far at the end of each tenth (0 until reached)

    @classmethod
    def zeros(cls, device: torch.device) -> Meters:
        return cls.from_tensor(torch.zeros(4 + 2 * MARKS, dtype=torch.float64, device=device))

    @classmethod
    def from_tensor(cls, sums: torch.Tensor) -> Meters:
        sums = sums.to(torch.float64)
        marks = sums[4:].reshape(MARKS, 2).clone() if sums.numel() == 4 + 2 * MARKS else sums.new_zeros(MARKS, 2)
        return cls(*(v.clone() for v in sums[:4].unbind()), marks)

    def to_tensor(self) -> torch.Tensor:
        return torch.cat([torch.stack([self.loss, self.top1, self.top5, self.images]), self.marks.flatten()])

    def add(self, outputs: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """A batch: ``outputs`` logits or probabilities [N, K], ``loss_sum`` its summed loss (0-d)."""
        with torch.no_grad():
            self.loss += loss_sum.double()
            self.top1 += topk_correct(outputs, labels, 1).sum()
            self.top5 += topk_correct(outputs, labels, 5).sum()
            self.images += len(labels)

    def mark(self, batch: int, per_epoch: int) -> None:
        """After the epoch's ``batch``-th batch (from 1): note the sums at every tenth that ends there (no sync)."""
        for k in range(MARKS):
            if -(-(k + 1) * per_epoch // MARKS) == batch:  # tenth k ends at batch ⌈(k + 1)·per_epoch / 10⌉
                self.marks[k, 0], self.marks[k, 1] = self.top1, self.images

    def summed(self, world: dist.World) -> dict[str, Any]:
        """Over all ranks (one host sync): mean loss, top-1 and top-5 error, images, and where any tenth
        was marked, ``top1_error_tenths``: the top-1 error over each tenth's images (None if it had none)."""
        sums = dist.all_reduce_sum(self.to_tensor(), world).tolist()
        loss, top1, top5, images = sums[:4]
        n = max(images, 1)
        out: dict[str, Any] = {"loss": loss / n, "top1_error": 1 - top1 / n, "top5_error": 1 - top5 / n, "images": int(images)}
        marks = [(sums[4 + 2 * k], sums[5 + 2 * k]) for k in range(MARKS)]
        if any(seen for _, seen in marks):
            out["top1_error_tenths"] = tenths(marks)
        return out


def tenths(marks: list[tuple[float, float]]) -> list[float | None]:
    """Per tenth, the top-1 error over the images since the previous mark (None where it saw none)."""
    out, hits_before, seen_before = [], 0.0, 0.0
    for hits, seen in marks:
        if seen > seen_before:
            out.append(1 - (hits - hits_before) / (seen - seen_before))
            hits_before, seen_before = hits, seen
        else:
            out.append(None)
    return out


@dataclass
class Progress:
    """Where the run is; it changes every step, and all of it but ``last_checkpoint`` is in the checkpoint."""

    aug: torch.Generator  # this rank's augmentation draws
    meters: Meters  # of the current epoch's training batches so far
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    steps: int = 0  # optimiser steps in all
    best: float = math.inf  # the best epoch's score (val top-1 error, else train top-1 error)
    epoch_seconds: float = 0.0  # of the current epoch, before an interruption
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl's records of the completed epochs
    last_checkpoint: int | None = None  # the step of the last checkpoint this process wrote


def save_state(progress: Progress, train_step: TrainStep, schedule: Schedule, world: dist.World) -> dict[str, Any]:
    """The checkpoint's ``train_state``: everything needed to continue exactly from here (every rank
    takes part: the augmentation streams of all ranks are gathered)."""
    p, device = progress, train_step.device
    rng = {"torch": torch.get_rng_state(), "aug": p.aug.get_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if world.enabled:
        states = [torch.empty_like(rng["aug"]) for _ in range(world.world_size)]
        torch.distributed.all_gather_object(states, rng["aug"])
        rng["aug"] = states
    return {"epoch": p.epoch, "batch": p.batch, "step": p.steps, "best": p.best, "meters": p.meters.to_tensor().cpu(),
            "epoch_seconds": p.epoch_seconds, **train_step.state_dict(), "schedule": schedule.state_dict(), "rng": rng}


def restore_state(progress: Progress, state: dict[str, Any], train_step: TrainStep, schedule: Schedule,
                  world: dist.World) -> None:
    """The mirror of :func:`save_state` (the weights are loaded before it)."""
    p, device = progress, train_step.device
    p.epoch, p.batch, p.steps, p.best = state["epoch"], state["batch"], state["step"], state["best"]
    p.epoch_seconds, p.meters = state.get("epoch_seconds", 0.0), Meters.from_tensor(state["meters"].to(device))
    train_step.load_state_dict(state)
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"]["torch"])
    aug = state["rng"]["aug"]
    p.aug.set_state(aug[world.rank] if isinstance(aug, list) else aug)
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)


def restore_run(folder: RunFolder, last: Checkpoint, changes: dict[str, tuple[Any, Any]], *, model: nn.Module,
                progress: Progress, train_step: TrainStep, schedule: Schedule, world: dist.World) -> None:
    """Continue the run from its ``last`` checkpoint: the weights, then the training state; keep the
    metrics of the epochs it finished, log what ``changes`` (:func:`resume_changes`), drop torn temporary files."""
    if not last.train_state:
        raise AlexNetError(f"{folder.last}: weights without a training state (an import or an export), so there is "
                           "nothing to resume; to start a new run from these weights use --init (fine-tuning)")
    model.load_state_dict(last.state_dict)
    restore_state(progress, last.train_state, train_step, schedule, world)
    progress.history = folder.keep_metrics_of(progress.epoch)
    log_changes(folder, changes, progress.steps)
    folder.clean_temporary()
    log.info("resuming %s at epoch %d, batch %d (step %d)", folder.root, progress.epoch + 1, progress.batch, progress.steps)
