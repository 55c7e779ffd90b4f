"""alexnet prepare: end to end on real photographs, bad files, refusing to overwrite, resuming."""

import json

import numpy as np
import pytest
from helpers import image_folder
from PIL import Image

import alexnet.data.prepare as prepare_module
from alexnet.cli import main
from alexnet.data import compute_stats, decode_image, downsample, open_dataset
from alexnet.data.prepare import PrepareConfig, prepare
from alexnet.errors import AlexNetError
from alexnet.jobs import JobRecord

SIZE = 24


def _photo_folder(root):
    """ImageNet layout of real photographs (skimage's) as JPEG and PNG, grey and colour, odd sizes."""
    from skimage import data as photos

    sources = {"cat": [photos.chelsea(), photos.astronaut()[::2, ::3]], "cup": [photos.coffee(), photos.rocket()],
               "grey": [photos.camera()[::4, ::2], photos.moon()[::3, ::5]]}
    for split, pick in (("train", slice(None)), ("val", slice(0, 1))):
        for cls, images in sources.items():
            for i, image in enumerate(images[pick]):
                path = root / split / cls / f"{cls}{i}.{'jpg' if i == 0 else 'png'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path, quality=90)
    return root


def _config(src, out, **kw):
    return PrepareConfig(source=str(src), out=str(out), size=SIZE, progress=False, **kw)


def _store_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name not in ("manifest.json", "stats.npz")}


def test_prepare_end_to_end(tmp_path):
    src = _photo_folder(tmp_path / "photos")
    manifest = prepare(_config(src, tmp_path / "store", workers=2))
    out = tmp_path / "store"
    assert not (tmp_path / "store.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "stats.npz", *(f"{s}.{f}" for s in ("train", "val") for f in ("images.u8", "labels.npy", "paths.txt"))])
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == SIZE and manifest["channels"] == 3 and manifest["classes"] == ["cat", "cup", "grey"]
    assert manifest["splits"]["train"]["count"] == 6 and manifest["splits"]["val"]["count"] == 3
    assert manifest["skipped"] == [] and manifest["stats"] == "stats.npz"

    d = open_dataset(out)
    assert d.name == "store" and d.classes == ["cat", "cup", "grey"]
    train, folder = d.splits["train"], open_dataset(src).splits["train"]
    assert isinstance(train.images, np.memmap) and train.images.shape == (6, SIZE, SIZE, 3)
    np.testing.assert_array_equal(train.labels, folder.labels)
    paths = (out / "train.paths.txt").read_text().splitlines()
    assert paths == folder.paths
    for i, path in enumerate(paths):  # each stored image is the paper's down-sampling of its file
        np.testing.assert_array_equal(train.images[i], downsample(decode_image(path), SIZE))
    grey = train.images[4]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    expected = compute_stats(np.asarray(train.images))  # statistics of the train split only
    np.testing.assert_allclose(d.stats.mean_image, expected.mean_image, rtol=1e-6)
    np.testing.assert_allclose(d.stats.eigval, expected.eigval, rtol=1e-6)
    assert d.stats.count == 6

    serial = prepare(_config(src, tmp_path / "serial", workers=0))  # worker processes change nothing
    assert _store_bytes(tmp_path / "serial") == _store_bytes(out)
    assert serial["splits"] == manifest["splits"]


def _with_bad_files(root):
    bad = {"cat/zz_text.jpg": b"GIF89a? no, just text\n", "cup/empty.png": b""}
    for name, content in bad.items():
        (root / "train" / name).write_bytes(content)
    good = (root / "val" / "cat" / "cat0.jpg").read_bytes()
    (root / "train" / "cup" / "a_truncated.jpg").write_bytes(good[: len(good) // 3])
    return ["cup/a_truncated.jpg", "cat/zz_text.jpg", "cup/empty.png"]


def test_bad_images_stop_then_skip_bad_records_them(tmp_path, monkeypatch):
    src = _photo_folder(tmp_path / "photos")
    bad = _with_bad_files(src)
    out = tmp_path / "store"
    with pytest.raises(AlexNetError) as info:
        prepare(_config(src, out, workers=0))
    message = str(info.value)
    assert "zz_text.jpg: not an image" in message and "the first of 3 bad images" in message and "--skip-bad" in message
    assert "\n" not in message and not out.exists()
    listed = (tmp_path / "store.partial" / "bad_images.txt").read_text()
    assert all(name in listed for name in bad)

    decoded = []
    decode = prepare_module._decode_task
    monkeypatch.setattr(prepare_module, "_decode_task", lambda task: decoded.append(task[1]) or decode(task))
    manifest = prepare(_config(src, out, workers=0, skip_bad=True))
    assert sorted(p.split("train/")[1] for p in decoded) == sorted(bad)  # resumed: only the bad ones retried
    skipped = {s["path"].split("train/")[1]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(bad) and all(s["split"] == "train" for s in manifest["skipped"])
    assert skipped["cup/empty.png"].startswith("empty file") and skipped["cup/a_truncated.jpg"].startswith("truncated")
    assert manifest["splits"]["train"]["count"] == 6

    d = open_dataset(out)
    train = d.splits["train"]
    paths = (out / "train.paths.txt").read_text().splitlines()
    assert len(paths) == 6 and not any(b in p for p in paths for b in bad)
    for i, path in enumerate(paths):  # the holes were filled: every slot still matches its recorded path
        np.testing.assert_array_equal(train.images[i], downsample(decode_image(path), SIZE))
        assert d.classes[train.labels[i]] == path.split("/")[-2]
    np.testing.assert_allclose(d.stats.mean_image, compute_stats(np.asarray(train.images)).mean_image, rtol=1e-6)


def test_decompression_bomb_is_reported(tmp_path):
    src = _photo_folder(tmp_path / "photos")
    manifest = prepare(_config(src, tmp_path / "store", workers=0, skip_bad=True, max_pixels=300 * 400))
    reasons = [s["reason"] for s in manifest["skipped"]]
    assert reasons and all(r.startswith("decompression bomb") for r in reasons)  # chelsea is 300×451
    assert manifest["splits"]["train"]["count"] + len([s for s in manifest["skipped"] if s["split"] == "train"]) == 6


def test_skip_bad_never_writes_a_split_of_no_images(tmp_path):
    """--skip-bad leaves bad images out; a split of only bad images (or --max-pixels 0, which made every image a
    "decompression bomb") wrote an empty store and exited 0."""
    src = _photo_folder(tmp_path / "photos")
    with pytest.raises(AlexNetError, match=r"^--max-pixels 0: must be at least 1$"):
        prepare(_config(src, tmp_path / "store", workers=0, skip_bad=True, max_pixels=0))
    with pytest.raises(AlexNetError, match=r"photos: all 6 images of its train split are bad \(the first: .*decompression bomb.*"
                                           r"no store was written$"):
        prepare(_config(src, tmp_path / "store", workers=0, skip_bad=True, max_pixels=100))
    assert not (tmp_path / "store").exists()


def test_existing_out_is_never_silently_overwritten(tmp_path):
    src = _photo_folder(tmp_path / "photos")
    out = tmp_path / "store"
    prepare(_config(src, out, workers=0))
    before = (out / "manifest.json").read_text()
    with pytest.raises(AlexNetError, match="store: already exists; alexnet prepare never overwrites"):
        prepare(_config(src, out, workers=0))
    assert (out / "manifest.json").read_text() == before
    prepare(_config("digits", out, workers=0, force=True))  # --force replaces a store
    assert open_dataset(out).classes == [str(i) for i in range(10)]
    (out / "README.txt").write_text("my notes on this store")
    with pytest.raises(AlexNetError, match="store: a packed store that also holds README.txt, which alexnet prepare did not write"):
        prepare(_config(src, out, workers=0, force=True))  # replacing it would delete the notes
    assert (out / "README.txt").is_file() and open_dataset(out).classes == [str(i) for i in range(10)]

    mine = tmp_path / "my_photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(AlexNetError, match="my_photos: exists and is not a packed store"):
        prepare(_config(src, mine, workers=0, force=True))
    assert (mine / "holiday.jpg").read_bytes() == b"precious"


def test_resume_after_a_crash_equals_a_clean_run(tmp_path, monkeypatch):
    src = _photo_folder(tmp_path / "photos")
    clean = prepare(_config(src, tmp_path / "clean", workers=0))

    calls = {"n": 0}
    decode = prepare_module._decode_task

    def crash_on_the_fifth(task):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")  # not KeyboardInterrupt: nothing is saved on the way out
        return decode(task)

    monkeypatch.setattr(prepare_module, "_decode_task", crash_on_the_fifth)
    out = tmp_path / "store"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(_config(src, out, workers=0, checkpoint_every=3))
    partial = tmp_path / "store.partial"
    done = np.load(partial / "train.done.npy")
    assert done.sum() == 3 and not out.exists()  # the checkpoint after three images survived
    slots = np.memmap(partial / "train.images.u8", dtype=np.uint8, mode="r+", shape=(6, SIZE, SIZE, 3))
    slots[~done] = 77  # whatever a killed run left in the unmarked slots must be rewritten
    slots.flush()
    del slots
    monkeypatch.setattr(prepare_module, "_decode_task", decode)

    resumed = prepare(_config(src, out, workers=0, checkpoint_every=3))
    assert _store_bytes(out) == _store_bytes(tmp_path / "clean")
    assert {k: v for k, v in resumed.items() if k != "created"} == {k: v for k, v in clean.items() if k != "created"}
    a, b = open_dataset(out).stats, open_dataset(tmp_path / "clean").stats
    np.testing.assert_allclose(a.mean_image, b.mean_image, rtol=1e-6)
    np.testing.assert_allclose(a.eigvec @ np.diag(a.eigval) @ a.eigvec.T, b.eigvec @ np.diag(b.eigval) @ b.eigvec.T,
                               rtol=1e-6)


def test_partial_from_another_source_is_not_resumed(tmp_path):
    src = _photo_folder(tmp_path / "photos")
    (tmp_path / "store.partial").mkdir()
    settings = {"source": "/elsewhere", "size": SIZE, "encoding": "raw", "listing": "something else"}
    JobRecord("prepare", settings, files=["train.images.u8"]).save(tmp_path / "store.partial" / "state.json")
    (tmp_path / "store.partial" / "train.images.u8").write_bytes(b"an image of elsewhere")
    (tmp_path / "store.partial" / "notes.txt").write_text("mine")
    with pytest.raises(AlexNetError, match=r"store.partial/state.json: an unfinished prepare run with other settings "
                                           r"\(listing 'something else' → '[0-9a-f]{64}'; source '/elsewhere' → '.*photos'\)"):
        prepare(_config(src, tmp_path / "store", workers=0))
    with pytest.raises(AlexNetError, match="store.partial: holds notes.txt, which alexnet prepare did not write"):
        prepare(_config(src, tmp_path / "store", workers=0, force=True))  # its own files removed, the user's kept
    assert [p.name for p in (tmp_path / "store.partial").iterdir()] == ["notes.txt"]
    (tmp_path / "store.partial" / "notes.txt").unlink()
    (tmp_path / "store.partial" / "state.json").write_text(json.dumps({"digest": "an older alexnet's record"}))
    with pytest.raises(AlexNetError, match="store.partial/state.json: not a job record"):
        prepare(_config(src, tmp_path / "store", workers=0))
    with pytest.raises(AlexNetError, match="unfinished alexnet prepare run"):
        open_dataset(tmp_path / "store.partial")
    prepare(_config(src, tmp_path / "store", workers=0, force=True))
    assert open_dataset(tmp_path / "store").splits["train"].images.shape == (6, SIZE, SIZE, 3)


def test_in_memory_source_and_cli(tmp_path, capsys):
    out = tmp_path / "digits8"
    assert main(["prepare", "digits", str(out), "--size", "8", "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "train 1,259, val 179, test 359 images of 8×8×1, 10 classes" in printed
    stored, digits = open_dataset(out), open_dataset("digits")
    for split in ("train", "val", "test"):  # 8×8 at size 8 is unchanged; grey stays one channel
        np.testing.assert_array_equal(stored.splits[split].images, digits.splits[split].images)
        np.testing.assert_array_equal(stored.splits[split].labels, digits.splits[split].labels)
    assert main(["prepare", "digits", str(out), "--size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexnet: error:") and "already exists" in err and "\n" not in err
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err


def test_store_with_a_wrong_size_file_is_refused(tmp_path):
    out = tmp_path / "d"
    prepare(_config("digits", out, workers=0))
    with open(out / "val.images.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(AlexNetError, match=r"val.images.u8: 100 bytes, expected 179×24×24×1 = 103,104 bytes"):
        open_dataset(out)


def test_a_store_with_a_broken_manifest_or_statistics_names_the_field(tmp_path):
    src, out = image_folder(tmp_path / "F"), tmp_path / "store"
    prepare(PrepareConfig(source=src, out=out, size=32, workers=0))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "size"}))
    with pytest.raises(AlexNetError, match="manifest.json: field 'size' is missing"):
        open_dataset(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
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


def test_prepare_help_documents_every_option(run_cli):
    result = run_cli("prepare", "--help")
    assert result.returncode == 0
    for option in ("SRC", "OUT", "--size", "--workers", "--skip-bad", "--force", "--max-pixels", "--no-progress"):
        assert option in result.stdout


def test_crash_while_finishing_resumes(tmp_path, monkeypatch):
    src = _photo_folder(tmp_path / "photos")
    _with_bad_files(src)
    out = tmp_path / "store"

    def crash(partial, out):
        raise RuntimeError("simulated crash after the manifest")

    replace = prepare_module._replace
    monkeypatch.setattr(prepare_module, "_replace", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(_config(src, out, workers=0, skip_bad=True))
    assert (tmp_path / "store.partial" / "manifest.json").is_file() and not out.exists()
    monkeypatch.setattr(prepare_module, "_replace", replace)
    manifest = prepare(_config(src, out, workers=0, skip_bad=True))  # holes already filled: not done twice
    assert manifest["splits"]["train"]["count"] == 6 and len(manifest["skipped"]) == 3
    assert not (out / "state.json").exists() and not (out / "train.done.npy").exists()
    train = open_dataset(out).splits["train"]
    for i, path in enumerate((out / "train.paths.txt").read_text().splitlines()):
        np.testing.assert_array_equal(train.images[i], downsample(decode_image(path), SIZE))


def test_ctrl_c_saves_what_was_written(tmp_path, monkeypatch):
    src = _photo_folder(tmp_path / "photos")
    decode = prepare_module._decode_task
    calls = []

    def interrupt_on_the_fifth(task):
        calls.append(task)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return decode(task)

    monkeypatch.setattr(prepare_module, "_decode_task", interrupt_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(src, tmp_path / "store", workers=0))
    assert np.load(tmp_path / "store.partial" / "train.done.npy").sum() == 4  # no checkpoint was due yet
