"""``alexnet train``: a preset, a few common flags, ``--set`` for everything else."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from alexnet.cli.help import seed
from alexnet.data.sources import SPEC_HELP
from alexnet.errors import AlexNetError, counted
from alexnet.reporting.d2l import train_ch6_line, train_ch6_numbers
from alexnet.runtime import DEVICE_HELP, PRECISION_HELP
from alexnet.training.config import FLAGS, LRN_KERNELS, PRECISIONS, preset_names, resolve
from alexnet.training.loop import Callback, TrainResult
from alexnet.training.resume import RESUMABLE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help=f"train a model with a preset recipe ({', '.join(preset_names())})",
        description="Train with a preset recipe. The resolved configuration is saved as config.json (printed with -v) in "
                    "the run folder, beside metrics.jsonl, TensorBoard events, checkpoints/last.pt and best.pt, "
                    "report.json and curves.png. `--resume RUN_DIR` continues a run with its own saved configuration. "
                    "Under `torchrun --nproc_per_node N` it runs DistributedDataParallel.",
    )
    p.add_argument("--preset", help=f"recipe: {', '.join(preset_names())}, or a path to a .toml file (default: digits)")
    p.add_argument("--data", help=SPEC_HELP)
    p.add_argument("--out", type=Path, help="run folder (default: runs/PRESET-TIME)")
    p.add_argument("--epochs", type=int, help="epochs to train (preset's default otherwise)")
    p.add_argument("--batch-size", type=int, help="images per step per process")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--device", help=DEVICE_HELP + " (default: the preset's, auto)")
    p.add_argument("--seed", type=seed, help="seed for initialisation, data order and augmentation")
    p.add_argument("--precision", "--amp", dest="precision", choices=PRECISIONS,
                   help=PRECISION_HELP + " (default: the preset's, fp32)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format, the fast one for convolutions on CPU and CUDA (default: on; --no-channels-last for NCHW)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    p.add_argument("--lrn-kernel", choices=LRN_KERNELS,
                   help="the LRN's training-step kernel: auto (default: compiled by torch.compile on a CPU for large maps, "
                        "where it measured faster; eager elsewhere), eager, or compiled")
    p.add_argument("--workers", type=int, help="decode processes for unpacked image folders")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every STEPS optimiser steps")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights (fine-tuning): a run's best.pt/last.pt or what `alexnet import` wrote; "
                        "tensors whose name and shape fit are loaded, the head is re-initialised for a new class count")
    p.add_argument("--freeze", metavar="WHAT",
                   help="with --init: none, features (everything but the FC layers and the head) or a layer name "
                        "(that layer and all before it); frozen parameters get no update and no weight decay")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set optim.weight_decay=1e-4 --set model.options.lrn=false (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in --out) from its last checkpoint, with the configuration it was "
                        f"started with; only {', '.join(FLAGS[k] for k in RESUMABLE)} may be changed (a finished run: more "
                        "--epochs)")
    p.add_argument("--force", action="store_true", help="start afresh in an --out that already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")
    p.add_argument("--explore", action="store_true",
                   help="also serve `alexnet explore --run OUT` beside the run (on the CPU): its page follows the training "
                        "live from the end of the first epoch, and goes on after it ends until Ctrl+C")
    p.add_argument("--port", type=int, help="with --explore: the page's port on 127.0.0.1 (default 8000)")
    p.set_defaults(func=run)


def flags(args: argparse.Namespace) -> dict:
    """The settings the flags give (None: not given), by ``FLAGS``: ``--batch-size`` is ``batch_size``."""
    return {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in FLAGS.items()}


def default_out(preset: str) -> Path:
    return Path("runs") / f"{Path(preset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    from alexnet.reporting.html_report import TrainingReport
    from alexnet.training import resume
    from alexnet.training.loop import RunOptions, train

    if args.resume and args.force:
        raise AlexNetError("--resume continues a run and --force starts one afresh over it: give one of them")
    resuming, force = resume.elastic_restart(args.out, bool(args.resume), args.force)
    if resuming:
        out = resume.folder_to_resume(None if args.resume in (None, True) else Path(args.resume), args.out)
        config = resume.resumed_config(out, args.preset, flags(args), args.set)
    else:
        config = resolve(args.preset or "digits", flags(args), args.set)
        out = args.out or default_out(config.preset)
    console = Console(quiet=args.quiet, verbose=args.verbose or args.debug, resumed=resuming)
    if args.port is not None and not args.explore:
        raise AlexNetError(f"--port {args.port} is the --explore page's port: add --explore, or leave --port out")
    explorer = Explorer(8000 if args.port is None else args.port) if args.explore else None
    try:
        result = train(config, RunOptions(out=out, resume=resuming, force=force, progress_bar=not args.quiet,
                                          callbacks=[console, TrainingReport(), *([explorer] if explorer else [])]))
        if os.environ.get("RANK", "0") == "0":  # under torchrun the table once, from rank 0
            print_results(result)  # quiet means no progress, not no answer
        if explorer is not None:
            explorer.wait()
    finally:
        if explorer is not None:
            explorer.stop()
    return 0


class Explorer(Callback):
    """``--explore``: ``alexnet explore --run OUT`` in a process of its own, started once the run folder
    holds its configuration; it waits for the first checkpoint, then follows the run (live.json, each
    epoch's checkpoint). Its port is checked before training starts."""

    def __init__(self, port: int) -> None:
        from alexnet.tools.listen import listen

        listen("127.0.0.1", port).close()  # a port in use is one line now, not after the first epoch
        self.port, self.process = port, None

    def on_start(self, run, progress) -> None:
        import subprocess

        argv = [sys.executable, "-m", "alexnet", "explore", "--run", str(run.folder.root), "--port", str(self.port),
                "--device", "cpu", "--bank-limit", "500", "--eval-limit", "500"]
        self.process = subprocess.Popen(argv)

    def wait(self) -> None:
        if self.process is not None and self.process.poll() is None:
            print(f"alexnet train: finished; the page goes on at http://127.0.0.1:{self.port}/ (Ctrl+C to stop it)", flush=True)
            try:
                self.process.wait()
            except KeyboardInterrupt:
                pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class EpochLines(Callback):
    """A line per epoch (``alexnet demo`` prints these too)."""

    def on_epoch(self, record: dict) -> None:
        print_epoch(record)


class Console(Callback):
    """What ``alexnet train`` prints while it runs: the configuration once the data and model are known
    to be good (compact; all of it with -v), then a line per epoch (none with --quiet)."""

    def __init__(self, *, quiet: bool, verbose: bool, resumed: bool) -> None:
        self.quiet, self.verbose, self.resumed = quiet, verbose, resumed

    def on_start(self, run, progress) -> None:
        if self.quiet:
            return
        from alexnet.training.finetune import table as finetune_table

        c = run.config
        print(f"alexnet train: preset {c.preset} → {run.folder.root}{' (resumed)' if self.resumed else ''}")
        if self.verbose:
            print(json.dumps(c.to_dict(), indent=2, ensure_ascii=False))
            return
        options = ", ".join(f"{k}={v}" for k, v in c.model.options.items())
        print(f"  model  {c.model.name}{f' ({options})' if options else ''}, {len(run.data.classes)} classes")
        print(f"  data   {c.data.spec}: {len(run.data.train)} training images, pipeline {c.data.pipeline}")
        if run.init_rows:
            print(f"  init   {c.finetune.init} (freeze {c.finetune.freeze}, loaded layers' lr ×{c.finetune.loaded_lr_mult:g}):")
            print(finetune_table(run.init_rows))
        limit = f" (≤ {counted(c.max_steps, 'step')})" if c.max_steps else ""
        print(f"  recipe {counted(c.epochs, 'epoch')}{limit} × batch {c.batch_size}, "
              f"SGD lr {c.optim.lr:g} momentum {c.optim.momentum:g} wd {c.optim.weight_decay:g}, {c.schedule.kind} schedule, "
              f"{c.precision} on {run.device} (all settings: -v, or config.json)")
        sys.stdout.flush()

    def on_epoch(self, record: dict) -> None:
        if not self.quiet:
            print_epoch(record)


def print_epoch(r: dict) -> None:
    """One line per epoch; the error rates are labelled as errors (``top-1 err``), as in the final table."""
    val = f"  val loss {r['val_loss']:.4f} top-1 err {100 * r['val_top1_error']:.2f}% top-5 err {100 * r['val_top5_error']:.2f}%" \
        if "val_loss" in r else ""
    if "test_loss" in r:  # test_each_epoch (d2l's presets): shown as train_ch6's animator plots it
        val += f"  test top-1 err {100 * r['test_top1_error']:.2f}%"
    print(f"epoch {r['epoch']:>3}  train loss {r['train_loss']:.4f} top-1 err {100 * r['train_top1_error']:.2f}%{val}"
          f"  lr {r['lr']:.3g}  {r['images_per_second']:.0f} img/s  {r['epoch_seconds']:.1f}s", flush=True)


def print_results(result: TrainResult) -> None:
    """The final table of report.json's numbers (or where a stopped run can be resumed)."""
    if result.report is None:
        print(f"stopped at step {result.steps}; resume with: alexnet train --resume {result.run_dir}")
        return
    results = result.report
    print()
    print(f"{'split':<12} {'top-1 err':>9} {'top-5 err':>9} {'top-1 acc':>9} {'images':>7}")
    for name, r in results["final"].items():
        print(f"{name:<12} {100 * r['top1_error']:>8.2f}% {100 * r['top5_error']:>8.2f}% {100 * r['top1_accuracy']:>8.2f}% {r['images']:>7}")
    if (numbers := train_ch6_numbers(result.history, results["final"])) is not None:
        print(f"as d2l's train_ch6 prints it: {train_ch6_line(numbers)}")
    print(f"{counted(results['epochs'], 'epoch')}, {counted(results['steps'], 'step')}, {results['wall_seconds']:.0f} s; "
          f"run folder: {results['run_dir']}")
    sys.stdout.flush()
