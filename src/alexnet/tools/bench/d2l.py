"""Part ``d2l``: a learner's epoch of d2l's chapter on the real Fashion-MNIST, d2l's code against ours.

The reference is d2l's code as written (d2l/torch.py of d2l-ai/d2l-zh v2.0.0 = d2l-ai/d2l-en
v0.17.6): ``load_data_fashion_mnist(batch, resize)``, a ``DataLoader`` (shuffled, 4 workers:
``get_dataloader_workers``) over torchvision's ``FashionMNIST`` with ``Resize(r)`` then
``ToTensor()``, and ``train_ch6``'s loop body, fp32: ``zero_grad``, forward, mean cross-entropy,
``backward``, plain SGD ``step``, then under ``no_grad`` its Accumulator's ``l * X.shape[0]`` and
``accuracy`` (a float, so the step waits for its result). The nets are the registry's ``*_d2l``
forms, layer for layer d2l's (docs/FAMILY.md), in NCHW and fp32 as ``train_ch6`` runs them.
torchvision reads the IDX files uncompressed from ``FashionMNIST/raw``: the bench writes that copy
once into its data folder (nothing is downloaded).

Ours is ``alexnet train --preset d2l --data fashion-mnist``'s own path: the images fitted once to
the recipe's size (``prefit``), ``iter_batches``, ``Preprocess.augment`` (here only the scaling to
[0, 1]) and the step of ``make_train_step`` at the preset's runtime settings, in fp32 and in the
best autocast precision. Every row is timed over ``reps`` chunks of ``data_batches`` batches
after ``warmup`` batches; the projected minutes per epoch are 60,000 images at that rate (ours
plus the time ``prefit`` takes for 60,000 images, which an epoch pays once per run).
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alexnet import models, runtime
from alexnet.atomic import atomic_write, make_folder
from alexnet.data import open_dataset
from alexnet.data.fitted import prefit
from alexnet.data.imageset import ImageSet
from alexnet.data.loader import iter_batches
from alexnet.data.sources import FASHION_MNIST
from alexnet.data.transforms import Preprocess, pipeline
from alexnet.errors import AlexNetError
from alexnet.tools.bench.data import timed_batches
from alexnet.tools.bench.photos import data_root
from alexnet.tools.bench.rows import Row, with_ratios
from alexnet.tools.bench.step import train_gflop
from alexnet.tools.bench.timing import Measurement
from alexnet.training import step as steps
from alexnet.training.config import TrainConfig, resolve

log = logging.getLogger(__name__)

EPOCH_IMAGES = 60_000  # Fashion-MNIST's training set: d2l trains on all of it
D2L_WORKERS = 4  # d2l/torch.py get_dataloader_workers()
# the chapter's nets, each with the preset it trains with; --model picks any, DEFAULT is timed otherwise
PRESETS = {"lenet_d2l": "d2l_lenet", "alexnet_d2l": "d2l", "vgg11_d2l": "d2l_vgg", "nin_d2l": "d2l_nin",
           "googlenet_d2l": "d2l_googlenet", "lenet_bn_d2l": "d2l_bn_lenet", "resnet18_d2l": "d2l_resnet",
           "densenet_d2l": "d2l_densenet"}
DEFAULT = ("alexnet_d2l", "vgg11_d2l", "resnet18_d2l")


def torchvision_root(root: Path) -> Path:
    """A folder torchvision's ``FashionMNIST(root, download=False)`` reads: ``FashionMNIST/raw`` with the
    four IDX files uncompressed, written once from the installed ones."""
    source = Path(open_dataset(FASHION_MNIST).root)
    raw = root / "torchvision-fashion-mnist" / "FashionMNIST" / "raw"
    make_folder(raw)
    for path in sorted(source.iterdir()):
        target = raw / path.name.removesuffix(".gz")
        if path.name.endswith("-ubyte.gz") and not target.exists():
            with gzip.open(path, "rb") as f:
                atomic_write(target, f.read())  # an interrupted copy leaves no half file that would pass as whole
    return raw.parent.parent


def reference_loader(root: Path, batch_size: int, resize: int, workers: int, train: bool = True):
    """d2l's ``load_data_fashion_mnist(batch_size, resize)``: one of its two DataLoaders."""
    from torchvision import datasets, transforms

    trans = transforms.Compose([transforms.Resize(resize), transforms.ToTensor()])
    data = datasets.FashionMNIST(root=str(root), train=train, transform=trans, download=False)
    return torch.utils.data.DataLoader(data, batch_size, shuffle=train, num_workers=workers,
                                       persistent_workers=workers > 0)


def reference_batches(root: Path, batch_size: int, resize: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """d2l's training iterator, epoch after epoch."""
    loader = reference_loader(root, batch_size, resize, workers)
    while True:
        yield from loader


def reference_step(net: nn.Module, lr: float, metric: list[float] | None = None
                   ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """``train_ch6``'s loop body (its Xavier init applied to ``net`` first); it adds the batch's summed
    loss, correct predictions and size to ``metric`` (its Accumulator of three)."""
    for m in net.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    metric = [0.0, 0.0, 0] if metric is None else metric
    net.train()

    def step(X: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad()
        y_hat = net(X)
        l = loss(y_hat, y)
        l.backward()
        optimizer.step()
        with torch.no_grad():
            metric[0] += float(l * X.shape[0])
            metric[1] += float((y_hat.argmax(dim=1).type(y.dtype) == y).sum())
            metric[2] += X.shape[0]

    return step


def train_ch6(net: nn.Module, config: TrainConfig, root: Path, device: torch.device,
              max_steps: int = 0) -> dict[str, float]:
    """d2l's ``train_ch6`` as written, for ``config.epochs`` epochs (or ``max_steps`` steps in all):
    its three numbers, the last epoch's running means in train mode and ``evaluate_accuracy_gpu``'s
    test accuracy in eval mode after it. Like d2l's, it tests after every epoch (for its plot): that
    work is part of the time it takes."""
    resize = config.data.pipeline_options["resize"]
    train_iter = reference_loader(root, config.batch_size, resize, D2L_WORKERS)
    test_iter = reference_loader(root, config.batch_size, resize, D2L_WORKERS, train=False)
    metric = [0.0, 0.0, 0]
    step, steps = reference_step(net.to(device), config.optim.lr, metric), 0
    for _ in range(config.epochs):
        metric[:] = [0.0, 0.0, 0]
        net.train()
        for X, y in train_iter:
            step(X.to(device), y.to(device))
            steps += 1
            if steps == max_steps:
                break
        test_acc = evaluate_accuracy(net, test_iter, device)
        if steps == max_steps:
            break
    return {"loss": metric[0] / metric[2], "train_acc": metric[1] / metric[2], "test_acc": test_acc}


def evaluate_accuracy(net: nn.Module, test_iter, device: torch.device) -> float:
    """d2l's ``evaluate_accuracy_gpu``: the share of the test images whose arg max is their label, in eval mode."""
    net.eval()
    right = seen = 0
    with torch.no_grad():
        for X, y in test_iter:
            right += int((net(X.to(device)).argmax(dim=1).cpu() == y).sum())
            seen += len(y)
    return right / seen


def our_batches(images: ImageSet, pre: Preprocess, batch_size: int, device: torch.device
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``alexnet train``'s batches: the fitted images through iter_batches and Preprocess.augment."""
    epoch = 0
    while True:
        for x, y in iter_batches(images, batch_size, size=pre.pipeline.resize, device=device, shuffle=True, epoch=epoch):
            yield pre.augment(x), y
        epoch += 1


def subset(images: ImageSet, n: int) -> ImageSet:
    return ImageSet(images.labels[:n], images.classes, images=np.asarray(images.images[:n]))


def recipe(cfg, name: str, **flags) -> TrainConfig:
    """The preset ``name`` trains with, at the bench's batch in quick mode (the preset's otherwise)."""
    config = resolve(PRESETS[name], flags, [])
    return replace(config, batch_size=cfg.batch_size) if cfg.quick else config


def reference_row(cfg, device: torch.device, name: str, root: Path) -> Row:
    config = recipe(cfg, name)
    torch.manual_seed(0)
    net = models.create(name).to(device)
    log.info("d2l: d2l's code, %s", name)
    resize = config.data.pipeline_options["resize"]
    workers = min(D2L_WORKERS, cfg.workers) if cfg.quick else D2L_WORKERS
    batches = ((x.to(device), y.to(device)) for x, y in reference_batches(root, config.batch_size, resize, workers))
    m = timed_batches(batches, reference_step(net, config.optim.lr), cfg, device)
    return _row(cfg, config, f"d2l's code: {name} fp32 (DataLoader, 4 workers, train_ch6)", "reference", m, net)


def our_row(cfg, device: torch.device, name: str, train: ImageSet, precision: str) -> Row:
    config = recipe(cfg, name, precision=precision, device=str(device))
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    start = time.perf_counter()
    fitted = prefit(train, pipe.resize, pipe.channels)
    prefit_per_image = (time.perf_counter() - start) / len(train)
    torch.manual_seed(0)
    model = models.create(name)
    train_step = steps.make_train_step(model, config, config.runtime_settings(device))
    log.info("d2l: ours, %s %s", name, precision)
    batches = our_batches(fitted, Preprocess(pipe, None), config.batch_size, device)
    m = timed_batches(batches, train_step, cfg, device)
    return _row(cfg, config, f"ours: {name} {precision} (alexnet train --preset {PRESETS[name]})", "ours", m, model,
                prefit_s_per_epoch=prefit_per_image * EPOCH_IMAGES)


def run(cfg, device: torch.device) -> list[Row]:
    """d2l's code first (fp32, the process's allocator), then ours as ``alexnet train`` runs it."""
    names = tuple(n for n in cfg.models if n in PRESETS) or (("alexnet_d2l",) if cfg.quick else DEFAULT)
    if cfg.models and not set(cfg.models) & set(PRESETS) and not cfg.quick:
        return [Row("d2l", f"d2l's chapter on {FASHION_MNIST}", "reference", "d2l", cfg.batch_size,
                    note=f"not run: it times {', '.join(PRESETS)} (--model {', '.join(cfg.models)})")]
    try:
        train = open_dataset(FASHION_MNIST).split("train")
    except AlexNetError as e:
        return [Row("d2l", f"d2l's chapter on {FASHION_MNIST}", "reference", "d2l", cfg.batch_size, note=f"not run: {e}")]
    most = max(recipe(cfg, name).batch_size for name in names)
    train = subset(train, most * (cfg.warmup + cfg.reps * cfg.data_batches + 1))
    root = torchvision_root(data_root(cfg))
    rows = [reference_row(cfg, device, name, root) for name in names]
    runtime.apply_process_settings(runtime.RuntimeSettings(device=str(device), tune_allocator=cfg.tune_allocator,
                                                          lrn_kernel=cfg.lrn_kernel))
    rows += [our_row(cfg, device, name, train, precision) for name in names for precision in cfg.precisions]
    return with_ratios(rows)


def _row(cfg, config: TrainConfig, label: str, impl: str, m: Measurement, model: nn.Module, **settings) -> Row:
    """A row of model ``config.model.name`` at ``config``'s batch and precision (d2l's code: fp32)."""
    images = cfg.data_batches * config.batch_size
    seconds = EPOCH_IMAGES * m.median / images + settings.get("prefit_s_per_epoch", 0.0)
    precision = config.precision if impl == "ours" else "fp32"
    return Row("d2l", label, impl, config.model.name, config.batch_size, timing=m, images_per_call=images,
               batches_per_call=cfg.data_batches, train_gflop=train_gflop(model),
               settings={"model": config.model.name, "precision": precision, "minutes_per_epoch": seconds / 60, **settings})
