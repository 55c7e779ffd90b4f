"""Real JPEG photographs for the end-to-end bench, made from scikit-image's bundled pictures.

The bench needs files that cost what ImageNet's cost to decode: natural photographs stored as
JPEG at about 500×375 (ImageNet's typical size). scikit-image ships a handful of photographs
(the astronaut, Chelsea the cat, coffee, a rocket, …, no download needed); each file here is a
random crop of one of them, rescaled to 500×375 or 375×500, sometimes mirrored, saved at JPEG
quality 90, in an ImageNet-layout folder ``ROOT/train/CLASS/*.jpg`` that both
``torchvision.datasets.ImageFolder`` and ``alexnet prepare`` read.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.atomic import atomic_path, make_folder

log = logging.getLogger(__name__)

# scikit-image's bundled pictures (no network); grey ones are made RGB.
PICTURES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
            "retina", "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel", "clock", "cell")


def source_pictures() -> list[np.ndarray]:
    """The bundled pictures scikit-image has here, as uint8 RGB arrays."""
    import skimage.data

    out = []
    for name in PICTURES:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception as e:  # a picture that would need a download, or an older scikit-image
            log.debug("skipping skimage.data.%s: %s", name, e)
            continue
        if image.dtype != np.uint8:
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(image[..., :3]))
    if not out:
        raise RuntimeError("scikit-image has none of its bundled photographs here")
    return out


def random_photo(picture: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (500, 375)) -> Image.Image:
    """A random 60–100 % crop of ``picture``, reflected half the time, resized to ``size`` (or its
    transpose a quarter of the time: mostly landscape, as ImageNet)."""
    h, w = picture.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = picture[top:top + ch, left:left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out_size = size if rng.random() < 0.75 else size[::-1]
    return Image.fromarray(np.ascontiguousarray(crop)).resize(out_size, Image.BILINEAR)


def data_root(cfg) -> Path:
    """Where a bench run keeps its photographs and stores: ``--data-dir``, else ``alexnet-bench`` in the temp dir
    (made; kept between runs, so that each size of folder and store is made once)."""
    root = Path(cfg.data_dir) if cfg.data_dir else Path(tempfile.gettempdir()) / "alexnet-bench"
    make_folder(root)
    return root


def make_photo_folder(root: str | os.PathLike, count: int, *, classes: int = 4, size: tuple[int, int] = (500, 375),
                      quality: int = 90, seed: int = 0) -> Path:
    """Write ``count`` JPEG photographs into ``root/train/class_K/`` (if it is not there yet); returns root/train."""
    root = Path(root)
    train = root / "train"
    done = train / ".complete"
    if done.is_file() and int(done.read_text()) == count:
        return train
    rng = np.random.default_rng(seed)
    pictures = source_pictures()
    for i in range(count):
        image = random_photo(pictures[i % len(pictures)], rng, size)
        folder = train / f"class_{i % classes}"
        make_folder(folder)
        with atomic_path(folder / f"{i:05d}.jpg") as tmp:
            image.save(tmp, format="JPEG", quality=quality)
    done.write_text(str(count))
    return train
