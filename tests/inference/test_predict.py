"""alexnet predict: every common format and colour mode, EXIF rotation, bad files reported one by one."""

import json

import numpy as np
import pytest
from helpers import save_small_checkpoint
from PIL import Image

from alexnet import cli

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", CLASSES)


def picture(h=48, w=64):
    """An asymmetric colour picture, so a rotation changes it."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + 2 * y) % 256], axis=2).astype(np.uint8)


def write_images(folder):
    rgb = Image.fromarray(picture())
    files = {
        "photo.jpg": lambda p: rgb.save(p, quality=95),
        "grey.png": lambda p: rgb.convert("L").save(p),
        "palette.png": lambda p: rgb.convert("P").save(p),
        "alpha.png": lambda p: rgb.convert("RGBA").save(p),
        "deep.png": lambda p: Image.fromarray(picture()[..., 0].astype(np.uint16) * 257).save(p),
        "cmyk.tiff": lambda p: rgb.convert("CMYK").save(p),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p),
        "plain.bmp": lambda p: rgb.save(p),
        "lossless.webp": lambda p: rgb.save(p, lossless=True),
        "plain.tiff": lambda p: rgb.save(p),
        "upright.png": lambda p: rgb.save(p),
    }
    for name, save in files.items():
        save(folder / name)
    # stored rotated by 90°, with EXIF orientation 6 ("rotate 90° clockwise to view"): shows upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(picture(), k=1).copy()).save(folder / "rotated.png", exif=exif.tobytes())
    return [folder / n for n in files] + [folder / "rotated.png"]


def test_predict_every_format_and_report_bad_files(tmp_path, ckpt_path, capsys):
    good = write_images(tmp_path)
    (tmp_path / "notes.jpg").write_text("not an image")
    full = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 3])
    bad = [tmp_path / "notes.jpg", tmp_path / "cut.jpg", tmp_path / "missing.png"]
    paths = [good[0], bad[0], *good[1:], bad[1], bad[2]]
    code = cli.main(["predict", "--checkpoint", str(ckpt_path), *map(str, paths), "--topk", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 1  # something failed
    results = json.loads(captured.out)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in results}
    for path in good:
        r = by_name[path.name]
        assert "error" not in r, r
        probs = [p["probability"] for p in r["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(CLASSES[p["index"]] == p["label"] for p in r["predictions"])
    for path in bad:
        assert set(by_name[path.name]) == {"image", "error"} and path.name in by_name[path.name]["error"]
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 3 and all(line.startswith("alexnet: error: ") for line in err_lines)
    # EXIF orientation is applied: the rotated file predicts exactly what the upright one does
    assert by_name["rotated.png"]["predictions"] == by_name["upright.png"]["predictions"]


def test_predict_text_output_and_ten_views(tmp_path, ckpt_path, capsys):
    Image.fromarray(picture()).save(tmp_path / "a.png")
    assert cli.main(["predict", "--checkpoint", str(ckpt_path), str(tmp_path / "a.png"), "--views", "10", "--topk", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("a.png") and len(lines) == 3
    assert any(name in lines[1] for name in CLASSES)


def test_predict_with_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    Image.fromarray(picture()).save(tmp_path / "a.png")
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "nope.pt"), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet: error: ") and "nope.pt" in err and err.count("\n") == 1
