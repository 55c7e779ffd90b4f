"""Decoding one image file into uint8 RGB [H, W, 3], or saying exactly why it cannot be used.

Every file a data set points at goes through :func:`decode_image`: the image-folder sources decode
lazily with it, ``alexnet prepare`` validates every image with it, ``alexnet predict`` reads the
user's files with it. A file that cannot be used raises :class:`BadImage`, whose one-line message
names the path and the reason (zero-byte, not an image of a format read here, truncated or corrupt,
decompression bomb, unreadable). Only the raster formats of :data:`IMAGE_FORMATS` are decoded.

Conversions to RGB (the network sees three channels, §2 "the centered raw RGB values"):

* EXIF orientation is applied first (a phone photo stored sideways with orientation 6 comes out
  upright), as a viewer shows it.
* grey ("L", "1") is repeated into the three channels; CMYK (including Adobe's inverted CMYK JPEGs,
  which Pillow un-inverts) and YCbCr use Pillow's conversion.
* transparency (RGBA, LA, palette images with a transparent colour) is composited onto white, so
  fully transparent pixels, whose stored colour is arbitrary, come out as a page shows them.
  (torchvision's ``ImageFolder`` drops alpha instead; the two differ only on transparent pixels.)
* 16-bit and 32-bit integer images ("I;16", "I") are scaled from 0–65535 to 0–255 (x / 257,
  rounded); Pillow's own convert would clip every value above 255 to white. Float images ("F") are
  clipped to 0–255.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alexnet.errors import AlexNetError

log = logging.getLogger(__name__)

# Pillow's own default limit (about 89.5 M pixels, 0.25 GiB as RGB). An ImageNet photograph is at
# most a few tens of megapixels; a file that claims more is treated as a decompression bomb.
MAX_PIXELS = 89_478_485
# The largest image file a server of this package takes in one upload (explore, serve): a 20-megapixel
# JPEG is 5–10 MB. Files on disk (predict, prepare) have no byte limit, only the pixel one.
MAX_UPLOAD = 20 * 1024 * 1024

# The file name endings an image folder source counts as images (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
# The Pillow decoders those files are read with, and the only ones any file or upload reaches (JPEG's
# opens the multi-picture JPEGs phones write as MPO). Pillow would otherwise try each of its ~40 plugins on
# the bytes, EPS among them, whose decoder runs Ghostscript on them: a file we are given is data, never a program.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


class BadImage(AlexNetError):
    """An image file that cannot be decoded; ``path`` and ``reason`` are kept for reports."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def decode_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image at ``path`` as a C-contiguous uint8 array [H, W, 3], RGB, upright.

    Raises :class:`BadImage` for anything that is not a complete, decodable image of at most
    ``max_pixels`` pixels.
    """
    try:
        info = os.stat(path)
    except OSError as e:
        raise BadImage(path, f"cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadImage(path, f"not an image file: {_kind(info.st_mode)}")
    if info.st_size == 0:
        raise BadImage(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            return _decode(f, path, max_pixels)
    except OSError as e:
        raise BadImage(path, f"cannot read ({e.strerror or e})") from None


def _kind(mode: int) -> str:
    """What a path that is not a regular file is (/dev/zero, a FIFO, a folder): never read, it may never end."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def decode_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`decode_image` of a file's bytes (an upload); ``name`` is what the error messages call it."""
    if not data:
        raise BadImage(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(f: BinaryIO, path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(f, formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(path, f"decompression bomb: {width}×{height} = {width * height:,} pixels "
                                     f"is over the limit of {max_pixels:,}")
            image.load()  # Pillow decodes lazily: truncated or corrupt data only shows here
            return to_rgb(_upright(image, path))
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(path, "not an image in a format read here (JPEG, PNG, BMP, GIF, TIFF, WebP, PPM/PGM/PBM)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(path, f"decompression bomb: {e}") from None
    except OSError as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason:
            raise BadImage(path, f"truncated ({reason})") from None
        raise BadImage(path, f"corrupt or unreadable ({reason})") from None
    except Exception as e:  # Pillow's plugins raise ValueError, SyntaxError, struct.error, ... on bad data
        raise BadImage(path, f"cannot decode ({type(e).__name__}: {e})") from None


def _upright(image: Image.Image, path) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block costs the rotation, not the image."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as e:
        log.warning("%s: unreadable EXIF orientation, image kept as stored (%s)", path, e)
        return image


def to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode as uint8 [H, W, 3] RGB (the conventions in the module doc)."""
    mode = image.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in image.info or mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    try:
        image = image.convert("RGB")
    except ValueError:
        raise ValueError(f"no conversion from colour mode {mode} to RGB") from None
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
