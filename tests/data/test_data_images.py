"""decode_image: every colour mode to upright RGB, and every kind of bad file named with its reason (the same one
line when the loader's worker processes decode it)."""

import os

import numpy as np
import pytest
from helpers import image_folder
from PIL import Image

from alexnet.data import iter_batches, open_dataset
from alexnet.data.images import BadImage, decode_bytes, decode_image
from alexnet.errors import AlexNetError


def _halves(h=20, w=40):
    """Left half red, right half blue: easy to follow through a rotation, and JPEG-friendly."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return a


def test_rgb_jpeg_and_png(tmp_path):
    a = _halves()
    Image.fromarray(a).save(tmp_path / "x.png")
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    np.testing.assert_array_equal(decode_image(tmp_path / "x.png"), a)
    out = decode_image(tmp_path / "x.jpg")
    assert out.dtype == np.uint8 and out.shape == (20, 40, 3) and out.flags.c_contiguous
    assert np.abs(out.astype(int) - a).mean() < 4


def test_exif_orientation_6_is_rotated_upright(tmp_path):
    stored = _halves()  # 20 high, 40 wide, as the sensor wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    out = decode_image(tmp_path / "phone.jpg")
    assert out.shape == (40, 20, 3)  # upright: the left (red) half is now on top
    np.testing.assert_allclose(out[5, 10], (255, 0, 0), atol=12)
    np.testing.assert_allclose(out[35, 10], (0, 0, 255), atol=12)
    assert np.abs(out.astype(int) - np.rot90(stored, k=-1)).mean() < 4


def test_grey_is_repeated_into_three_channels(tmp_path):
    g = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = decode_image(tmp_path / "g.png")
    assert out.shape == (5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red ink
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    np.testing.assert_allclose(decode_image(tmp_path / "cmyk.jpg")[8, 8], (255, 0, 0), atol=6)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 3]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = decode_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 3])  # Pillow's convert would give 0, 255, 255, 255


def test_palette_png(tmp_path):
    a = _halves()
    Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png"), a)


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 255, 0)  # fully transparent: its stored blue must not show
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black over white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    assert np.all(np.abs(out[0, 2].astype(int) - 127) <= 1)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1  # green is the transparent colour
    img.save(tmp_path / "pt.png", transparency=1)
    out = decode_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(out[0], [(255, 0, 0), (255, 255, 255)])


def _jpeg_bytes(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.jpg", quality=90)
    return (tmp_path / "ok.jpg").read_bytes()


@pytest.mark.parametrize("kind, content, reason", [
    ("text.jpg", b"this is not a picture\n", "not an image"),
    ("empty.jpg", b"", "empty file"),
    ("truncated.jpg", None, "truncated"),
])
def test_bad_files_are_named_with_their_reason(tmp_path, kind, content, reason):
    path = tmp_path / kind
    path.write_bytes(content if content is not None else _jpeg_bytes(tmp_path)[:1500])
    with pytest.raises(BadImage, match=reason) as info:
        decode_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert isinstance(info.value, AlexNetError) and "\n" not in str(info.value)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


def test_postscript_and_other_formats_are_never_decoded(tmp_path, monkeypatch):
    """Pillow would hand an EPS file (an upload, or a file in a folder) to Ghostscript; a stub gs first on
    PATH shows that nothing runs it, and a TGA (a format Pillow reads) is refused as well: only IMAGE_FORMATS."""
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch {tmp_path / 'gs-ran'}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "evil.jpg").write_bytes(EPS)
    Image.fromarray(_halves()).save(tmp_path / "x.tga")
    for path in (tmp_path / "evil.jpg", tmp_path / "x.tga"):
        with pytest.raises(BadImage, match=r"not an image in a format read here \(JPEG, PNG, "):
            decode_image(path)
    with pytest.raises(BadImage, match="^upload.eps: not an image in a format read here"):
        decode_bytes(EPS, "upload.eps")
    assert not (tmp_path / "gs-ran").exists()


def test_a_phones_multi_picture_jpeg_is_read(tmp_path):
    """MPO: the JPEG with a second picture appended that phones write; Pillow opens it as its own format."""
    a = _halves()
    Image.fromarray(a).save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[Image.fromarray(a[::-1])])
    Image.fromarray(a).save(tmp_path / "plain.jpg")
    assert Image.open(tmp_path / "phone.jpg").format == "MPO"
    np.testing.assert_array_equal(decode_image(tmp_path / "phone.jpg"), decode_image(tmp_path / "plain.jpg"))  # the first picture


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "big.png")
    assert decode_image(tmp_path / "big.png", max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(BadImage, match="decompression bomb: 40×30 = 1,200 pixels is over the limit of 1,199"):
        decode_image(tmp_path / "big.png", max_pixels=1199)


def test_a_device_a_fifo_or_a_folder_is_named_for_what_it_is_and_never_read(tmp_path):
    """Issue 25, item 9: /dev/zero and a FIFO were "empty file (0 bytes)"; a FIFO with no writer would block a read."""
    os.mkfifo(tmp_path / "pipe.jpg")
    for path, what in (("/dev/zero", "a character device"), (tmp_path / "pipe.jpg", r"a named pipe \(FIFO\)"),
                       (tmp_path, "a folder")):
        with pytest.raises(BadImage, match=rf"^{path}: not an image file: {what}$"):
            decode_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(BadImage, match="cannot read"):
        decode_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_image_with_worker_processes_is_the_same_one_line_error(tmp_path, workers):
    val = open_dataset(image_folder(tmp_path / "F", bad=True)).splits["val"]
    with pytest.raises(AlexNetError, match=r"broken.jpg: ") as info:
        for _ in iter_batches(val, 4, size=32, workers=workers):
            pass
    assert type(info.value) is not RuntimeError and "\n" not in str(info.value)
