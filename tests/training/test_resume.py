"""Resuming: the run's own configuration, the same weights after a stop or a kill -9, best.pt following
the best epoch, one training step; what a resume refuses (an import's weights, a second writer) and
what an interruption keeps (Ctrl-C, a full disk, a bad val image) for the resume to continue from.

Each scenario is run as a user runs it: the run is started with flags, interrupted, and resumed with
nothing but ``alexnet train --resume RUN_DIR`` (the earlier resume test repeated the flags, and so
never saw a resume re-resolve the preset's defaults).
"""

import copy
import json
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import TINY, StopAfter, image_folder, tiny_config

from alexnet import atomic, checkpoint, cli
from alexnet.errors import AlexNetError
from alexnet.jobs import RunLock
from alexnet.runtime import RuntimeSettings
from alexnet.tools.bench.step import train_step
from alexnet.training import step as steps
from alexnet.training.config import resolve
from alexnet.training.distributed import World
from alexnet.training.loop import RunOptions, TrainingInterrupted, setup, train
from alexnet.training.resume import Meters, saved_config
from alexnet.training.run_folder import RunFolder

# A quarter-width alexnet_small on the embedded digits (helpers.TINY), 3 epochs (the preset says 10): seconds an epoch.
FLAGS = {"epochs": 3, "device": "cpu", "checkpoint_every": 10}


def started(out, steps_before_stop=0):
    config = resolve("digits", FLAGS, TINY)
    callbacks = [StopAfter(steps_before_stop)] if steps_before_stop else []
    return train(config, RunOptions(out=out, progress_bar=False, callbacks=callbacks))


def metrics(out):
    return RunFolder(out).read_metrics()


def weights(out, name="last.pt"):
    return checkpoint.load(out / "checkpoints" / name)


def test_resume_with_only_the_run_folder_continues_the_runs_own_recipe(tmp_path, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    started(whole)
    stopped = started(cut, steps_before_stop=25)
    assert stopped.stopped and stopped.steps == 25  # inside epoch 2 (19 steps an epoch)
    config_before = (cut / "config.json").read_bytes()
    assert cli.main(["train", "--resume", str(cut), "--quiet"]) == 0
    assert (cut / "config.json").read_bytes() == config_before  # the record of how the run started is kept
    assert not (cut / "resume.jsonl").exists()  # nothing changed, nothing to log
    a, b = metrics(whole), metrics(cut)
    assert [r["epoch"] for r in b] == [1, 2, 3]  # the run's 3 epochs, not the preset's 10
    assert [r["lr"] for r in b] == pytest.approx([r["lr"] for r in a], rel=1e-12)  # the same cosine schedule
    wa, wb = weights(whole).state_dict, weights(cut).state_dict
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    final = json.loads((cut / "report.json").read_text())["final"]["test_1view"]
    assert final == json.loads((whole / "report.json").read_text())["final"]["test_1view"]


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    config = resolve("digits", {"epochs": 2, "device": "cpu"}, [*TINY, "checkpoint_every=5"])
    train(config, RunOptions(out=tmp_path / "whole", progress_bar=False))
    stopped = train(config, RunOptions(out=tmp_path / "cut", progress_bar=False, callbacks=[StopAfter(27)]))
    assert stopped.stopped and stopped.steps == 27  # inside the second epoch, two steps after a checkpoint
    train(config, RunOptions(out=tmp_path / "cut", resume=True, progress_bar=False))
    a, b = weights(tmp_path / "whole").state_dict, weights(tmp_path / "cut").state_dict
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cut = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    whole = [json.loads(l) for l in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in cut] == [1, 2]
    assert cut[1]["train_loss"] == pytest.approx(whole[1]["train_loss"], rel=1e-9)
    # the tenths of the interrupted epoch (Fig. 1's finer grain) survive the checkpoint, the ones before it included
    assert len(cut[1]["train_top1_error_tenths"]) == 10 and None not in cut[1]["train_top1_error_tenths"]
    assert cut[1]["train_top1_error_tenths"] == pytest.approx(whole[1]["train_top1_error_tenths"], rel=1e-9)


def test_meters_keep_the_error_of_each_tenth_and_read_older_checkpoints():
    meters, world = Meters.zeros(torch.device("cpu")), World()
    labels = torch.zeros(4, dtype=torch.long)
    right, wrong = torch.eye(10)[[0, 0, 0, 0]], torch.eye(10)[[1, 1, 1, 1]]
    for batch, outputs in enumerate([wrong, wrong, right, right, right], start=1):  # 5 batches: tenths end every half batch
        meters.add(outputs, labels, torch.tensor(0.0))
        meters.mark(batch, per_epoch=5)
    summed = meters.summed(world)
    assert summed["top1_error"] == pytest.approx(0.4)
    # tenth k ends at batch ⌈(k + 1)/2⌉: tenths 0 and 1 at batch 1 (the second saw no new images), 2 and 3 at batch 2, ...
    assert summed["top1_error_tenths"] == [1.0, None, 1.0, None, 0.0, None, 0.0, None, 0.0, None]
    old = Meters.from_tensor(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # a checkpoint from before the tenths
    assert old.summed(world) == {"loss": 0.25, "top1_error": 0.5, "top5_error": 0.25, "images": 4}


def test_kill_9_loses_at_most_the_steps_since_the_checkpoint(tmp_path, cli_env):
    args = ["--preset", "digits", "--epochs", "2", "--device", "cpu", "--checkpoint-every", "3", "--quiet",
            *[a for s in TINY for a in ("--set", s)]]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "train", *args, "--out", str(out)], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.load(last).train_state["step"] >= 3  # the checkpoint on disk is whole
    done = subprocess.run([sys.executable, "-m", "alexnet", "train", "--resume", str(out), "--quiet"],  # nothing repeated
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    train(resolve("digits", {"epochs": 2, "device": "cpu", "checkpoint_every": 3}, TINY),
          RunOptions(out=tmp_path / "whole", progress_bar=False))
    a, b = weights(tmp_path / "whole").state_dict, weights(out).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_recipe_and_records_a_safe_change(tmp_path, capsys):
    out = tmp_path / "run"
    started(out, steps_before_stop=5)
    config_before = (out / "config.json").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--lr", "0.5", "--set", "optim.momentum=0.5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "optim.lr: 0.02 in the run, 0.5 given" in err and "optim.momentum: 0.9 in the run, 0.5 given" in err
    assert cli.main(["train", "--resume", str(out), "--preset", "paper", "--quiet"]) == 2
    assert "started with preset 'digits'" in capsys.readouterr().err
    assert weights(out).train_state["step"] == 5 and not metrics(out)  # refused before anything ran

    assert cli.main(["train", "--resume", "--out", str(out), "--epochs", "4", "--lrn-kernel", "eager", "--quiet"]) == 0
    assert (out / "config.json").read_bytes() == config_before  # the old form, extended; the kernel is not the recipe
    log = [json.loads(line) for line in (out / "resume.jsonl").read_text().splitlines()]
    assert [e["changes"] for e in log] == [{"epochs": {"from": 3, "to": 4}, "lrn_kernel": {"from": "auto", "to": "eager"}}]
    assert log[0]["step"] == 5
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3, 4]
    assert saved_config(RunFolder(out))["epochs"] == 4 and saved_config(RunFolder(out))["lrn_kernel"] == "eager"
    report = (out / "report.json").read_bytes()
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 2  # again, finished: it evaluated and rewrote it all
    assert capsys.readouterr().err.strip().endswith("the run has finished its 4 epochs; --epochs N (more than 4) continues "
                                                    "it, alexnet visualize report --force redraws its page")
    assert (out / "report.json").read_bytes() == report and len((out / "resume.jsonl").read_text().splitlines()) == 1

    assert cli.main(["train", "--resume", str(out), "--out", str(tmp_path / "other"), "--quiet"]) == 2
    assert "name different run folders" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "no such run folder" in capsys.readouterr().err


def digits_as_idx(root):
    """The embedded digits written as MNIST IDX files (train and t10k): a data set with no val split."""
    from alexnet.data import open_dataset

    root.mkdir()
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images = open_dataset("digits").splits[split]
        for kind, array in (("images-idx3", images.images[..., 0]), ("labels-idx1", images.labels.astype(np.uint8))):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (root / f"{prefix}-{kind}-ubyte").write_bytes(header + np.ascontiguousarray(array).tobytes())
    return root


@pytest.mark.parametrize("val_fraction", [0.1, 0.0])
def test_best_checkpoint_holds_the_best_epoch_with_and_without_a_val_split(tmp_path, val_fraction):
    out = tmp_path / "run"
    data = digits_as_idx(tmp_path / "digits-idx")  # no val split of its own: val_fraction decides
    config = resolve("digits", {"epochs": 3, "device": "cpu", "data.spec": str(data)}, [*TINY, f"data.val_fraction={val_fraction}"])
    train(config, RunOptions(out=out, progress_bar=False))
    history = metrics(out)
    key = "val_top1_error" if val_fraction else "train_top1_error"
    assert ("val_top1_error" in history[0]) == bool(val_fraction)
    scores = [r[key] for r in history]
    best_epoch = scores.index(min(scores)) + 1
    assert weights(out, "best.pt").train_state["epoch"] == best_epoch
    if not val_fraction:
        assert best_epoch > 1  # the training error fell, so best.pt moved on from epoch 1


def test_the_bench_times_the_step_that_train_runs(tmp_path, monkeypatch):
    """Same code: train's set-up and the bench build one TrainStep; from the same weights and batch
    two steps through either give the same losses and weights, and the loop calls nothing else."""
    overrides = [*TINY, "optim.lr=0.01", "optim.momentum=0.9", "optim.weight_decay=5e-4", "model.options.dropout=0.0"]
    config = resolve("digits", {"device": "cpu", "epochs": 1}, overrides)
    run, _ = setup(config, RunOptions(out=tmp_path / "run", progress_bar=False), World(), torch.device("cpu"))
    bench_model = copy.deepcopy(run.model)
    bench_step = train_step(bench_model, RuntimeSettings(device="cpu"))
    assert type(bench_step) is type(run.train_step) is steps.TrainStep
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 1, 24, 24, generator=g), torch.randint(0, 10, (16,), generator=g)
    losses = [(run.train_step(x, y)[1].item(), bench_step(x, y)[1].item()) for _ in range(2)]
    assert all(a == pytest.approx(b, rel=1e-6) for a, b in losses)
    for (name, p), q in zip(run.model.named_parameters(), bench_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)

    calls = []
    original = steps.TrainStep.__call__
    monkeypatch.setattr(steps.TrainStep, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    train(resolve("digits", {"device": "cpu", "epochs": 1}, [*TINY, "max_steps=3"]),
          RunOptions(out=tmp_path / "counted", progress_bar=False))
    assert len(calls) == 3


def test_resuming_an_import_says_what_the_file_is(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=2), RunOptions(out=out, progress_bar=False))
    ck = checkpoint.load(out / "checkpoints" / "last.pt")
    ck.train_state = None
    checkpoint.save(out / "checkpoints" / "last.pt", ck)
    with pytest.raises(AlexNetError, match="weights without a training state .* --init"):
        train(tiny_config(max_steps=2), RunOptions(out=out, resume=True, progress_bar=False))


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=2), RunOptions(out=out, progress_bar=False, callbacks=[StopAfter(1)]))  # one step left
    lock = RunLock(RunFolder(out)).acquire()  # another process training it
    with pytest.raises(AlexNetError, match=rf"is being written by pid {os.getpid()} on host"):
        train(tiny_config(max_steps=2), RunOptions(out=out, resume=True, progress_bar=False))
    lock.release()
    (out / ".lock").write_text("pid 999999 on host gone")  # left by a killed process: no flock held
    train(tiny_config(max_steps=2), RunOptions(out=out, resume=True, progress_bar=False))


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    original, calls = steps.TrainStep.__call__, []

    def step(self, *args, **kwargs):  # Ctrl-C arrives during the fifth step, after four are done
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(steps.TrainStep, "__call__", step)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_config(checkpoint_every=3), RunOptions(out=out, progress_bar=False))
    message = str(info.value)
    assert message.startswith("interrupted at epoch 1, step 4;")
    assert f"the last checkpoint is {out / 'checkpoints' / 'last.pt'} (step 3)" in message
    assert message.endswith(f"resume with: alexnet train --resume {out}")


def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # the second checkpoint write meets a full disk, as torch reports it
        calls.append(f)
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                               "file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(checkpoint.format, "disk_full", lambda path, need=0: True)
    with pytest.raises(atomic.DiskFull, match=r"cannot write .*last.pt: no space left on the device; the last checkpoint .* is kept"):
        train(tiny_config(checkpoint_every=3), RunOptions(out=out, progress_bar=False))
    assert checkpoint.load(out / "checkpoints" / "last.pt").train_state["step"] == 3
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    train(tiny_config(checkpoint_every=3), RunOptions(out=out, resume=True, progress_bar=False))  # resumable


def test_a_bad_val_image_found_after_an_epoch_keeps_the_epochs_training(tmp_path):
    data, out = image_folder(tmp_path / "F", bad=True), tmp_path / "run"
    config = resolve("digits", {"epochs": 2, "device": "cpu", "data.spec": str(data), "batch_size": 4}, TINY)
    with pytest.raises(AlexNetError, match="broken.jpg"):
        train(config, RunOptions(out=out, progress_bar=False))
    kept = checkpoint.load(out / "checkpoints" / "last.pt").train_state
    assert (kept["epoch"], kept["batch"]) == (0, 1)  # the first epoch's one batch, checkpointed before validating
    (data / "val" / "cat" / "broken.jpg").unlink()
    train(config, RunOptions(out=out, resume=True, progress_bar=False))
    assert [r["epoch"] for r in RunFolder(out).read_metrics()] == [1, 2]


def test_an_extended_run_stopped_early_resumes_and_one_ended_by_max_steps_says_so(tmp_path, capsys):
    """Whether a run has ended is its last checkpoint's: a run extended with --epochs and stopped before the new
    end resumes with the bare command its Ctrl-C line prints (report.json of the first end is still there)."""
    out = tmp_path / "run"
    train(tiny_config(), RunOptions(out=out, progress_bar=False))  # 1 epoch, report.json written
    extended = replace(tiny_config(), epochs=2)
    per_epoch = checkpoint.load(out / "checkpoints" / "last.pt").train_state["step"]
    train(extended, RunOptions(out=out, resume=True, progress_bar=False, callbacks=[StopAfter(per_epoch + 1)]))
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert checkpoint.load(out / "checkpoints" / "last.pt").train_state["epoch"] == 2
    capped = tmp_path / "capped"
    train(tiny_config(max_steps=2), RunOptions(out=capped, progress_bar=False))
    assert cli.main(["train", "--resume", str(capped), "--epochs", "5", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("the run has ended at its max_steps=2, which a resume keeps (the "
                                                    "recipe's); alexnet visualize report --force redraws its page")


def test_ctrl_c_while_a_resume_sets_up_says_resume_not_force(tmp_path):
    from alexnet.training.loop import interrupted

    out = tmp_path / "run"
    train(tiny_config(max_steps=2), RunOptions(out=out, progress_bar=False, callbacks=[StopAfter(1)]))
    assert str(interrupted(None, RunOptions(out=out, resume=True))).endswith(f"resume with: alexnet train --resume {out}")

