"""Part ``decode``: what one CPU core delivers from each way of storing the images, and their sizes.

The same photographs (:mod:`alexnet.tools.bench.photos`: 500×375 JPEG at quality 90, ImageNet's typical
file) are read three ways, each as uint8 256×256 images, one core each (``torch.set_num_threads(1)``
while they are timed; the loader runs one such core per worker process):

* ImageFolder: each file decoded and down-sampled to 256 (what an unpacked folder costs every
  epoch): torchvision's ``pil_loader`` alone (the reference's decode), and alexnet's folder
  source, :func:`~alexnet.data.images.decode_image` + :func:`~alexnet.data.transforms.downsample`;
* the raw store (``alexnet prepare``): a batch gathered from the memory map, no decoding;
* the JPEG store (``alexnet prepare --encoding jpeg``, quality 90): each 256×256 record decoded
  by Pillow, by ``torchvision.io.decode_jpeg`` called once per record, and by ``decode_jpeg`` on
  the batch's list of records (what the loader runs, chosen by these rows:
  :func:`alexnet.data.jpeg.decode_on_device`). On CUDA that last row runs on the GPU (nvJPEG,
  the whole device rather than one core) as well as on one core. Where OpenCV is installed (it is
  no dependency; the lent GPU machine has it) ``cv2.imdecode`` per record is measured too.

Rows are interleaved repetition by repetition (one pass over every image each), so a load that
comes and goes on a shared machine hits them alike; the median pass is reported, and the ratio is
to the reference decode (``pil_loader``). The size rows give the bytes on disk per image and what
ImageNet's 1,281,167 training images would take stored that way.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from alexnet.data import open_dataset
from alexnet.data.images import decode_image
from alexnet.data.jpeg import DEFAULT_QUALITY, JpegRecords, decode_on_device, decode_pil
from alexnet.data.transforms import downsample
from alexnet.tools.bench.data import prepare_store
from alexnet.tools.bench.photos import data_root, make_photo_folder
from alexnet.tools.bench.rows import Row, measure_rows, with_ratios
from alexnet.tools.bench.timing import synchronize

log = logging.getLogger(__name__)

IMAGENET_TRAIN = 1_281_167
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Stored:
    """The same photographs stored three ways: the folder's files, the raw store's array, the JPEG store's records."""

    train_dir: Path
    files: list[str]
    raw: np.ndarray
    records: JpegRecords
    datas: list[np.ndarray]  # each record's JPEG bytes
    tensors: list[torch.Tensor]  # the same, as torch tensors (what decode_jpeg takes)
    names: list[str]  # each record's name (for decode errors)
    jpeg_file: Path
    batch: int

    @property
    def sizes(self) -> dict[str, int]:
        """Bytes on disk of each way (the folder's files without its marker file)."""
        folder = sum(p.stat().st_size for p in self.train_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        return {"folder": folder, "raw": self.raw.nbytes, "jpeg": self.jpeg_file.stat().st_size}


def store_photos(cfg) -> Stored:
    """``cfg.photos`` photographs, in a folder and in both stores, made once in ``data_dir``."""
    root = data_root(cfg)
    train_dir = make_photo_folder(root / f"photos-{cfg.photos}", cfg.photos)
    raw_dir, jpeg_dir = root / f"store-{cfg.photos}", root / f"store-jpeg{DEFAULT_QUALITY}-{cfg.photos}"
    prepare_store(train_dir, raw_dir, cfg.workers)
    prepare_store(train_dir, jpeg_dir, cfg.workers, encoding="jpeg")
    records: JpegRecords = open_dataset(jpeg_dir).split("train").loader
    datas = [records.read(i) for i in range(len(records))]
    return Stored(train_dir=train_dir, files=sorted(str(p) for p in train_dir.rglob("*.jpg")),
                  raw=open_dataset(raw_dir).split("train").images, records=records, datas=datas,
                  tensors=[torch.from_numpy(d) for d in datas], names=[records.name(i) for i in range(len(records))],
                  jpeg_file=jpeg_dir / "train.jpeg.bin", batch=min(cfg.batch_size, len(records)))


# -- the measured paths: each one pass over every image -------------------------------------------

def pil_loader(s: Stored) -> None:
    """torchvision.datasets.folder.pil_loader: the reference's decode."""
    from PIL import Image

    for path in s.files:
        with open(path, "rb") as f:
            Image.open(f).convert("RGB")


def folder_source(s: Stored) -> None:
    for path in s.files:
        downsample(decode_image(path), 256)


def raw_store(s: Stored) -> None:
    every = np.arange(len(s.raw))
    for start in range(0, len(s.raw), s.batch):
        np.take(s.raw, every[start : start + s.batch], axis=0)


def jpeg_pil(s: Stored) -> None:
    for data in s.datas:
        decode_pil(data.tobytes(), 3)


def jpeg_torchvision(s: Stored) -> None:
    from torchvision.io import ImageReadMode, decode_jpeg

    out = torch.empty((s.batch, 256, 256, 3), dtype=torch.uint8)
    for start in range(0, len(s.tensors), s.batch):
        for k, data in enumerate(s.tensors[start : start + s.batch]):
            out[k].copy_(decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0))


def jpeg_batched(s: Stored, device: torch.device = CPU) -> None:
    """What the loader runs: decode_jpeg on each batch's list of records, on ``device``."""
    r = s.records
    for start in range(0, len(r), s.batch):
        decode_on_device(s.tensors[start : start + s.batch], device, r.channels, r.size, s.names[start : start + s.batch])
    synchronize(device)


def opencv(s: Stored) -> None:
    """``cv2.imdecode`` of each record (BGR, as OpenCV decodes; the channel order costs nothing here)."""
    import cv2

    cv2.setNumThreads(1)
    for data in s.datas:
        cv2.imdecode(data, cv2.IMREAD_COLOR)


PER_CORE = (  # (label, impl, storage, path): timed on one core each
    ("ImageFolder: torchvision pil_loader (decode only)", "reference", "folder", pil_loader),
    ("ImageFolder: decode_image + downsample to 256 (alexnet's folder source)", "ours", "folder", folder_source),
    ("raw store: batch gathered from the memory map", "ours", "raw", raw_store),
    ("JPEG store: Pillow per record", "ours", "jpeg", jpeg_pil),
    ("JPEG store: decode_jpeg per record", "ours", "jpeg", jpeg_torchvision),
    ("JPEG store: decode_jpeg on the batch's list (the loader's path)", "ours", "jpeg", jpeg_batched),
    ("JPEG store: OpenCV cv2.imdecode per record (not a dependency)", "other", "jpeg", opencv),
)
SIZES = (("folder", "ImageFolder of the JPEG photographs"), ("raw", "raw store, 256×256 uint8"),
         ("jpeg", f"JPEG store, 256×256 at quality {DEFAULT_QUALITY}"))


def run(cfg, device: torch.device) -> list[Row]:
    """Every path on one core, interleaved; on a GPU the loader's path on the whole device; then the sizes."""
    s = store_photos(cfg)
    sizes, settings = s.sizes, _settings(s)
    paths = [(_row(s, label, impl, storage, sizes, settings, cores=1), partial(path, s))
             for label, impl, storage, path in PER_CORE if path is not opencv or importlib.util.find_spec("cv2")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log.info("decode: %d images, one core each", len(s.records))
        rows = measure_rows(paths, CPU, warmup=1, reps=cfg.reps)
    finally:
        torch.set_num_threads(threads)
    if device.type != "cpu":  # the GPU's decode: the whole device, not a core
        kind = "nvJPEG" if device.type == "cuda" else device.type
        label = f"JPEG store: decode_jpeg on the batch's list on {device} ({kind}, the whole device)"
        rows += measure_rows([(_row(s, label, "ours", "jpeg", sizes, settings, cores=None), partial(jpeg_batched, s, device))],
                             device, warmup=1, reps=cfg.reps)
    return with_ratios(rows) + [size_row(s, storage, label, sizes[storage], settings) for storage, label in SIZES]


def size_row(s: Stored, storage: str, label: str, size: int, settings: dict) -> Row:
    """Bytes on disk per image stored ``storage``'s way, and what ImageNet's training set would take."""
    per_image = size / len(s.records)
    return Row("decode", f"size on disk: {label}", "reference" if storage == "folder" else "ours", "size", s.batch,
               note=f"{per_image / 1e3:,.1f} kB an image; ImageNet's train set ≈ {per_image * IMAGENET_TRAIN / 1e9:,.0f} GB",
               settings={"kind": "size", "storage": storage, "bytes": size, "bytes_per_image": per_image,
                         "imagenet_train_gb": per_image * IMAGENET_TRAIN / 1e9, **settings})


def _settings(s: Stored) -> dict:
    return {"images": len(s.records), "photo_size": "500x375", "photo_quality": 90, "store_size": 256,
            "jpeg_quality": DEFAULT_QUALITY}


def _row(s: Stored, label: str, impl: str, storage: str, sizes: dict, settings: dict, cores: int | None) -> Row:
    n = len(s.records)
    return Row("decode", label, impl, "decode", s.batch, images_per_call=n, batches_per_call=n / s.batch,
               settings={"storage": storage, "cores": cores, "bytes_per_image": sizes[storage] / n, **settings})
