"""Part ``features``: fc7 of ``alexnet_owt`` over a folder of JPEG photographs, against what a user would write.

The reference is the feature extractor of PyTorch's transfer-learning tutorial and of every DeCAF
re-implementation: ``torchvision.datasets.ImageFolder`` with ``Resize(256)``, ``CenterCrop(224)``,
``ToTensor``, ``Normalize`` (ImageNet's mean and std) in a ``DataLoader`` (``workers`` processes),
``torchvision.models.alexnet`` with its weights loaded from a ``.pth``, in fp32 eval mode under ``torch.no_grad``, fc7 read as
``classifier[:6]`` of the pooled ``features`` (after fc7's ReLU), the rows gathered in memory.

Ours is ``alexnet features`` on the same folder (:func:`alexnet.inference.features.extract`): the same weights
imported into ``alexnet_owt`` (:func:`alexnet.tools.interop.torchvision.from_torchvision`) in a checkpoint
with torchvision's preprocessing, the folder decoded by the same number of workers, the centre crop
made on the device, the model in channels_last (oneDNN's layout), the rows streamed into the
``.npy`` with the index and the record written; everything ``alexnet features`` does, the checkpoint's
SHA-256 included. Rows: fp32 (the same arithmetic as the reference: the largest difference of the
two feature arrays is reported) and the best autocast precision of the device. Each pass of either
side loads its weights from disk, as one run of a script or of the command does.

Both are timed as whole passes over the folder (a fresh DataLoader each, as one extraction run
makes), interleaved (:func:`alexnet.tools.bench.timing.measure_interleaved`) after one untimed pass.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from alexnet import checkpoint, models, runtime
from alexnet.data.stats import imagenet_stats
from alexnet.data.transforms import Preprocess, pipeline
from alexnet.inference.features import FeatureConfig, extract
from alexnet.tools.bench.data import IMAGENET_MEAN, IMAGENET_STD
from alexnet.tools.bench.photos import data_root, make_photo_folder
from alexnet.tools.bench.rows import Row, measure_rows, with_ratios
from alexnet.tools.bench.step import reference_model
from alexnet.tools.interop.torchvision import from_torchvision

log = logging.getLogger(__name__)

MODEL = "alexnet_owt"


def reference_pass(train_dir: Path, weights: Path, batch_size: int, workers: int) -> np.ndarray:
    """fc7 of every photograph, the way the tutorials write it (the weights loaded from a .pth file)."""
    import torchvision
    from torchvision import datasets, transforms

    model = torchvision.models.alexnet()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    dataset = datasets.ImageFolder(str(train_dir), transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    fc7 = model.classifier[:6]  # Dropout, fc6, ReLU, Dropout, fc7, ReLU
    rows = []
    with torch.no_grad():
        for images, _ in loader:
            rows.append(fc7(torch.flatten(model.avgpool(model.features(images)), 1)).numpy())
    return np.concatenate(rows)


def our_checkpoint(reference: torch.nn.Module, path: Path) -> Path:
    """The reference's weights as ``alexnet import torchvision`` would write them."""
    model = models.create(MODEL, num_classes=1000)
    from_torchvision(reference.state_dict(), model, "the reference model")
    preprocess = Preprocess(pipeline("torchvision"), imagenet_stats(256)).to_state()
    checkpoint.save(path, checkpoint.from_model(model, [f"class_{i}" for i in range(1000)], preprocess=preprocess))
    return path


def variants(cfg, device: torch.device) -> list[tuple[str, int]]:
    """Ours as (precision, model threads): each precision with torch's threads, and on a CPU the cheapest
    again with one model thread beside the decoding workers (``alexnet features --threads 1``)."""
    precisions = list(dict.fromkeys(("fp32", *cfg.precisions)))
    out = [(p, 0) for p in precisions]
    if device.type == "cpu" and cfg.workers > 0 and torch.get_num_threads() > 1 and precisions[-1] != "fp32":
        out.append((precisions[-1], 1))
    return out


def reference_path(cfg, train_dir: Path, weights: Path, fc7: list[np.ndarray]) -> tuple[Row, Callable]:
    """The tutorials' extraction; each pass's features are appended to ``fc7``."""
    label = "ImageFolder + DataLoader + torchvision alexnet fp32 NCHW, fc7 in memory"
    return (_row(cfg, label, "reference", "fp32", 0),
            lambda: fc7.append(reference_pass(train_dir, weights, cfg.infer_batch, cfg.workers)))


def our_path(cfg, device: torch.device, train_dir: Path, ckpt: Path, out: Path, variant: tuple[str, int]
             ) -> tuple[Row, Callable]:
    """``alexnet features`` of the checkpoint into ``out`` at ``variant``'s precision and threads."""
    precision, threads = variant
    config = FeatureConfig(batch_size=cfg.infer_batch, device=str(device), precision=precision, workers=cfg.workers,
                           threads=threads, channels_last=cfg.channels_last)
    label = (f"alexnet features {MODEL} {precision}{' channels_last' if cfg.channels_last else ''}"
             f"{f', --threads {threads}' if threads else ''}, fc7 to .npy")
    return (_row(cfg, label, "ours", precision, threads),
            partial(extract, ckpt, str(train_dir.parent), "train", out, config, overwrite=True))


def run(cfg, device: torch.device) -> list[Row]:
    """The reference and ours (each variant), interleaved; ours with its largest difference to the reference's fc7."""
    root = data_root(cfg)
    train_dir = make_photo_folder(root / f"photos-{cfg.photos}", cfg.photos)
    runtime.apply_process_settings(runtime.RuntimeSettings(str(device), tune_allocator=cfg.tune_allocator))  # as `alexnet features`
    torch.manual_seed(0)
    reference = reference_model().eval()
    ours = variants(cfg, device)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        ckpt, weights = our_checkpoint(reference, Path(tmp) / "owt.pt"), Path(tmp) / "alexnet-owt.pth"
        torch.save(reference.state_dict(), weights)
        outputs = [Path(tmp) / f"features-{p}-{t}.npy" for p, t in ours]
        fc7: list[np.ndarray] = []
        paths = [reference_path(cfg, train_dir, weights, fc7)] + [
            our_path(cfg, device, train_dir, ckpt, out, v) for out, v in zip(outputs, ours)]
        log.info("features: %d photographs, reference and ours (%s), %d rep(s)", cfg.photos,
                 ", ".join(dict.fromkeys(p for p, _ in ours)), cfg.reps)
        rows = measure_rows(paths, torch.device("cpu") if device.type == "cpu" else device,
                            warmup=min(cfg.warmup, 1), reps=cfg.reps)
        rows = rows[:1] + [_with_agreement(r, np.load(out), fc7[-1]) for r, out in zip(rows[1:], outputs)]
    return with_ratios(rows)


def _row(cfg, label: str, impl: str, precision: str, threads: int) -> Row:
    return Row("features", label, impl, "features", cfg.infer_batch, images_per_call=cfg.photos,
               batches_per_call=-(-cfg.photos // cfg.infer_batch), settings={  # ms: per batch
                   "model": MODEL, "precision": precision, "threads": threads or torch.get_num_threads(),
                   "photos": cfg.photos, "photo_size": "500x375", "workers": cfg.workers})


def _with_agreement(row: Row, ours: np.ndarray, reference: np.ndarray) -> Row:
    """``row`` with the largest difference of its fc7 to the reference's, and the reference's largest value."""
    return replace(row, settings={**row.settings, "max_abs_diff_to_reference": float(np.abs(ours - reference).max()),
                                  "reference_max_abs": float(np.abs(reference).max())})
