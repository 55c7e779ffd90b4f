"""alexnet features: rows equal the model's own forward_features image by image, layers by name, the
index, resuming after an interruption (bit-identical), and refusing to overwrite."""

import csv
import json

import numpy as np
import pytest
import torch
from helpers import save_small_checkpoint
from PIL import Image

from alexnet import checkpoint, cli
from alexnet.data.images import decode_image
from alexnet.data.transforms import Preprocess, downsample
from alexnet.errors import AlexNetError
from alexnet.inference.features import FeatureConfig, FeaturePaths, LayerReader, extract, layer_names, open_features, resolve_layer
from alexnet.jobs import read_record

CLASSES = ["cat", "dog", "eel"]


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", CLASSES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ROOT/train/CLASS/*.{png,jpg}: 22 pictures of different sizes and kinds."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(1)
    for i in range(22):
        h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
        d = root / "train" / CLASSES[i % 3]
        d.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        picture.save(d / f"{i:02d}.png") if i % 2 else picture.save(d / f"{i:02d}.jpg", quality=90)
    return root


def reference_rows(ckpt_path, paths):
    """What a user would compute by hand: decode, §2 down-sample, centre crop, forward_features."""
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.restore_model(ckpt)
    pre = Preprocess.from_state(ckpt.preprocess)
    rows = []
    with torch.no_grad():
        for p in paths:
            x = torch.from_numpy(downsample(decode_image(p), pre.pipeline.resize).copy())[None]
            rows.append(model.forward_features(pre.centre_crop(x))[0].numpy())
    return np.stack(rows)


def test_folder_features_equal_forward_features_image_by_image(tmp_path, ckpt_path, folder):
    out = tmp_path / "feats.npy"
    assert cli.main(["features", "--checkpoint", str(ckpt_path), "--data", str(folder), "--out", str(out),
                     "--batch-size", "8", "--workers", "1"]) == 0
    fs = open_features(out)
    assert fs.rows.dtype == np.float32 and isinstance(fs.rows, np.memmap)
    with open(FeaturePaths.of(out).index, newline="") as f:
        index = list(csv.DictReader(f))
    assert [int(r["row"]) for r in index] == list(range(22))
    assert all(CLASSES[int(r["label"])] == r["class"] == r["path"].split("/")[-2] for r in index)
    expected = reference_rows(ckpt_path, fs.paths)
    np.testing.assert_allclose(np.asarray(fs.rows), expected, atol=1e-5, rtol=1e-5)
    record = json.loads(FeaturePaths.of(out).record.read_text())
    assert record["shape"] == list(expected.shape) and record["classes"] == CLASSES and record["layer"] == "features"


def test_layers_by_name(ckpt_path):
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.restore_model(ckpt)
    x = torch.randn(3, 3, 32, 32)
    assert resolve_layer(model, "fc7") is None and resolve_layer(model, "fc6") == "drop6"  # None: forward_features
    assert resolve_layer(model, "conv5") == "relu5"
    assert resolve_layer(model, "pool5") == "pool5" and resolve_layer(model, "features") is None
    with torch.no_grad():
        torch.testing.assert_close(LayerReader(model, "fc7")(x), model.forward_features(x))
        torch.testing.assert_close(LayerReader(model, "pool5")(x), model.forward_conv(x).flatten(1))
        fc6 = torch.relu(model.fc6(model.forward_conv(x).flatten(1)))
        torch.testing.assert_close(LayerReader(model, "fc6")(x), fc6)
    with pytest.raises(AlexNetError, match=r"--layer: unknown alexnet_small layer 'nothing'.*; valid: features, conv1, .*pool5.*fc7"):
        resolve_layer(model, "nothing")
    with pytest.raises(AlexNetError, match=r"unknown alexnet_small layer 'pool_5' \(did you mean 'pool5'\?\); valid: features, conv1, "):
        resolve_layer(model, "pool_5")
    assert "relu3" in layer_names(model)


def test_digits_float16_and_pool5(tmp_path, ckpt_path):
    fs = tmp_path / "f16.npy"
    record = extract(ckpt_path, "digits", "test", fs, FeatureConfig(layer="pool5", dtype="float16", batch_size=100))
    rows = open_features(fs).rows
    assert rows.dtype == np.float16 and rows.shape == (359, record["dim"])
    assert open_features(fs).paths[0] == ""  # digits are not files: the row is the data-set position


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_rows(tmp_path, ckpt_path):
    config = FeatureConfig(batch_size=32)
    whole = tmp_path / "whole.npy"
    extract(ckpt_path, "digits", "val", whole, config)

    part = tmp_path / "part.npy"
    seen = []

    def stop_after_two(done, total):
        seen.append(done)
        if len(seen) == 3:  # where it starts (0), then two batches
            raise Interrupt

    with pytest.raises(Interrupt):
        extract(ckpt_path, "digits", "val", part, config, on_batch=stop_after_two)
    paths = FeaturePaths.of(part)
    assert not paths.array.exists() and paths.partial.exists()
    assert read_record(paths.progress).progress["done"] == 64

    with pytest.raises(AlexNetError, match=r"part.partial.json: an unfinished features run with other settings "
                                           r"\(.*reads 'forward_features' → 'pool5'"):
        extract(ckpt_path, "digits", "val", part, FeatureConfig(batch_size=32, layer="pool5"))
    resumed = []
    extract(ckpt_path, "digits", "val", part, FeatureConfig(batch_size=16), on_batch=lambda d, t: resumed.append(d))
    assert seen == [0, 32, 64]
    assert resumed[:2] == [64, 96]  # it continued where it stopped, with the first run's batch size
    assert not paths.partial.exists() and not paths.progress.exists()
    assert np.array_equal(np.load(part), np.load(whole))
    assert paths.index.read_text() == FeaturePaths.of(whole).index.read_text()


def test_a_resumed_run_reports_the_rate_of_its_own_images(tmp_path, ckpt_path, capsys):
    """The printed images/s counts the rows this process computed, not those an earlier run left on disk
    (a job resumed at 90 % printed ten times its rate)."""
    out = tmp_path / "f.npy"

    def stop_after_one(done, total):
        if done:
            raise Interrupt

    with pytest.raises(Interrupt):
        extract(ckpt_path, "digits", "val", out, FeatureConfig(batch_size=64), on_batch=stop_after_one)
    assert cli.main(["features", "--checkpoint", str(ckpt_path), "--data", "digits", "--split", "val", "--out", str(out)]) == 0
    rows = len(open_features(out))
    assert f"{rows} × " in (printed := capsys.readouterr().out) and f", {rows - 64} of them now in " in printed


def test_ctrl_c_is_one_line_that_says_how_to_continue(tmp_path, ckpt_path, monkeypatch, capsys):
    import alexnet.cli.features as command

    def interrupted(*args, on_batch, **kwargs):
        on_batch(0, 100)
        on_batch(32, 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "extract", interrupted)
    out = tmp_path / "f.npy"
    assert cli.main(["features", "--checkpoint", str(ckpt_path), "--data", "digits", "--split", "val", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("features val: 32/100 images")  # the progress line, then the one line of the stop
    assert err[-1] == (f"alexnet: interrupted after 32 rows; run the same command again to continue from "
                   f"{FeaturePaths.of(out).progress}")


def test_refuses_to_overwrite_and_bad_arguments(tmp_path, ckpt_path, capsys):
    out = tmp_path / "f.npy"
    args = ["features", "--checkpoint", str(ckpt_path), "--data", "digits", "--split", "val", "--out", str(out)]
    assert cli.main(args) == 0
    before = out.read_bytes()
    assert cli.main(args) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert cli.main(args + ["--force", "--dtype", "float16"]) == 0 and np.load(out).dtype == np.float16
    mine = tmp_path / "mine.npy"
    np.save(mine, np.arange(3))
    assert cli.main(args[:-1] + [str(mine), "--force"]) == 2  # an array of the user's: not replaced even with --force
    assert "mine.npy: not a feature set (no features record mine.json beside it)" in capsys.readouterr().err
    assert np.load(mine).tolist() == [0, 1, 2]

    assert cli.main(args[:-1] + [str(tmp_path / "f.bin")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    assert cli.main(["features", "--checkpoint", str(ckpt_path), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "g.npy")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["features", "--checkpoint", str(ckpt_path), "--data", "digits", "--layer", "fc", "--out", str(tmp_path / "g.npy")]) == 2
    assert "valid: features, conv1" in capsys.readouterr().err
    assert cli.main(["features", "--checkpoint", str(ckpt_path), "--data", "digits", "--threads", "-1", "--out", str(tmp_path / "g.npy")]) == 2
    assert "--threads -1 must be 0 (torch's default) or more" in capsys.readouterr().err
    assert not list(tmp_path.glob("g*"))  # nothing was created by the failed runs


def test_the_models_threads_are_the_users_choice_and_restored(tmp_path, ckpt_path, monkeypatch):
    import torch

    from alexnet import runtime

    seen = []
    run = runtime.intra_op_threads

    def recording(threads):
        seen.append(threads)
        return run(threads)

    monkeypatch.setattr(runtime, "intra_op_threads", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        extract(ckpt_path, "digits", "val", tmp_path / "a.npy", FeatureConfig(batch_size=64))
        with run(1) as n:
            assert n == torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        extract(ckpt_path, "digits", "val", tmp_path / "b.npy", FeatureConfig(batch_size=64, threads=1))
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(before)
    assert seen == [0, 1]
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"), rtol=1e-5, atol=1e-6)


def test_a_bad_file_in_a_folder_is_one_line_even_from_a_worker(tmp_path, ckpt_path, folder, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "train" / "cat" / "zz.jpg").write_text("not a picture")
    args = ["features", "--checkpoint", str(ckpt_path), "--data", str(bad), "--out", str(tmp_path / "f.npy"), "--batch-size", "4"]
    for workers in ("0", "1"):
        assert cli.main(args + ["--workers", workers, "--force"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("alexnet: error: ") and "zz.jpg: not an image" in err and "Traceback" not in err


def _copy_set(source: FeaturePaths, name: str) -> FeaturePaths:
    target = FeaturePaths.of(source.array.with_name(f"{name}.npy"))
    for a, b in ((source.array, target.array), (source.index, target.index), (source.record, target.record)):
        b.write_bytes(a.read_bytes())
    target.record.write_text(target.record.read_text().replace(source.index.name, target.index.name))
    return target


def test_a_feature_set_that_contradicts_its_record_is_refused_naming_what(tmp_path, ckpt_path, folder):
    """Issue 25, item 5: an int64 bank under a float32 record was searched and probed (90 % error), a NaN
    reached scikit-learn, duplicated or missing row ids passed, a label of 99 was an IndexError, a
    non-UTF-8 index a bare UnicodeDecodeError and a 0-row bank "--k 0"."""
    good = FeaturePaths.of(tmp_path / "good.npy")
    extract(ckpt_path, str(folder), "train", good.array, FeatureConfig(batch_size=8))
    rows, lines = np.load(good.array), good.index.read_text().splitlines()
    cases = {
        "int64": (lambda p: np.save(p.array, rows.astype(np.int64)), r"int64 rows \[22, \d+\] but int64.json says float32"),
        "nan": (lambda p: np.save(p.array, np.where(np.arange(len(rows))[:, None] == 4, np.nan, rows).astype(np.float32)),
                r"nan.npy: row 4 holds NaN or infinite values"),
        "twice": (lambda p: p.index.write_text("\n".join([*lines[:3], "1" + lines[3][1:], *lines[4:]]) + "\n"),
                  r"twice.csv: row 1 is given 2 times"),
        "skipped": (lambda p: p.index.write_text("\n".join([*lines[:3], "30" + lines[3][1:], *lines[4:]]) + "\n"),
                    r"skipped.csv: line 4 gives row 30, expected 2"),
        "label": (lambda p: p.index.write_text("\n".join([*lines[:3], "2,,99,x", *lines[4:]]) + "\n"),
                  r"label.csv: row 2 has label 99, outside the 3 classes \(0–2\)"),
        "latin1": (lambda p: p.index.write_bytes(p.index.read_bytes().replace(b"row,", b"r\xf6w,", 1)),
                   r"latin1.csv: not UTF-8 text \(byte 0xf6 at offset 1\)"),
    }
    for name, (spoil, message) in cases.items():
        spoil(_copy_set(good, name))
        with pytest.raises(AlexNetError, match=message):
            open_features(tmp_path / f"{name}.npy")
    empty = _copy_set(good, "empty")
    np.save(empty.array, rows[:0])
    empty.index.write_text(lines[0] + "\n")
    empty.record.write_text(json.dumps({**json.loads(empty.record.read_text()), "shape": [0, rows.shape[1]]}))
    with pytest.raises(AlexNetError, match=r"empty.npy: no rows"):
        open_features(empty.array)
    assert len(open_features(good.array)) == 22
