"""The run folder: an --out of the user's own files, a torn metrics line, stale temporary files, one TensorBoard writer."""

import pytest
from helpers import StopAfter, tiny_config

from alexnet.errors import AlexNetError
from alexnet.training.loop import RunOptions, train
from alexnet.training.run_folder import RunFolder


def test_an_out_folder_with_other_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own notes\n")
    with pytest.raises(AlexNetError, match=r"mine holds other files \(notes.txt\) and no alexnet train job; choose a new"):
        train(tiny_config(), RunOptions(out=out, progress_bar=False))
    (out / "metrics.jsonl").write_text("my own metrics\n")  # a name the run writes: --force would have deleted it
    for force in (False, True):
        with pytest.raises(AlexNetError, match=r"mine/metrics.jsonl: not written by alexnet train \(.*mine has no config.json\)"):
            train(tiny_config(), RunOptions(out=out, force=force, progress_bar=False))
    assert (out / "metrics.jsonl").read_text() == "my own metrics\n" and sorted(p.name for p in out.iterdir()) == [
        "metrics.jsonl", "notes.txt"]


def test_a_torn_last_metrics_line_is_skipped_and_a_bad_one_named(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_metrics({"epoch": 1})
    with open(folder.metrics, "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed mid-write
    assert folder.read_metrics() == [{"epoch": 1}]
    folder.metrics.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(AlexNetError, match=r"metrics.jsonl, line 2: not JSON"):
        folder.read_metrics()
    folder.metrics.write_text('{"epoch": 1}\n[2]\n')  # JSON, but no record (report.html read it as one)
    with pytest.raises(AlexNetError, match=r"metrics.jsonl, line 2: not a JSON object"):
        folder.read_metrics()


def test_stale_temporary_files_are_cleaned_on_resume(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), RunOptions(out=out, progress_bar=False, callbacks=[StopAfter(2)]))
    stale = out / "checkpoints" / ".last.pt.abc123.tmp"  # a kill -9 during a checkpoint write
    stale.write_bytes(b"half a checkpoint")
    train(tiny_config(), RunOptions(out=out, resume=True, progress_bar=False))
    assert not stale.exists()


def test_one_tensorboard_writer_per_run_with_per_step_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(tiny_config(epochs=2), RunOptions(out=out, progress_bar=False))
    events = list((out / "tb").iterdir())
    assert len(events) == 1  # not one file per epoch
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"step/loss", "step/lr", "epoch/train_loss", "epoch/val_top1_error"} <= set(tags)
    assert [e.step for e in acc.Scalars("step/loss")][:3] == [10, 20, 30] and len(acc.Scalars("epoch/train_loss")) == 2
