"""benchmarks/d2l_chapter.py: d2l's chapter as a table, ours against d2l's code as written, on a toy
Fashion-MNIST the test writes (the dry run the device check is tested with)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet.data.idx import FASHION_MNIST_ENV, write_idx
from alexnet.reporting.d2l import PUBLISHED

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "d2l_chapter.py"


def _script():
    spec = importlib.util.spec_from_file_location("d2l_chapter", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("d2l_chapter", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy_fashion(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    for prefix, n in (("train", 48), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(folder))
    return folder


def test_dry_run_trains_both_implementations_and_tabulates_paired_seeds(tmp_path, toy_fashion):
    script, out = _script(), tmp_path / "out"
    argv = ["--cpu-dry-run", "--presets", "d2l_lenet,d2l_bn_lenet", "--impl", "d2l,fp32", "--seeds", "2",
            "--out", str(out), "--work", str(tmp_path / "work")]
    assert script.main(argv) == 0
    rows = json.loads((out / "d2l_chapter.json").read_text())["rows"]
    assert [(r["preset"], r["impl"], r["seed"]) for r in rows] == [
        (p, i, s) for p in ("d2l_lenet", "d2l_bn_lenet") for i in ("d2l", "fp32") for s in (0, 1)]
    for r in rows:
        assert r["max_steps"] == 2 and r["device"] == "cpu"
        assert 0 <= r["train_acc"] <= 1 and r["loss"] > 0
        assert r["test_acc"] * 20 == pytest.approx(round(r["test_acc"] * 20))  # a share of the 20 test images
    table = (out / "d2l_chapter.md").read_text()
    assert ", ".join(f"{v:.3f}" for v in PUBLISHED["d2l_lenet"]) in table  # d2l's build: 0.469, 0.823, 0.779
    fp32 = next(line for line in table.splitlines() if "`d2l_lenet`" in line and "| fp32 |" in line)
    assert "(n=2)" in fp32 and "2 × 2 steps" in fp32
    # rerunning with the same --out trains nothing again
    assert script.main(argv) == 0
    assert json.loads((out / "d2l_chapter.json").read_text())["rows"] == rows


def test_unknown_preset_or_implementation_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(["--presets", "d2l_lenett", "--impl", "bf17", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unknown --impl or --presets value(s): bf17, d2l_lenett" in err


def test_last_step_replica_ends_with_the_weights_alexnet_train_ends_with(tmp_path, toy_fashion):
    """benchmarks/d2l_last_step.py's ``ours`` draws what ``alexnet train --preset d2l_lenet`` draws: the same
    final weights to rounding (its figures stand for our path); both implementations write their rows."""
    import torch

    from alexnet.checkpoint import load
    from alexnet.training.config import resolve
    from alexnet.training.loop import RunOptions, load_data, train

    spec = importlib.util.spec_from_file_location("d2l_last_step", SCRIPT.parent / "d2l_last_step.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = resolve("d2l_lenet", {"device": "cpu", "precision": "fp32", "epochs": 3, "batch_size": 16, "seed": 1}, [])
    train(config, RunOptions(out=tmp_path / "run", progress_bar=False))
    loaded = load_data(config)
    data = {"train": script.tensors(loaded.train), "test": script.tensors(loaded.test), "batch_size": 16}
    row, net = script.train(1, "ours", 3, data)
    ours = load(tmp_path / "run" / "checkpoints" / "last.pt").state_dict
    for k in ours:  # to fp32 rounding (thread counts and layouts differ); another draw would differ by ~0.1
        torch.testing.assert_close(net.state_dict()[k], ours[k].float(), rtol=1e-5, atol=1e-6)
    assert row["last_batch"] == 16 and row["before_last"] is not None  # 48 toy images: three full batches
    assert script.main(["--seeds", "2", "--epochs", "1", "--out", str(tmp_path / "out")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "d2l_last_step.jsonl").read_text().splitlines()]
    assert sorted((r["impl"], r["seed"]) for r in rows) == [("d2l", 0), ("d2l", 1), ("ours", 0), ("ours", 1)]
    assert all(0 <= r["before_last"] <= 1 and 0 <= r["test_acc"] <= 1 for r in rows)
