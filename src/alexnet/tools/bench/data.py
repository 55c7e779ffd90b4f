"""Part ``data``: training from JPEG photographs end to end, and the data path alone.

The reference is pytorch/examples' ImageNet pipeline: ``torchvision.datasets.ImageFolder`` with
``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` in a
``DataLoader`` (``workers`` processes, pinned memory on CUDA; persistent workers, so that the
tiny epochs of the bench do not pay a worker start-up that an ImageNet epoch would amortise), each
batch moved to the device and fed to the reference training step.

Ours decodes each photograph once (``alexnet prepare``: shorter side to 256, centre 256×256, a
memory-mapped uint8 store with the training set's statistics), then per batch:
:func:`alexnet.data.loader.iter_batches` (uint8 to the device, pinned on CUDA),
:meth:`alexnet.data.transforms.Preprocess.augment` on the device (the paper's random 227 crops,
reflections and PCA lighting, §4.1), and the fast-path training step (:mod:`alexnet.runtime`).

End to end, ours trains each of ``BenchConfig.data_models``: by default the paper's ``alexnet``
(the headline: the paper's network and recipe) and ``alexnet_owt``, torchvision's own architecture
with torchvision's augmentation (random-resized 224 crops, flips, per-channel normalisation) done
on the device. That second row trains the reference's network with the reference's kind of
augmentation, so its ratio is what the pipeline and the fast path are worth on the same network;
the first adds what the paper's network costs more (LRN, two towers, 96 conv1 maps).

Both read the same photographs (:mod:`alexnet.tools.bench.photos`). Each is timed over ``reps`` chunks
of ``data_batches`` batches after ``warmup`` batches, epochs following each other. The reference's
rows run first, with the process's default allocator; ours then run as ``alexnet train`` runs them,
with :func:`alexnet.runtime.tune_cpu_allocator` on a CPU (after the step part in ``bench all``,
whose tuning stays on, the reference runs tuned too).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from alexnet import models, runtime
from alexnet.data.transforms import Pipeline, Preprocess, pipeline
from alexnet.tools.bench.photos import data_root, make_photo_folder
from alexnet.tools.bench.rows import Row, with_ratios
from alexnet.tools.bench.step import REFERENCE, allocator_label, reference_model, reference_step, train_gflop, train_step
from alexnet.tools.bench.timing import Measurement, peak_memory_mb, reset_peak_memory, synchronize

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# the augmentation each model trains with end to end (alexnet.data.transforms.PIPELINES); "paper" otherwise
MODEL_PIPELINES = {"alexnet_owt": "torchvision"}


def reference_batches(train_dir: Path, cfg, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """pytorch/examples' training loader, epoch after epoch."""
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(str(train_dir), transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0, drop_last=True)
    while True:
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def model_pipeline(name: str, model: torch.nn.Module) -> Pipeline:
    """The augmentation ``model`` trains with end to end: its recipe's, at its input size and channels."""
    return pipeline(MODEL_PIPELINES.get(name, "paper"), crop=model.input_size, channels=model.in_channels)


def our_batches(store: Path, cfg, device: torch.device, recipe: Pipeline | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The packed store through iter_batches and Preprocess.augment (``recipe``, default the paper's) on the device."""
    from alexnet.data import open_dataset
    from alexnet.data.loader import iter_batches

    dataset = open_dataset(str(store))
    train = dataset.split("train")
    pre = Preprocess(recipe or pipeline("paper"), dataset.stats)
    size = pre.pipeline.resize
    epoch = 0
    while True:
        for x, y in iter_batches(train, cfg.batch_size, size=size, device=device, shuffle=True, epoch=epoch,
                                 workers=cfg.workers, drop_last=True):
            yield pre.augment(x), y
        epoch += 1


def prepare_store(train_dir: Path, out: Path, workers: int, encoding: str = "raw") -> float:
    """``alexnet prepare [--encoding jpeg]`` of the photographs (once, at 256 and the default JPEG quality);
    returns the seconds it took (0 if it existed)."""
    from alexnet.data.prepare import PrepareConfig, prepare

    if out.is_dir():
        return 0.0
    start = time.perf_counter()
    prepare(PrepareConfig(source=str(train_dir.parent), out=str(out), size=256, workers=workers, progress=False,
                          encoding=encoding))
    return time.perf_counter() - start


def timed_batches(batches: Iterator, consume: Callable[[torch.Tensor, torch.Tensor], object], cfg,
                  device: torch.device) -> Measurement:
    """Warm up, then time ``reps`` chunks of ``data_batches`` batches each."""
    for _ in range(cfg.warmup):
        consume(*next(batches))
    synchronize(device)
    reset_peak_memory(device)
    times = []
    for _ in range(cfg.reps):
        start = time.perf_counter()
        for _ in range(cfg.data_batches):
            consume(*next(batches))
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Measurement(sorted(times), cfg.warmup, peak_memory_mb(device))


@dataclass(frozen=True)
class Photos:
    """The part's inputs: the JPEG photographs, their packed store, and what describes them in every row."""

    train_dir: Path
    store: Path
    settings: dict


def make_photos(cfg) -> Photos:
    """The photographs (at least one epoch of whole batches) and their store, made once in ``data_dir``."""
    root = data_root(cfg)
    count = max(cfg.photos, cfg.batch_size * (cfg.data_batches + 1))
    train_dir = make_photo_folder(root / f"photos-{count}", count)
    prepare_s = prepare_store(train_dir, root / f"store-{count}", cfg.workers)
    return Photos(train_dir, root / f"store-{count}", {
        "photos": count, "photo_size": "500x375", "jpeg_quality": 90, "workers": cfg.workers, "prepare_s": prepare_s,
        "data_batches": cfg.data_batches})


def reference_data_path(cfg, device: torch.device, photos: Photos) -> Row:
    log.info("data: reference data path")
    m = timed_batches(reference_batches(photos.train_dir, cfg, device), _nothing, cfg, device)
    return _row(cfg, "ImageFolder + PIL + DataLoader (data only)", "reference", "data", "fp32", photos, m)


def reference_end_to_end(cfg, device: torch.device, photos: Photos) -> Row:
    torch.manual_seed(0)
    model = reference_model()
    log.info("data: reference end to end")
    m = timed_batches(reference_batches(photos.train_dir, cfg, device), reference_step(model, device), cfg, device)
    return _row(cfg, f"{REFERENCE} fp32 from ImageFolder (end to end)", "reference", "end_to_end", "fp32", photos, m,
                train_gflop(model))


def our_data_path(cfg, device: torch.device, photos: Photos) -> Row:
    log.info("data: our data path")
    m = timed_batches(our_batches(photos.store, cfg, device), _nothing, cfg, device)
    return _row(cfg, "packed store + iter_batches + Preprocess.augment on device (data only)", "ours", "data", "fp32",
                photos, m)


def our_end_to_end(cfg, device: torch.device, photos: Photos, name: str, fast: runtime.RuntimeSettings) -> Row:
    """Model ``name`` trained from the store by the step ``alexnet train`` runs, with its recipe's augmentation."""
    torch.manual_seed(0)
    model = models.create(name, num_classes=1000)
    gflop = train_gflop(model)
    train = train_step(model, fast)
    recipe = model_pipeline(name, model)
    log.info("data: our end to end, %s", name)
    m = timed_batches(our_batches(photos.store, cfg, device, recipe), train, cfg, device)
    label = f"{name} {fast.precision}, packed store, {recipe.name} augmentation (end to end)"
    return _row(cfg, label, "ours", "end_to_end", fast.precision, photos, m, gflop, model=name, pipeline=recipe.name)


def run(cfg, device: torch.device) -> list[Row]:
    """The data paths, then end to end; the reference first, as people run it, then ours as ``alexnet train``
    runs it (on a CPU with the tuned allocator, which cannot be switched back off: hence this order)."""
    photos = make_photos(cfg)
    rows = [reference_data_path(cfg, device, photos), reference_end_to_end(cfg, device, photos)]
    fast = runtime.RuntimeSettings(device=str(device), precision=cfg.precisions[-1],  # the best the device supports by default
                                   channels_last=cfg.channels_last, tune_allocator=cfg.tune_allocator,
                                   lrn_kernel=cfg.lrn_kernel)
    runtime.apply_process_settings(fast)
    rows.append(our_data_path(cfg, device, photos))
    rows += [our_end_to_end(cfg, device, photos, name, fast) for name in cfg.data_models]
    rows.sort(key=lambda r: r.what != "data")  # shown: the data paths, then end to end
    return with_ratios(rows)


def _nothing(images: torch.Tensor, labels: torch.Tensor) -> None:
    """The data path alone: each batch is made and dropped."""


def _row(cfg, label: str, impl: str, what: str, precision: str, photos: Photos, m: Measurement,
         gflop: float | None = None, **settings) -> Row:
    allocator = allocator_label()  # after the timing: ours tunes it
    return Row("data", label, impl, what, cfg.batch_size, timing=m, train_gflop=gflop,
               images_per_call=cfg.data_batches * cfg.batch_size, batches_per_call=cfg.data_batches, settings={
                   "precision": precision, "allocator": allocator, **photos.settings, **settings,
                   "batches_per_s": cfg.data_batches / m.median})


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
