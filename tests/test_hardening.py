"""Bad input and the faults a long run meets: one line naming the file or value, nothing lost.

docs/ERRORS.md lists what the user sees for every case tried here and in the other tests.
"""

import gzip
import io
import os
import pickle
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import StopAfter
from PIL import Image

from alexnet import atomic, checkpoint, cli, models
from alexnet.cli.train import print_epoch
from alexnet.data import iter_batches, open_dataset
from alexnet.data.cifar import SafeUnpickler
from alexnet.errors import AlexNetError
from alexnet.jobs import RunLock
from alexnet.reporting.html_report import TrainingReport
from alexnet.training import step as train_steps
from alexnet.training.config import resolve
from alexnet.training.loop import RunOptions, TrainingInterrupted, train
from alexnet.training.run_folder import RunFolder

TINY = ["model.options.width=0.25", "data.workers=0"]


def tiny(**flags):
    return resolve("digits", {"epochs": 1, "device": "cpu", **flags}, TINY)


# -- options -------------------------------------------------------------------------------------

def test_epoch_lines_say_error(capsys):
    print_epoch({"epoch": 1, "train_loss": 2.4, "train_top1_error": 0.8684, "train_top5_error": 0.1229, "val_loss": 2.0,
                 "val_top1_error": 0.5, "val_top5_error": 0.1, "lr": 0.01, "images_per_second": 100.0, "epoch_seconds": 1.0})
    line = capsys.readouterr().out
    assert "train loss 2.4000 top-1 err 86.84%" in line and "val loss 2.0000 top-1 err 50.00% top-5 err 10.00%" in line


@pytest.mark.parametrize(("flags", "overrides", "message"), [
    ({"optim.lr": -1.0}, [], r"optim.lr=-1.0 \(--lr\) must be a positive number"),
    ({"optim.lr": float("nan")}, [], r"optim.lr=nan \(--lr\) must be a positive number"),
    ({"data.workers": -1}, [], r"data.workers=-1 \(--workers\) must be ≥ 0"),
    ({"checkpoint_every": -3}, [], r"checkpoint_every=-3 \(--checkpoint-every\) must be ≥ 0"),
    ({}, ["data.val_fraction=1.5"], r"data.val_fraction=1.5 must be in \[0, 1\)"),
    ({}, ["optim.momentum=1.0"], r"optim.momentum=1.0 must be in \[0, 1\)"),
])
def test_numeric_settings_are_range_checked(flags, overrides, message):
    with pytest.raises(AlexNetError, match=message):
        resolve("digits", flags, overrides)


@pytest.mark.parametrize("value", ["False", "maybe", "no", "yes"])
def test_boolean_model_options_refuse_strings(value, tmp_path):
    config = resolve("digits", {"device": "cpu"}, [f"model.options.lrn={value}"])
    assert config.model.options["lrn"] == value  # what the command line gave: a string, not a boolean
    with pytest.raises(ValueError, match=rf"alexnet_small option lrn={value!r} must be true or false"):
        train(config, RunOptions(out=tmp_path / "run", progress_bar=False))
    assert not (tmp_path / "run").exists()  # refused before anything was created
    models.check_options("alexnet_small", {"lrn": False, "width": 1})  # real booleans and ints for floats pass


def test_an_out_folder_with_other_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.jsonl").write_text("my own notes\n")
    with pytest.raises(AlexNetError, match="holds other files and no run"):
        train(tiny(), RunOptions(out=out, progress_bar=False))
    assert (out / "metrics.jsonl").read_text() == "my own notes\n"


def test_a_batch_larger_than_the_data_names_the_flag(tmp_path):
    with pytest.raises(AlexNetError, match=r"--batch-size 5000 .* larger than the 1259 training images .* smaller --batch-size"):
        train(tiny(batch_size=5000), RunOptions(out=tmp_path / "run", progress_bar=False))
    assert not (tmp_path / "run").exists()


# -- data ----------------------------------------------------------------------------------------

def test_cifar_batches_with_numpy_integer_labels_load_and_code_is_still_refused():
    batch = {b"labels": [np.int64(3), np.int32(7)], b"data": np.zeros((2, 3072), np.uint8)}
    for protocol in (2, 4):
        out = SafeUnpickler(io.BytesIO(pickle.dumps(batch, protocol=protocol)), encoding="bytes").load()
        assert out[b"labels"] == [3, 7] and all(type(v) is int for v in out[b"labels"])
    evil = pickle.dumps({b"labels": [os.system]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refuses to load"):
        SafeUnpickler(io.BytesIO(evil), encoding="bytes").load()


def _idx(array, declared=None):
    shape = declared or array.shape
    return struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + array.tobytes()


def test_idx_gzip_bomb_and_labels_outside_the_classes(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    labels = np.arange(3, dtype=np.uint8)
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    bomb = _idx(np.zeros((3000, 28, 28), np.uint8), declared=(3, 28, 28))  # 2.4 MB inflated, 3 images declared
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bomb))
    with pytest.raises(AlexNetError, match=r"wrong size: more data than the header's 3×28×28 needs 2,352"):
        open_dataset(root)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros((3, 28, 28), np.uint8))))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 200, 4], np.uint8)))
    with pytest.raises(AlexNetError, match="label 200 at index 1 is outside 0–9"):
        open_dataset(root)


def _folder(root, bad=False):
    for split in ("train", "val"):
        for c, colour in (("cat", 40), ("dog", 200)):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (colour, i * 20, 90)).save(root / split / c / f"{i}.jpg")
    if bad:
        (root / "val" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def test_a_symlink_loop_is_named_not_followed(tmp_path):
    root = _folder(tmp_path / "F")
    os.symlink("..", root / "train" / "cat" / "loop")
    with pytest.raises(AlexNetError, match=r"cat/loop: a symbolic link loop"):
        open_dataset(root)


def test_a_line_break_in_a_file_name_is_refused(tmp_path):
    root = _folder(tmp_path / "F")
    Image.new("RGB", (40, 30)).save(root / "train" / "dog" / "two\nlines.jpg")
    with pytest.raises(AlexNetError, match="a name with a line break"):
        open_dataset(root)


def test_ten_views_of_a_model_trained_without_reflections_warn(tmp_path, caplog):
    from alexnet.inference.evaluate import EvalConfig, evaluate_checkpoints

    out = tmp_path / "run"
    train(tiny(max_steps=2), RunOptions(out=out, progress_bar=False))
    test = open_dataset("digits").splits["test"]
    evaluate_checkpoints([out / "checkpoints" / "last.pt"], test, EvalConfig(views=1))
    assert "trained without reflections" not in caplog.text
    evaluate_checkpoints([out / "checkpoints" / "last.pt"], test, EvalConfig(views=10))
    assert caplog.text.count("trained without reflections") == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_image_with_worker_processes_is_the_same_one_line_error(tmp_path, workers):
    val = open_dataset(_folder(tmp_path / "F", bad=True)).splits["val"]
    with pytest.raises(AlexNetError, match=r"broken.jpg: ") as info:
        for _ in iter_batches(val, 4, size=32, workers=workers):
            pass
    assert type(info.value) is not RuntimeError and "\n" not in str(info.value)


# -- files ---------------------------------------------------------------------------------------

def test_a_torn_last_metrics_line_is_skipped_and_a_bad_one_named(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_metrics({"epoch": 1})
    with open(folder.metrics, "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed mid-write
    assert folder.read_metrics() == [{"epoch": 1}]
    folder.metrics.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(AlexNetError, match=r"metrics.jsonl, line 2: not JSON"):
        folder.read_metrics()


def _saved(tmp_path, name="m.pt", poison=None):
    model = models.create("alexnet_small", num_classes=10, width=0.25)
    ck = checkpoint.from_model(model, [str(i) for i in range(10)], model_options={"width": 0.25})
    if poison:
        ck.state_dict[poison] = torch.full_like(ck.state_dict[poison], float("nan"))
    checkpoint.save(tmp_path / name, ck)
    return tmp_path / name


def test_non_finite_weights_are_refused_at_load(tmp_path):
    path = _saved(tmp_path, poison="fc6.weight")
    with pytest.raises(AlexNetError, match=r"tensor 'fc6.weight' holds NaN or infinite values"):
        checkpoint.restore_model(checkpoint.load(path), source=str(path))


@pytest.mark.parametrize(("content", "says"), [
    (b"\xff\xd8\xff\xe0" + b"\0" * 20, "a JPEG image, not a checkpoint; to classify it: alexnet predict"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "a PNG image"),
    (b"notes about my run\n", "a text file, not a checkpoint"),
    (b'name: "AlexNet"\nlayer {\n  name: "conv1"\n}\n', "a Caffe prototxt"),
    (bytes(range(7, 200)), "neither a torch file nor safetensors"),
])
def test_files_of_the_wrong_kind_say_what_they_are(tmp_path, content, says):
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(AlexNetError, match="") as info:
        checkpoint.load(path)
    assert says in str(info.value) and "pickle opcode" not in str(info.value)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + b"\0" * 30)
    with pytest.raises(AlexNetError, match="an ONNX model"):
        checkpoint.load(onnx)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "state.pth")
    with pytest.raises(AlexNetError, match="a bare state dict .* alexnet import torchvision"):
        checkpoint.load(tmp_path / "state.pth")


def test_export_without_onnx_names_the_extra(tmp_path, monkeypatch, capsys):
    import importlib.util

    path = _saved(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert cli.main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'alexnet[onnx]'" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_written_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write(tmp_path / "a.json", "{}")
        path = _saved(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644 == stat.S_IMODE(path.stat().st_mode)


# -- the run -------------------------------------------------------------------------------------

def test_resuming_an_import_says_what_the_file_is(tmp_path):
    out = tmp_path / "run"
    train(tiny(max_steps=2), RunOptions(out=out, progress_bar=False))
    ck = checkpoint.load(out / "checkpoints" / "last.pt")
    ck.train_state = None
    checkpoint.save(out / "checkpoints" / "last.pt", ck)
    with pytest.raises(AlexNetError, match="weights without a training state .* --init"):
        train(tiny(max_steps=2), RunOptions(out=out, resume=True, progress_bar=False))


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
        train(tiny(checkpoint_every=3), RunOptions(out=out, progress_bar=False))
    assert checkpoint.load(out / "checkpoints" / "last.pt").train_state["step"] == 3
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    train(tiny(checkpoint_every=3), RunOptions(out=out, resume=True, progress_bar=False))  # resumable


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not(tmp_path):
    out = tmp_path / "run"
    train(tiny(max_steps=2), RunOptions(out=out, progress_bar=False))
    lock = RunLock(RunFolder(out)).acquire()  # another process training it
    with pytest.raises(AlexNetError, match=rf"is being written by pid {os.getpid()} on host"):
        train(tiny(max_steps=2), RunOptions(out=out, resume=True, progress_bar=False))
    lock.release()
    (out / ".lock").write_text("pid 999999 on host gone")  # left by a killed process: no flock held
    train(tiny(max_steps=2), RunOptions(out=out, resume=True, progress_bar=False))


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    original, calls = train_steps.TrainStep.__call__, []

    def step(self, *args, **kwargs):  # Ctrl-C arrives during the fifth step, after four are done
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(train_steps.TrainStep, "__call__", step)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny(checkpoint_every=3), RunOptions(out=out, progress_bar=False))
    message = str(info.value)
    assert message.startswith("interrupted at epoch 1, step 4;")
    assert f"the last checkpoint is {out / 'checkpoints' / 'last.pt'} (step 3)" in message
    assert message.endswith(f"resume with: alexnet train --resume {out}")


def test_stale_temporary_files_are_cleaned_on_resume(tmp_path):
    out = tmp_path / "run"
    train(tiny(), RunOptions(out=out, progress_bar=False, callbacks=[StopAfter(2)]))
    stale = out / "checkpoints" / ".last.pt.abc123.tmp"  # a kill -9 during a checkpoint write
    stale.write_bytes(b"half a checkpoint")
    train(tiny(), RunOptions(out=out, resume=True, progress_bar=False))
    assert not stale.exists()


def test_quiet_still_prints_the_answer_and_a_closed_pipe_is_silent(tmp_path, run_cli, cli_env):
    r = run_cli("train", "--device", "cpu", "--epochs", "1", "--quiet", "--out", tmp_path / "q", *[a for s in TINY for a in ("--set", s)])
    assert r.returncode == 0 and "top-1 err" in r.stdout and "test_1view" in r.stdout and "epoch   1" not in r.stdout
    # the reader is gone before alexnet writes (its imports take a second): every write meets a closed pipe
    piped = subprocess.run(f"{sys.executable} -m alexnet models | true", shell=True, capture_output=True, text=True, env=cli_env)
    assert piped.stderr == ""


def test_one_tensorboard_writer_per_run_with_per_step_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(tiny(epochs=2), RunOptions(out=out, progress_bar=False))
    events = list((out / "tb").iterdir())
    assert len(events) == 1  # not one file per epoch
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"step/loss", "step/lr", "epoch/train_loss", "epoch/val_top1_error"} <= set(tags)
    assert [e.step for e in acc.Scalars("step/loss")][:3] == [10, 20, 30] and len(acc.Scalars("epoch/train_loss")) == 2


def test_a_cifar_pickle_nested_100k_deep_is_one_line(tmp_path):
    from alexnet.data.cifar import load_pickle

    n = 100_000
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}" + b"U\x06labels" + b"]" * n + b"a" * (n - 1) + b"s.")
    with pytest.raises(AlexNetError, match="nested too deep"):
        load_pickle(path)


def test_a_store_with_a_broken_manifest_or_statistics_names_the_field(tmp_path):
    import json as json_

    from alexnet.data.prepare import PrepareConfig, prepare

    src, out = _folder(tmp_path / "F"), tmp_path / "store"
    prepare(PrepareConfig(source=src, out=out, size=32, workers=0))
    manifest = json_.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json_.dumps({k: v for k, v in manifest.items() if k != "size"}))
    with pytest.raises(AlexNetError, match="manifest.json: field 'size' is missing"):
        open_dataset(out)
    (out / "manifest.json").write_text(json_.dumps(manifest))
    stats = dict(np.load(out / manifest["stats"]))
    np.savez(out / manifest["stats"], **{**stats, "channel_std": np.zeros(3)})
    with pytest.raises(AlexNetError, match="channel_std .* has a value ≤ 0"):
        open_dataset(out)
    (out / manifest["stats"]).write_bytes(b"garbage, not an npz")
    with pytest.raises(AlexNetError, match="not readable training-set statistics"):
        open_dataset(out)
    with pytest.raises(AlexNetError, match="--size 20000: the stored side must be between 8 and 4096"):
        prepare(PrepareConfig(source=src, out=tmp_path / "big", size=20000, workers=0))
    assert not (tmp_path / "big").exists()


def test_every_writer_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny(max_steps=2), RunOptions(out=out, progress_bar=False, callbacks=[TrainingReport()]))
    assert cli.main(["visualize", "report", str(out)]) == 2  # train wrote report.html
    assert "report.html already exists; pass --force" in capsys.readouterr().err
    assert cli.main(["visualize", "report", str(out), "--force"]) == 0
    ckpt = str(out / "checkpoints" / "last.pt")
    plots = tmp_path / "plots"
    assert cli.main(["eval", "--checkpoint", ckpt, "--data", "digits", "--plots", str(plots), "--device", "cpu"]) == 0
    stamp = (plots / "confusion_matrix.png").stat().st_mtime_ns
    assert cli.main(["eval", "--checkpoint", ckpt, "--data", "digits", "--plots", str(plots), "--device", "cpu"]) == 2
    assert "confusion_matrix.png already exists; pass --force" in capsys.readouterr().err
    assert (plots / "confusion_matrix.png").stat().st_mtime_ns == stamp


def test_a_full_disk_in_any_atomic_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(atomic.Path, "write_bytes", full)
    with pytest.raises(atomic.DiskFull, match=r"cannot write .*config.json: no space left on the device"):
        atomic.write_json(tmp_path / "config.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"] and (tmp_path / "config.json").read_text() == "{}"


@pytest.mark.parametrize("links", [True, False])
def test_best_is_a_link_to_last_that_keeps_its_content_when_last_is_replaced(tmp_path, monkeypatch, links):
    import errno

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic.atomic_write(last, b"epoch 1")
    if not links:  # a filesystem without hard links: a copy
        monkeypatch.setattr(atomic.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    atomic.atomic_link(last, best)
    assert best.read_bytes() == b"epoch 1" and (last.stat().st_ino == best.stat().st_ino) == links
    atomic.atomic_write(last, b"epoch 2")  # the next epoch's last.pt: a new file renamed over the name
    assert best.read_bytes() == b"epoch 1" and last.read_bytes() == b"epoch 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_bad_val_image_found_after_an_epoch_keeps_the_epochs_training(tmp_path):
    data, out = _folder(tmp_path / "F", bad=True), tmp_path / "run"
    config = resolve("digits", {"epochs": 2, "device": "cpu", "data.spec": str(data), "batch_size": 4}, TINY)
    with pytest.raises(AlexNetError, match="broken.jpg"):
        train(config, RunOptions(out=out, progress_bar=False))
    kept = checkpoint.load(out / "checkpoints" / "last.pt").train_state
    assert (kept["epoch"], kept["batch"]) == (0, 1)  # the first epoch's one batch, checkpointed before validating
    (data / "val" / "cat" / "broken.jpg").unlink()
    train(config, RunOptions(out=out, resume=True, progress_bar=False))
    assert [r["epoch"] for r in RunFolder(out).read_metrics()] == [1, 2]


def test_the_process_group_timeout_comes_from_the_environment(monkeypatch):
    from datetime import timedelta

    from alexnet.training import distributed

    monkeypatch.delenv("ALEXNET_DIST_TIMEOUT", raising=False)
    assert distributed.timeout() == timedelta(minutes=10)
    monkeypatch.setenv("ALEXNET_DIST_TIMEOUT", "30")
    assert distributed.timeout() == timedelta(seconds=30)
    for bad in ("0", "-5", "ten", "nan"):
        monkeypatch.setenv("ALEXNET_DIST_TIMEOUT", bad)
        with pytest.raises(AlexNetError, match=f"ALEXNET_DIST_TIMEOUT='{bad}' must be a positive number of seconds"):
            distributed.timeout()


def test_one_agents_workers_key_their_process_group_by_the_restart_round(monkeypatch):
    import torch.distributed as dist

    from alexnet.training import distributed

    server = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(server.port), "TORCHELASTIC_RESTART_COUNT": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    world = distributed.World(0, 2, 0)
    distributed.round_store(world).set("rank_1", "the old round's address")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = distributed.round_store(world)
    assert not restarted.check(["rank_1"])  # the restarted round does not see the previous round's keys
    restarted.set("rank_1", "new")
    assert server.get("alexnet/restart_1/rank_1") == b"new" and server.get("alexnet/restart_0/rank_1") == b"the old round's address"
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # several agents may count restarts differently: torch's own rendezvous
    assert distributed.round_store(world) is None
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    assert distributed.round_store(world) is None


def test_torchrun_restarts_a_killed_rank_and_the_run_resumes_by_itself(tmp_path, cli_env):
    """torchrun --max-restarts 1: SIGKILL one of two CPU workers after the first checkpoint; torchrun
    starts both again with the same command, which resumes from last.pt and finishes the run in that
    one restart. Without the per-round store prefix (alexnet.training.distributed.round_store) the restarted
    workers could read the previous round's gloo addresses from torchrun's shared store and fail
    ("Connection refused", then more rounds) or hang in Pair::connect: 2 and 3 restarts in three
    runs here, where --max-restarts 1 allows one."""
    import signal
    import time

    out = tmp_path / "elastic"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts", "1",
           "-m", "alexnet", "train", "--preset", "digits", "--epochs", "2", "--device", "cpu",
           "--quiet", "--checkpoint-every", "3", "--out", str(out), *[a for s in TINY for a in ("--set", s)]]
    # a round whose gloo connection hung would fail after 30 s, not the default 10 minutes (alexnet.training.distributed)
    proc = subprocess.Popen(cmd, env=dict(cli_env, OMP_NUM_THREADS="1", ALEXNET_DIST_TIMEOUT="30"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert proc.poll() is None and len(workers) == 2, workers
    os.kill(int(workers[-1]), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "connectFullMesh" not in stderr and stderr.count("lost another training process") <= 1, stderr[-3000:]
    assert [r["epoch"] for r in RunFolder(out).read_metrics()] == [1, 2]
    assert (out / "report.json").is_file() and stdout.count("top-1 err") == 1  # the table once, from rank 0
