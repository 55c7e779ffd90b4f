"""The training loop: presets, the run folder, divergence, refusing to overwrite (resuming: test_resume.py)."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, Records

from alexnet import checkpoint, cli
from alexnet.data.idx import write_idx
from alexnet.errors import AlexNetError
from alexnet.reporting.html_report import TrainingReport
from alexnet.runtime import cpu_name
from alexnet.training.config import preset_names, resolve
from alexnet.training.loop import RunOptions, TrainingDiverged, load_data, train
from alexnet.training.optim import Schedule
from alexnet.training.run_folder import RunFolder


def tiny(epochs=2, extra=()):
    return resolve("digits", {"epochs": epochs, "device": "cpu"}, [*TINY, *extra])


def test_every_preset_resolves():
    assert {"paper", "caffenet", "torchvision", "d2l", "small", "digits"} <= set(preset_names())
    for name in preset_names():
        config = resolve(name, {}, [])
        assert config.epochs >= 1 and config.batch_size >= 1
    paper = resolve("paper", {}, [])
    assert (paper.model.name, paper.batch_size, paper.optim.lr, paper.optim.momentum, paper.optim.weight_decay) == (
        "alexnet", 128, 0.01, 0.9, 5e-4)
    assert (paper.schedule.kind, paper.schedule.factor, paper.schedule.max_reductions, paper.epochs, paper.eval_views) == (
        "plateau", 0.1, 3, 90, 10)
    assert resolve("caffenet", {}, []).max_steps == 450_000


def test_overrides_and_their_errors():
    c = resolve("digits", {"optim.lr": 0.5}, ["optim.nesterov=true", "model.options.lrn=false", "data.spec=/x"])
    assert c.optim.lr == 0.5 and c.optim.nesterov and c.model.options["lrn"] is False and c.data.spec == "/x"
    with pytest.raises(AlexNetError, match=r"unknown setting 'optim.lrr' \(did you mean 'optim.lr'\?\); valid in optim: lr, momentum"):
        resolve("digits", {}, ["optim.lrr=1"])
    with pytest.raises(AlexNetError, match="precision='fp8' is not one of fp32, bf16, fp16$"):
        resolve("digits", {}, ["precision=fp8"])
    with pytest.raises(AlexNetError, match=r"precision='bf61' is not one of fp32, bf16, fp16 \(did you mean 'bf16'\?\)$"):
        resolve("digits", {}, ["precision=bf61"])  # a value mistyped gets the nearest choice, as a name does
    with pytest.raises(AlexNetError, match="precision='fp8' is not one of fp32, bf16, fp16"):
        resolve("digits", {}, ["amp=fp8"])  # the setting's name before the one precision vocabulary
    with pytest.raises(AlexNetError, match="unknown preset 'nope'; valid: "):
        resolve("nope", {}, [])
    with pytest.raises(AlexNetError, match=r"unknown preset 'd2l_lenett' \(did you mean 'd2l_lenet'\?\); valid: "):
        resolve("d2l_lenett", {}, [])
    with pytest.raises(AlexNetError, match="batch_size must be int"):
        resolve("digits", {}, ["batch_size='big'"])


def test_schedules():
    c = resolve("paper", {}, ["schedule.patience=2"])
    s = Schedule(c, steps_per_epoch=10)
    for err in [0.5, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46, 0.47, 0.48, 0.49, 0.5]:
        s.epoch_end(err)
    assert s.reductions == 3  # "reduced three times" and no more
    assert s.lr(0) == pytest.approx(0.01 * 0.1**3)
    step = Schedule(resolve("caffenet", {}, []), steps_per_epoch=5000)
    assert step.lr(99_999) == pytest.approx(0.01) and step.lr(100_000) == pytest.approx(0.001)
    tv = Schedule(resolve("torchvision", {}, []), steps_per_epoch=100)
    assert tv.lr(30 * 100 - 1) == pytest.approx(0.01) and tv.lr(30 * 100) == pytest.approx(0.001)


def test_training_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    seen = Records()
    train(tiny(epochs=2), RunOptions(out=out, progress_bar=False, callbacks=[seen, TrainingReport()]))
    records = seen.records
    for name in ["config.json", "metrics.jsonl", "report.json", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (out / name).exists(), name
    assert any((out / "tb").iterdir())
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] == [r["epoch"] for r in records]
    for key in ["train_loss", "train_top1_error", "train_top5_error", "val_loss", "val_top1_error", "val_top5_error",
                "lr", "images_per_second", "epoch_seconds"]:
        assert key in lines[0]
    assert lines[1]["train_loss"] < lines[0]["train_loss"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["final"]["test_1view"]["images"] == 359 and saved["final"]["val_1view"]["images"] == 179
    assert 0 <= saved["final"]["test_1view"]["top1_error"] <= 1 and saved["epochs"] == 2
    assert saved["parameters"] > 0 and saved["versions"]["torch"] == str(torch.__version__)
    assert saved["hardware"]["cpu"] == cpu_name()  # the processor's name, as the bench records it
    if Path("/proc/cpuinfo").is_file() and "model name" in Path("/proc/cpuinfo").read_text():  # not on every arm64 kernel
        assert saved["hardware"]["cpu"] not in ("x86_64", "aarch64", "")
    ck = checkpoint.load(out / "checkpoints" / "last.pt")
    assert ck.classes == [str(i) for i in range(10)] and ck.preprocess["pipeline"]["crop"] == 24
    assert ck.provenance["recipe"] == "digits" and ck.train_state["epoch"] == 2
    model = checkpoint.restore_model(ck)
    assert model(torch.zeros(1, 1, 24, 24)).shape == (1, 10)


def test_existing_run_is_refused_unless_resume_or_force(tmp_path):
    out = tmp_path / "run"
    train(tiny(epochs=1), RunOptions(out=out, progress_bar=False))
    with pytest.raises(AlexNetError, match="already holds a run; pass --resume"):
        train(tiny(epochs=1), RunOptions(out=out, progress_bar=False))
    train(tiny(epochs=1), RunOptions(out=out, force=True, progress_bar=False))
    with pytest.raises(AlexNetError, match="nothing to resume"):
        train(tiny(epochs=1), RunOptions(out=tmp_path / "empty", resume=True, progress_bar=False))


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    config = tiny(epochs=3, extra=["optim.lr=1e6", "checkpoint_every=1"])
    with pytest.raises(TrainingDiverged, match=r"the (loss|weights) became .*last good checkpoint is .*last\.pt"):
        train(config, RunOptions(out=out, progress_bar=False))
    ck = checkpoint.load(out / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in ck.state_dict.values())


def test_divergence_checked_every_few_steps_as_on_a_gpu_still_stops_and_keeps_the_checkpoint(tmp_path):
    """On a GPU the loss is read back every LOSS_CHECK_EVERY steps, not every step; the run still stops
    and the checkpoint on disk stays finite."""
    out = tmp_path / "run"
    config = tiny(epochs=3, extra=["optim.lr=1e6", "checkpoint_every=1"])
    with pytest.raises(TrainingDiverged, match=r"the loss became non-finite at epoch 1, one of steps 1–3 .*last good checkpoint is"):
        train(config, RunOptions(out=out, progress_bar=False, loss_check_every=3))
    ck = checkpoint.load(out / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in ck.state_dict.values())
    fresh = tiny(epochs=3, extra=["optim.lr=1e6", "checkpoint_every=0"])  # diverges before any checkpoint
    with pytest.raises(TrainingDiverged, match="No checkpoint was written before it"):
        train(fresh, RunOptions(out=tmp_path / "fresh", progress_bar=False, loss_check_every=3))


def test_cli_train_and_bad_input(run_cli, tmp_path, capsys):
    r = run_cli("-v", "train", "--preset", "digits", "--epochs", "1", "--device", "cpu", "--out", tmp_path / "r",  # -v: all settings
                *[a for s in TINY for a in ("--set", s)])
    assert r.returncode == 0, r.stderr
    assert '"preset": "digits"' in r.stdout and "test_1view" in r.stdout and str(tmp_path / "r") in r.stdout
    capsys.readouterr()  # the bad input in process: the command's exit code and its one line, as a subprocess gets them
    assert cli.main(["train", "--preset", "paper", "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.strip() == ("alexnet: error: preset paper needs --data PATH "
                                               "(an image folder, CIFAR-10, IDX files or a packed store)")
    assert cli.main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists() and not (tmp_path / "m").exists()  # refused before anything was created
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--force"]) == 2
    assert capsys.readouterr().err.strip() == ("alexnet: error: --resume continues a run and --force starts one afresh over "
                                               "it: give one of them")


def test_ctrl_c_before_the_first_checkpoint_says_how_to_start_again(tmp_path):
    """It said "nothing to resume", and the same command then said "already holds a run; pass --resume"."""
    from alexnet.training.loop import interrupted

    out = tmp_path / "run"
    (out / "tb").mkdir(parents=True)
    (out / "config.json").write_text("{}")  # what setup had written when Ctrl-C came
    message = str(interrupted(None, RunOptions(out=out)))
    assert message.endswith("nothing to resume: the same command with --force starts it again")
    train(tiny(epochs=1), RunOptions(out=out, force=True, progress_bar=False))  # and it does
    assert (out / "report.json").is_file()


def test_fitted_in_memory_sets_are_c_ordered_for_fast_batches():
    """prefit's uint8 images must be C-contiguous [N, H, W, C]: np.take of a batch from the strided
    view of a permuted tensor is ~100× slower (it was the digits/CIFAR training bottleneck)."""
    import numpy as np

    from alexnet.data import open_dataset
    from alexnet.data.fitted import prefit

    train_set = open_dataset("digits").splits["train"]
    fitted = prefit(train_set, 32, 3)
    assert fitted.images.shape == (len(train_set), 32, 32, 3) and fitted.images.flags["C_CONTIGUOUS"]
    assert np.array_equal(fitted.labels, train_set.labels)


def test_one_class_or_no_training_images_is_refused_when_the_data_is_opened(tmp_path):
    """A folder of one class and one image trained, warned that results were on a held-out val split of 0
    images, and ended with an empty table."""
    from helpers import image_folder

    folder = image_folder(tmp_path / "F")
    for extra in ("dog",):
        for split in ("train", "val"):
            for f in (folder / split / extra).iterdir():
                f.unlink()
            (folder / split / extra).rmdir()
    config = resolve("small", {"epochs": 1, "device": "cpu", "data.spec": str(folder)}, [])
    with pytest.raises(AlexNetError, match=r"F: one class \('cat'\); a classifier learns from images of at least two classes"):
        load_data(config)


def test_data_without_a_test_split_says_so_at_the_start(tmp_path, caplog):
    """Issue 25, item 8: IDX files without t10k trained and ended with an empty results table, unannounced."""
    root = tmp_path / "mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (64, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte", (np.arange(64) % 10).astype(np.uint8))
    config = resolve("d2l_lenet", {"epochs": 1, "device": "cpu", "data.spec": str(root)}, ["batch_size=16"])
    with caplog.at_level(logging.WARNING, logger="alexnet.training.loop"):
        load_data(config)  # what train, demo and ablate open their data with, before the first step
    assert f"{root}: no test split and no val split (data.val_fraction=0, or too few images to hold any out): the final " \
           "results table will be empty" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alexnet.training.loop"):
        load_data(replace(config, data=replace(config.data, val_fraction=0.25)))
    assert f"{root}: no test split; the final results are on 25% of train held out as val" in caplog.text


@pytest.mark.parametrize("every", [0.0, 1e9])
def test_live_json_says_where_the_run_is_at_most_every_live_every_seconds(tmp_path, monkeypatch, every):
    from alexnet.training import loop

    monkeypatch.setattr(loop, "LIVE_EVERY", every)
    written = []
    write_live = RunFolder.write_live
    monkeypatch.setattr(RunFolder, "write_live", lambda self, record: (written.append(dict(record)), write_live(self, record)))
    config = resolve("digits", {"epochs": 2, "device": "cpu"}, list(TINY))
    result = train(config, RunOptions(out=tmp_path / "r", progress_bar=False))
    *during, last = written
    per_epoch = result.steps // 2
    if every == 0.0:  # written at every step: the last write of the training is the last step's
        live = during[-1]
        assert len(during) == result.steps and live["steps"] == result.steps and live["epoch"] == 2
        assert live["batch"] == live["per_epoch"] == per_epoch and live["state"] == "training"
        assert live["total_steps"] == result.steps and live["images_per_second"] > 0 and live["loss"] > 0
    else:  # written at each epoch's first step, then not again within LIVE_EVERY
        assert [(w["epoch"], w["batch"], w["steps"]) for w in during] == [(1, 1, 1), (2, 1, per_epoch + 1)]
    # then once more when the run has ended: it said "training" for ever after
    assert last["state"] == "finished" and (last["epoch"], last["batch"], last["steps"]) == (2, per_epoch, result.steps)
    assert json.loads((tmp_path / "r" / "live.json").read_text()) == last


def test_port_without_explore_is_refused_before_anything_is_written(tmp_path, capsys):
    from alexnet.cli import main

    assert main(["train", "--preset", "digits", "--port", "9000", "--out", str(tmp_path / "run")]) == 2
    assert "--port 9000 is the --explore page's port" in capsys.readouterr().err and not (tmp_path / "run").exists()
