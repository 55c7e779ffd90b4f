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
from pathlib import Path

import numpy as np
import torch

from alexnet import checkpoint, models, runtime
from alexnet.data.stats import imagenet_stats
from alexnet.data.transforms import Preprocess, pipeline
from alexnet.inference.features import FeatureConfig, extract
from alexnet.tools.bench.data import IMAGENET_MEAN, IMAGENET_STD
from alexnet.tools.bench.photos import make_photo_folder
from alexnet.tools.bench.step import reference_model
from alexnet.tools.bench.timing import measure_interleaved
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


def run(cfg, device: torch.device) -> list[dict]:
    root = Path(cfg.data_dir) if cfg.data_dir else Path(tempfile.gettempdir()) / "alexnet-bench"
    root.mkdir(parents=True, exist_ok=True)
    count = cfg.photos
    train_dir = make_photo_folder(root / f"photos-{count}", count)
    runtime.apply_process_settings(runtime.RuntimeSettings(str(device), tune_allocator=cfg.tune_allocator))  # as `alexnet features`
    batch = cfg.infer_batch
    torch.manual_seed(0)
    reference = reference_model().eval()
    precisions = list(dict.fromkeys(("fp32", *cfg.precisions)))
    # ours: each precision with torch's threads, and the cheapest one again with one model thread beside
    # the decoding workers on a CPU (`alexnet features --threads 1`, runtime.intra_op_threads)
    variants = [(p, 0) for p in precisions]
    if device.type == "cpu" and cfg.workers > 0 and torch.get_num_threads() > 1 and precisions[-1] != "fp32":
        variants.append((precisions[-1], 1))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        ckpt = our_checkpoint(reference, Path(tmp) / "owt.pt")
        weights = Path(tmp) / "alexnet-owt.pth"
        torch.save(reference.state_dict(), weights)
        outputs = {v: Path(tmp) / f"features-{v[0]}-{v[1]}.npy" for v in variants}

        def ours(variant: tuple[str, int]):
            precision, threads = variant
            config = FeatureConfig(batch_size=batch, device=str(device), precision=precision, workers=cfg.workers,
                                   threads=threads, channels_last=cfg.channels_last)
            return lambda: extract(ckpt, str(train_dir.parent), "train", outputs[variant], config, overwrite=True)

        ref_rows: list[np.ndarray] = []
        fns = [lambda: ref_rows.append(reference_pass(train_dir, weights, batch, cfg.workers))] + [ours(v) for v in variants]
        log.info("features: %d photographs, reference and ours (%s), %d rep(s)", count, ", ".join(precisions), cfg.reps)
        times = measure_interleaved(fns, torch.device("cpu") if device.type == "cpu" else device,
                                    warmup=min(cfg.warmup, 1), reps=cfg.reps)
        labels = ["ImageFolder + DataLoader + torchvision alexnet fp32 NCHW, fc7 in memory"] + [
            f"alexnet features {MODEL} {p}{' channels_last' if cfg.channels_last else ''}"
            f"{f', --threads {t}' if t else ''}, fc7 to .npy" for p, t in variants]
        for label, variant, m in zip(labels, [None, *variants], times):
            precision, threads = variant or ("fp32", 0)
            row = {"part": "features", "label": label, "impl": "ours" if variant else "reference", "model": MODEL,
                   "precision": precision, "threads": threads or torch.get_num_threads(),
                   "batch_size": batch, "photos": count, "photo_size": "500x375", "workers": cfg.workers, **m.to_dict(),
                   "images_per_s": count / m.median, "ms": m.median / -(-count // batch) * 1e3}  # per batch
            if variant:
                row["max_abs_diff_to_reference"] = float(np.abs(np.load(outputs[variant]) - ref_rows[-1]).max())
                row["reference_max_abs"] = float(np.abs(ref_rows[-1]).max())
            rows.append(row)
    for r in rows:
        r["ratio"] = r["images_per_s"] / rows[0]["images_per_s"]
    return rows
