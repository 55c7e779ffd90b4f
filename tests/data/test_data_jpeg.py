"""The JPEG store (alexnet prepare --encoding jpeg): round trip, resume, validation, truncated records, use."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet.data.prepare as prepare_module
from alexnet import cli
from alexnet.data import compute_stats, iter_batches, open_dataset
from alexnet.data.imageset import split_off
from alexnet.data.jpeg import JpegRecords, decode_on_device, decode_pil
from alexnet.data.prepare import PrepareConfig, prepare
from alexnet.errors import AlexNetError

SIZE = 32


def _photos(root, count=10):
    """ImageNet layout of crops of real photographs (skimage's), JPEG and PNG, one grey, one bad-free."""
    from skimage import data as photos

    pictures = [photos.chelsea(), photos.astronaut(), photos.coffee(), photos.rocket(), photos.camera()]
    for i in range(count):
        picture = pictures[i % len(pictures)]
        crop = picture[(7 * i) % 50 : 200 + (7 * i) % 50, (11 * i) % 60 : 260 + (11 * i) % 60]
        path = root / "train" / f"c{i % 3}" / f"{i:02d}.{'png' if i % 4 == 3 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(path, quality=92)
    return root


def _config(src, out, **kw):
    kw.setdefault("workers", 0)
    return PrepareConfig(source=str(src), out=str(out), size=SIZE, progress=False, encoding="jpeg", **kw)


def _records(store, split="train"):
    entry = json.loads((store / "manifest.json").read_text())["splits"][split]
    data = (store / entry["images"]).read_bytes()
    return [data[o : o + n] for o, n in np.load(store / entry["index"])]


def test_jpeg_store_round_trips_and_matches_the_raw_store(tmp_path):
    src = _photos(tmp_path / "photos")
    manifest = prepare(_config(src, tmp_path / "jpeg", workers=2))
    prepare(PrepareConfig(source=str(src), out=str(tmp_path / "raw"), size=SIZE, workers=0, progress=False))
    store = tmp_path / "jpeg"
    assert sorted(p.name for p in store.iterdir()) == sorted(
        ["manifest.json", "stats.npz", "train.jpeg.bin", "train.index.npy", "train.labels.npy", "train.paths.txt"])
    assert manifest["encoding"] == "jpeg" and manifest["quality"] == 90 and manifest["channels"] == 3
    assert manifest["splits"]["train"]["bytes"] == (store / "train.jpeg.bin").stat().st_size

    jpeg, raw = open_dataset(store).split("train"), open_dataset(tmp_path / "raw").split("train")
    assert not jpeg.in_memory and isinstance(jpeg.loader, JpegRecords) and len(jpeg) == 10
    np.testing.assert_array_equal(jpeg.labels, raw.labels)
    expected = np.stack([decode_pil(r, 3) for r in _records(store)])  # Pillow's decode of the stored bytes
    assert expected.shape == (10, SIZE, SIZE, 3)
    for workers in (0, 1):  # in this process, and in a DataLoader worker (the records are pickled)
        got = torch.cat([x for x, _ in iter_batches(jpeg, 4, size=SIZE, workers=workers)]).numpy()
        np.testing.assert_array_equal(got, expected)
    on_device = decode_on_device([torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in _records(store)],
                                 torch.device("cpu"), 3, SIZE, ["r"] * 10)  # the GPU path's code, on the CPU
    np.testing.assert_array_equal(on_device.numpy(), expected)
    got = torch.cat([x for x, _ in iter_batches(jpeg, 4, size=SIZE, decode="device")]).numpy()
    np.testing.assert_array_equal(got, expected)
    error = np.abs(expected.astype(int) - np.asarray(raw.images, dtype=int))
    assert 0 < error.mean() < 4  # JPEG at quality 90 is lossy, but only just
    stats = open_dataset(store).stats  # the statistics of what training sees: the decoded JPEG images
    np.testing.assert_allclose(stats.mean_image, compute_stats(expected).mean_image, atol=1e-4)
    _, held = split_off(jpeg, 0.3, seed=0)  # train's held-out split stays a batched JPEG set
    assert isinstance(held.loader, JpegRecords) and 0 < len(held) < 10
    np.testing.assert_array_equal(torch.cat([x for x, _ in iter_batches(held, 4, size=SIZE)]).numpy(),
                                  expected[held.loader.ids])


def test_resume_after_a_crash_equals_a_clean_run(tmp_path, monkeypatch):
    src = _photos(tmp_path / "photos")
    clean = prepare(_config(src, tmp_path / "clean"))
    decode, calls = prepare_module._decode_task, []

    def crash_on_the_seventh(task):
        calls.append(task[0])
        if len(calls) == 7:
            raise RuntimeError("simulated crash")  # nothing is saved on the way out: as after kill -9
        return decode(task)

    monkeypatch.setattr(prepare_module, "_decode_task", crash_on_the_seventh)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(_config(src, tmp_path / "store", checkpoint_every=4))
    partial = tmp_path / "store.partial"
    slots = np.load(partial / "train.slots.npy")
    assert (slots[:, 1] >= 0).sum() == 4  # the checkpoint after four images
    with open(partial / "train.jpeg.bin", "ab") as f:
        f.write(b"\xff\xd8 half a record that a killed run appended after its last checkpoint")
    monkeypatch.setattr(prepare_module, "_decode_task", decode)
    resumed = prepare(_config(src, tmp_path / "store"))
    assert resumed["splits"] == clean["splits"]
    assert _records(tmp_path / "store") == _records(tmp_path / "clean")
    for name in ("train.jpeg.bin", "train.index.npy", "train.labels.npy", "train.paths.txt"):
        assert (tmp_path / "store" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    a, b = open_dataset(tmp_path / "store").stats, open_dataset(tmp_path / "clean").stats
    np.testing.assert_allclose(a.mean_image, b.mean_image, atol=1e-5)
    np.testing.assert_allclose(a.eigval, b.eigval, rtol=1e-4)


def test_bad_images_are_left_out_in_source_order_and_encoding_is_part_of_the_resume_check(tmp_path):
    src = _photos(tmp_path / "photos", count=6)
    (src / "train" / "c1" / "04.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AlexNetError, match=r"04\.jpg: not an image .* the first of 1 bad images"):
        prepare(_config(src, tmp_path / "store"))
    with pytest.raises(AlexNetError, match=r"unfinished prepare run with other settings \(encoding 'jpeg' → 'raw'"):
        prepare(PrepareConfig(source=str(src), out=str(tmp_path / "store"), size=SIZE, workers=0, progress=False))
    manifest = prepare(_config(src, tmp_path / "store", skip_bad=True))
    assert [s["path"].endswith("04.jpg") for s in manifest["skipped"]] == [True]
    paths = (tmp_path / "store" / "train.paths.txt").read_text().splitlines()
    folder = open_dataset(src).split("train").paths
    assert paths == [p for p in folder if not p.endswith("04.jpg")]  # exactly the source order, less the bad one


def test_truncated_files_and_records_are_refused_naming_the_file_and_record(tmp_path, capsys):
    store = tmp_path / "store"
    prepare(_config(_photos(tmp_path / "photos", count=5), store))
    index = np.load(store / "train.index.npy")
    last = int(np.argmax(index[:, 0] + index[:, 1]))
    records = store / "train.jpeg.bin"
    whole = records.read_bytes()
    records.write_bytes(whole[:-100])  # a copy that stopped short
    with pytest.raises(AlexNetError, match=rf"train\.jpeg\.bin: [\d,]+ bytes, but record {last} ends at byte"):
        open_dataset(store)
    assert cli.main(["train", "--preset", "digits", "--data", str(store), "--out", str(tmp_path / "run"),
                     "--device", "cpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexnet: error:") and "\n" not in err and f"record {last} ends at byte" in err
    records.write_bytes(whole)
    index[2, 1] -= 50  # the index cuts record 2 short: it no longer ends with the end-of-image marker
    np.save(store / "train.index.npy", index)
    train = open_dataset(store).split("train")
    for decode in ("cpu", "device"):
        with pytest.raises(AlexNetError, match=r"train\.jpeg\.bin: record 2 \(bytes [\d,]+–[\d,]+\) is not a whole JPEG"):
            list(iter_batches(train, 5, size=SIZE, decode=decode))
    np.save(store / "train.index.npy", index[:3])
    with pytest.raises(AlexNetError, match=r"train\.index\.npy: expected int64 \[5, 2\]"):
        open_dataset(store)


def test_prepare_cli_jpeg_then_train_and_eval_unchanged(tmp_path, capsys):
    store = tmp_path / "digits"
    assert cli.main(["prepare", "digits", str(store), "--size", "8", "--workers", "0", "--no-progress",
                     "--encoding", "jpeg", "--quality", "95"]) == 0
    assert "8×8×1, JPEG quality 95, 10 classes" in capsys.readouterr().out
    stored, digits = open_dataset(store), open_dataset("digits")
    test = stored.split("test")
    images = torch.cat([x for x, _ in iter_batches(test, 64, size=8)]).numpy()
    assert images.shape == (359, 8, 8, 1)  # grey stays one channel
    assert np.abs(images.astype(int) - digits.split("test").images.astype(int)).mean() < 8
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "digits", "--data", str(store), "--epochs", "1", "--device", "cpu",
                     "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--data", str(store),
                     "--split", "test", "--views", "10", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 359 and result["views"] == 10 and result["top1_error"] < 0.9  # chance: 0.9
    assert cli.main(["prepare", "digits", str(tmp_path / "q"), "--encoding", "jpeg", "--quality", "0"]) == 2
    assert "--quality 0: JPEG quality runs from 1 to 100" in capsys.readouterr().err
    assert cli.main(["prepare", "digits", str(tmp_path / "q"), "--quality", "80"]) == 2
    assert "--quality 80: only --encoding jpeg has a quality" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() and not (tmp_path / "q.partial").exists()
