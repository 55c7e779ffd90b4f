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
import tempfile
from pathlib import Path

import numpy as np
import torch

from alexnet.data import open_dataset
from alexnet.data.images import decode_image
from alexnet.data.jpeg import DEFAULT_QUALITY, JpegRecords, decode_on_device, decode_pil
from alexnet.data.transforms import downsample
from alexnet.tools.bench.data import prepare_store
from alexnet.tools.bench.photos import make_photo_folder
from alexnet.tools.bench.timing import measure_interleaved, synchronize

log = logging.getLogger(__name__)

IMAGENET_TRAIN = 1_281_167


def prepare_jpeg_store(train_dir: Path, out: Path, workers: int, quality: int = DEFAULT_QUALITY) -> None:
    """``alexnet prepare --encoding jpeg`` of the photographs (once)."""
    from alexnet.data.prepare import PrepareConfig, prepare

    if not out.is_dir():
        prepare(PrepareConfig(source=str(train_dir.parent), out=str(out), size=256, workers=workers, progress=False,
                              encoding="jpeg", quality=quality))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def run(cfg, device: torch.device) -> list[dict]:
    root = Path(cfg.data_dir) if cfg.data_dir else Path(tempfile.gettempdir()) / "alexnet-bench"
    root.mkdir(parents=True, exist_ok=True)
    count = cfg.photos
    train_dir = make_photo_folder(root / f"photos-{count}", count)
    raw_dir, jpeg_dir = root / f"store-{count}", root / f"store-jpeg{DEFAULT_QUALITY}-{count}"
    prepare_store(train_dir, raw_dir, cfg.workers)
    prepare_jpeg_store(train_dir, jpeg_dir, cfg.workers)

    files = sorted(str(p) for p in train_dir.rglob("*.jpg"))
    raw = open_dataset(raw_dir).split("train").images
    records: JpegRecords = open_dataset(jpeg_dir).split("train").loader
    datas = [records.read(i) for i in range(len(records))]
    every = np.arange(len(records))
    batch = min(cfg.batch_size, len(records))

    def pil_loader() -> None:  # torchvision.datasets.folder.pil_loader: the reference's decode
        from PIL import Image

        for path in files:
            with open(path, "rb") as f:
                Image.open(f).convert("RGB")

    def folder_source() -> None:
        for path in files:
            downsample(decode_image(path), 256)

    def raw_store() -> None:
        for start in range(0, len(raw), batch):
            np.take(raw, every[start : start + batch], axis=0)

    def jpeg_pil() -> None:
        for data in datas:
            decode_pil(data.tobytes(), 3)

    def jpeg_torchvision() -> None:
        from torchvision.io import ImageReadMode, decode_jpeg

        out = torch.empty((batch, 256, 256, 3), dtype=torch.uint8)
        for start in range(0, len(records), batch):
            for k, data in enumerate(tensors[start : start + batch]):
                out[k].copy_(decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0))

    tensors = [torch.from_numpy(d) for d in datas]
    names = [records.name(i) for i in range(len(records))]

    def batched(device: torch.device):
        def run() -> None:
            for start in range(0, len(records), batch):
                decode_on_device(tensors[start : start + batch], device, records.channels, records.size,
                                 names[start : start + batch])
            synchronize(device)
        return run

    per_core = {
        ("ImageFolder: torchvision pil_loader (decode only)", "reference", "folder"): pil_loader,
        ("ImageFolder: decode_image + downsample to 256 (alexnet's folder source)", "ours", "folder"): folder_source,
        ("raw store: batch gathered from the memory map", "ours", "raw"): raw_store,
        ("JPEG store: Pillow per record", "ours", "jpeg"): jpeg_pil,
        ("JPEG store: decode_jpeg per record", "ours", "jpeg"): jpeg_torchvision,
        ("JPEG store: decode_jpeg on the batch's list (the loader's path)", "ours", "jpeg"): batched(torch.device("cpu")),
    }
    if importlib.util.find_spec("cv2") is not None:
        per_core[("JPEG store: OpenCV cv2.imdecode per record (not a dependency)", "other", "jpeg")] = opencv(datas)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log.info("decode: %d images, one core each", len(records))
        measured = measure_interleaved(list(per_core.values()), torch.device("cpu"), warmup=1, reps=cfg.reps)
    finally:
        torch.set_num_threads(threads)

    sizes = {"folder": _folder_bytes(train_dir), "raw": raw.nbytes,
             "jpeg": (jpeg_dir / "train.jpeg.bin").stat().st_size}
    info = {"images": len(records), "photo_size": "500x375", "photo_quality": 90, "store_size": 256,
            "jpeg_quality": DEFAULT_QUALITY}
    rows = []
    for (label, impl, kind), m in zip(per_core, measured):
        rows.append(_row(label, impl, kind, len(records), m.median, batch, info, sizes, cores=1))
    if device.type != "cpu":  # the GPU's decode: the whole device, not a core
        m = measure_interleaved([batched(device)], device, warmup=1, reps=cfg.reps)[0]
        kind = "nvJPEG" if device.type == "cuda" else device.type
        rows.append(_row(f"JPEG store: decode_jpeg on the batch's list on {device} ({kind}, the whole device)", "ours",
                         "jpeg", len(records), m.median, batch, info, sizes, cores=None))
    ref = rows[0]["images_per_s"]
    for r in rows:
        r["ratio"] = r["images_per_s"] / ref
    for kind, label in (("folder", "ImageFolder of the JPEG photographs"), ("raw", "raw store, 256×256 uint8"),
                        ("jpeg", f"JPEG store, 256×256 at quality {DEFAULT_QUALITY}")):
        per_image = sizes[kind] / len(records)
        rows.append({"part": "decode", "label": f"size on disk: {label}", "kind": "size", "batch_size": batch,
                     "what": "size", "storage": kind, "bytes": sizes[kind], "bytes_per_image": per_image,
                     "imagenet_train_gb": per_image * IMAGENET_TRAIN / 1e9,
                     "note": f"{per_image / 1e3:,.1f} kB an image; "
                             f"ImageNet's train set ≈ {per_image * IMAGENET_TRAIN / 1e9:,.0f} GB",
                     **info})
    return rows


def opencv(datas: list[np.ndarray]):
    """``cv2.imdecode`` of each record (BGR, as OpenCV decodes; the channel order costs nothing here)."""
    import cv2

    cv2.setNumThreads(1)

    def run() -> None:
        for data in datas:
            cv2.imdecode(data, cv2.IMREAD_COLOR)
    return run


def _row(label: str, impl: str, storage: str, n: int, seconds: float, batch: int, info: dict, sizes: dict,
         cores: int | None) -> dict:
    return {"part": "decode", "label": label, "impl": impl, "what": "decode", "storage": storage, "cores": cores,
            "batch_size": batch, "median_s": seconds, "images_per_s": n / seconds, "ms": seconds * batch / n * 1e3,
            "bytes_per_image": sizes[storage] / n, **info}
