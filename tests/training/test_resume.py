"""Resuming continues the run's own configuration; best.pt follows the best epoch; one training step.

Each scenario is run as a user runs it: the run is started with flags, interrupted, and resumed with
nothing but ``alexnet train --resume RUN_DIR`` (the earlier resume test repeated the flags, and so
never saw a resume re-resolve the preset's defaults).
"""

import copy
import json
import struct

import numpy as np
import pytest
import torch
from helpers import StopAfter

from alexnet import checkpoint, cli
from alexnet.runtime import RuntimeSettings
from alexnet.tools.bench.step import train_step
from alexnet.training import step as steps
from alexnet.training.config import resolve
from alexnet.training.distributed import World
from alexnet.training.loop import RunOptions, setup, train
from alexnet.training.resume import saved_config
from alexnet.training.run_folder import RunFolder

# A quarter-width alexnet_small on the embedded digits, 3 epochs (the preset says 10): seconds an epoch.
FLAGS = {"epochs": 3, "device": "cpu", "checkpoint_every": 10}
TINY = ["model.options.width=0.25", "data.workers=0"]


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

    assert cli.main(["train", "--resume", "--out", str(out), "--epochs", "4", "--quiet"]) == 0  # the old form, extended
    assert (out / "config.json").read_bytes() == config_before
    log = [json.loads(line) for line in (out / "resume.jsonl").read_text().splitlines()]
    assert [e["changes"] for e in log] == [{"epochs": {"from": 3, "to": 4}}] and log[0]["step"] == 5
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3, 4]
    assert saved_config(RunFolder(out))["epochs"] == 4
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0  # again: continues with 4, records nothing new
    assert len((out / "resume.jsonl").read_text().splitlines()) == 1

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
