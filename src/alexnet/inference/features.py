"""Image descriptors: one row per image of a layer's activations, streamed to a memory-mappable ``.npy``.

§6.1 of the paper: "If two images produce feature activation vectors with a small Euclidean
separation, we can say that the higher levels of the neural network consider them to be similar" —
the 4096-d code of the last hidden layer (fc7). DeCAF (Donahue et al. 2014) and "CNN features
off-the-shelf" (Razavian et al. 2014) made that code the standard image descriptor for linear
classifiers and retrieval; :mod:`alexnet.inference.probe` and :mod:`alexnet.inference.search` use what this module writes.

Files, for ``--out NAME.npy``:

* ``NAME.npy``: float32 (or float16) [N, D], row i = image i of the split in the split's order,
  readable with ``np.load(path, mmap_mode="r")``;
* ``NAME.csv``: the index, one line per row: ``row,path,label,class`` (``path`` is empty for data
  sets that are not files: digits, CIFAR-10, IDX, a packed store without its origin paths);
* ``NAME.json``: what made it: checkpoint (path, SHA-256), data, split, layer, dtype, shape, classes.

Layers (``--layer``): ``features`` (the default) is the model's own ``forward_features``: fc7 after its
ReLU for the AlexNet family and VGG, GoogLeNet's pooled 1024-d code. Any child module's name is a
layer too (``pool5``, ``relu3``, ``norm2``…). ``convN`` and ``fcN`` name the *top* of that layer: the
output after its ReLU and, for an FC layer, after the test-time dropout that follows it — the blob
Caffe's in-place ReLU and dropout leave under the name ``fc7`` and what DeCAF calls fc6/fc7. So
``fc7`` is ``forward_features`` exactly (including the paper's test-time ×(1 − p) of §4.2 on the
models that use the paper's dropout scaling). A layer is read by a forward hook that stops the
forward pass there (nothing above it is computed); the activations are flattened to one row.

Preprocessing is the checkpoint's own evaluation view, the centre crop (``alexnet eval --views 1``).

Bounded memory and resuming: rows go straight into ``NAME.partial.npy`` (``numpy.lib.format.open_memmap``);
after every batch the rows are flushed and ``NAME.partial.json``, the job record (:mod:`alexnet.jobs`), records
how many are done; one run writes a feature set at a time (the lock ``.NAME.npy.lock``). A run
started again with the same checkpoint, data, split, layer and dtype continues from there, with the
batch size of the first run (the same batches, so bit-identical rows), and the finished files take their
names by ``os.replace`` (the ``.npy`` is written in place, so it cannot go through
:func:`alexnet.atomic.atomic_path`, which would throw the partial file away on an interruption; the index
and the record do). Existing outputs, and an unfinished run of other features, are refused without
``overwrite`` (``--force``), which replaces only this feature set's own files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn

from alexnet import runtime
from alexnet.atomic import atomic_write, refuse_existing, write_json
from alexnet.data import open_dataset
from alexnet.data.imageset import ImageSet
from alexnet.data.loader import iter_batches
from alexnet.data.sources import recorded_spec
from alexnet.errors import AlexNetError, at_least, not_one_of, unknown, worker_count
from alexnet.inference.evaluate import evaluating, load_for_inference
from alexnet.jobs import JobRecord, RunLock, resume

log = logging.getLogger(__name__)

DEFAULT_LAYER = "features"
DTYPES = ("float32", "float16")
INDEX_COLUMNS = ("row", "path", "label", "class")


# -- layers -------------------------------------------------------------------------------------
def _execution_order(model: nn.Module) -> list[str]:
    """Child module names in the order the forward pass runs them (AlexNet keeps it; others register in it)."""
    return model.layer_order()


def layer_names(model: nn.Module) -> list[str]:
    """The names ``--layer`` takes for ``model``: ``features``, then its child modules in forward order."""
    return [DEFAULT_LAYER, *_execution_order(model)]


def resolve_layer(model: nn.Module, layer: str) -> str | None:
    """The module whose output is ``layer`` (None: ``forward_features``); see the module doc for ``convN``/``fcN``."""
    if layer == DEFAULT_LAYER:
        return None
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        shown = layer_names(model)
        raise AlexNetError(f"--layer: {unknown(f'{model.name} layer', layer, shown)}")
    order = _execution_order(model)
    if layer not in order or not isinstance(modules[layer], (nn.Conv2d, nn.Linear)):
        return layer
    top = layer
    for name in order[order.index(layer) + 1:]:  # the ReLU and dropout that sit on top of it
        if not isinstance(modules[name], (nn.ReLU, nn.Tanh, nn.Dropout)) and not name.startswith(("relu", "drop")):
            break
        top = name
    return None if top == model.last_hidden() else top  # fc7 of an AlexNet is forward_features itself


class _Reached(Exception):
    """Raised by the hook to stop the forward pass at the layer that was read."""


class LayerReader:
    """``reader(x)`` → the activations of ``layer`` for input x, flattened to [B, D] (fp32 on x's device)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model, self.layer = model, layer
        self.module_name = resolve_layer(model, layer)
        self._out: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.module_name is None:
            return self.model.forward_features(x).float().flatten(1)
        module = self.model.get_submodule(self.module_name)

        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._out = output.detach().float().flatten(1).clone()
            raise _Reached

        handle = module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if self._out is None:
            raise AlexNetError(f"--layer {self.layer!r}: module {self.module_name} is not run by the forward pass")
        out, self._out = self._out, None
        return out


# -- configuration and files --------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """How ``alexnet features`` runs."""

    layer: str = DEFAULT_LAYER  # see the module doc
    dtype: str = "float32"  # of the stored rows; "float16" halves the file
    batch_size: int = 128
    device: str = "cpu"
    precision: str = "fp32"  # runtime.PRECISIONS: bf16 autocast is ~3× faster on a CPU with AMX, not bit-equal
    channels_last: bool = True  # oneDNN's native layout: 3× the images/s of NCHW for alexnet_owt on this CPU
    workers: int = 0  # decoding processes for image folders
    threads: int = 0  # the model's intra-op threads (0: torch's default); runtime.intra_op_threads

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise AlexNetError(not_one_of("--dtype ", self.dtype, DTYPES))
        at_least("--batch-size", self.batch_size)
        if self.precision not in runtime.PRECISIONS:
            raise AlexNetError(not_one_of("--precision ", self.precision, runtime.PRECISIONS))
        worker_count("--workers", self.workers)
        if self.threads < 0:
            raise AlexNetError(f"--threads {self.threads} must be 0 (torch's default) or more")

    def runtime_settings(self) -> runtime.RuntimeSettings:
        return runtime.RuntimeSettings(device=self.device, precision=self.precision, channels_last=self.channels_last)


@dataclass(frozen=True)
class FeaturePaths:
    """The files of one feature set, all beside ``array`` (``NAME.npy``)."""

    array: Path

    @classmethod
    def of(cls, out: str | os.PathLike) -> FeaturePaths:
        path = Path(out)
        if path.suffix != ".npy":
            raise AlexNetError(f"{out}: the features file must end in .npy (the index and record go beside it)")
        return cls(path)

    @property
    def index(self) -> Path:
        return self.array.with_suffix(".csv")

    @property
    def record(self) -> Path:
        return self.array.with_suffix(".json")

    @property
    def partial(self) -> Path:
        return self.array.with_suffix(".partial.npy")

    @property
    def progress(self) -> Path:
        """The job record of an unfinished run (alexnet.jobs.JobRecord): its settings and rows done."""
        return self.array.with_suffix(".partial.json")

    @property
    def lock(self) -> RunLock:
        """One writer per feature set: ``.NAME.npy.lock`` beside it (alexnet.jobs.RunLock)."""
        return RunLock(self.array.parent, f".{self.array.name}.lock", self.array)

    def finished(self) -> list[Path]:
        return [p for p in (self.array, self.index, self.record) if p.exists()]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_made_with(checkpoint_path: str | os.PathLike, record: dict[str, Any], features: str | os.PathLike) -> None:
    """Refuse ``checkpoint_path`` unless it is the file whose codes ``features`` holds (its ``record`` names the
    checkpoint and its SHA-256): codes of other weights are other codes, though the same architecture
    gives them the same shape (``alexnet search``'s queries, ``alexnet explore``'s neighbours)."""
    if file_sha256(checkpoint_path) != record.get("checkpoint_sha256"):
        raise AlexNetError(f"{checkpoint_path}: not the checkpoint {features} was made with "
                           f"({record.get('checkpoint')}); codes compared must come from the same weights")


def index_rows(images: ImageSet) -> list[tuple[int, str, int, str]]:
    """(row, path or "", label, class name) per image, in the split's order."""
    paths = images.paths if images.paths is not None else [""] * len(images)
    return [(i, p, int(y), images.classes[int(y)]) for i, (p, y) in enumerate(zip(paths, images.labels))]


def index_csv(images: ImageSet) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    writer.writerows(index_rows(images))
    return buffer.getvalue()


# -- running ------------------------------------------------------------------------------------
class Extractor:
    """A checkpoint's model, its centre-crop preprocessing and a layer: uint8 [B, H, W, C] → float32 [B, D].

    The one path from images to codes: ``alexnet features`` and ``alexnet search`` build it from a
    checkpoint file, Fig. 4's neighbours and explore from a model already in memory
    (:meth:`of_model`), so a query's fc7 and a bank's are computed alike.
    """

    def __init__(self, checkpoint_path: str | os.PathLike | None, config: FeatureConfig, *, loaded=None) -> None:
        """``loaded``: (checkpoint or None, model, Preprocess) in memory, used instead of reading ``checkpoint_path``."""
        self.config = config
        self.ckpt, model, self.preprocess = loaded or load_for_inference(checkpoint_path, config.device, config.precision)
        self.fast = config.runtime_settings()
        self.model = runtime.prepare_model(model, self.fast)
        self.reader = LayerReader(self.model, config.layer)

    @property
    def size(self) -> int:
        """The side the loader down-samples images to (the checkpoint's resize, §2)."""
        return self.preprocess.pipeline.resize

    @classmethod
    def of_model(cls, model: nn.Module, preprocess, config: FeatureConfig) -> Extractor:
        """An extractor over a model in memory (moved to ``config``'s device and layout in place)."""
        return cls(None, config, loaded=(None, model, preprocess))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = runtime.to_input(self.preprocess.centre_crop(images.to(self.config.device)), self.fast)
        with evaluating(self.model), runtime.autocast(self.fast.torch_device, self.fast.precision):
            return self.reader(x).cpu()

    def casting(self):
        """An autocast context around many calls: the weights are cast to bf16/fp16 once in it, not at
        every batch (autocast caches its casts of parameters until its outermost context exits; 57 M
        weights of ``alexnet_owt`` cost ≈ 0.8 ms per image at batch 64 on two CPU cores)."""
        return runtime.autocast(self.fast.torch_device, self.fast.precision)

    def dim(self, channels: int) -> int:
        """Columns of one row: run one blank image through."""
        blank = torch.zeros(1, self.size, self.size, channels, dtype=torch.uint8)
        return int(self(blank).shape[1])


def _job(checkpoint_path: str | os.PathLike, sha: str, data: str, split: str, images: ImageSet, config: FeatureConfig,
         dim: int, reads: str) -> dict[str, Any]:
    """What a feature set is of (``reads``: the module read, or forward_features); a partial run continues
    only when all of it is the same."""
    return {
        "checkpoint": str(checkpoint_path), "checkpoint_sha256": sha, "split": split,
        "data": recorded_spec(data),
        "layer": config.layer, "reads": reads, "dtype": config.dtype, "precision": config.precision, "rows": len(images), "dim": dim,
    }


RESUME_KEYS = ("checkpoint_sha256", "data", "split", "reads", "dtype", "precision", "rows", "dim")  # what a resume must match


def extract(
    checkpoint_path: str | os.PathLike,
    data: str,
    split: str,
    out: str | os.PathLike,
    config: FeatureConfig,
    *,
    overwrite: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the features of ``data``'s ``split`` to ``out`` (see the module doc); returns the record.

    ``on_batch(done, total)`` is called once where the job starts (``done`` > 0 when it resumes) and after
    each batch is on disk (the CLI's progress bar, whose rate counts only this process's images).
    """
    paths = FeaturePaths.of(out)
    with paths.lock:
        return _extract(checkpoint_path, data, split, paths, config, overwrite, on_batch)


def _extract(checkpoint_path: str | os.PathLike, data: str, split: str, paths: FeaturePaths, config: FeatureConfig,
             overwrite: bool, on_batch: Callable[[int, int], None] | None) -> dict[str, Any]:
    _check_finished(paths, overwrite)
    images = open_dataset(data).split(split)
    if len(images) == 0:
        raise AlexNetError(f"{data}: the {split!r} split has no images")
    with ThreadPoolExecutor(1, thread_name_prefix="alexnet-sha256") as pool:  # hashlib lets go of the GIL: 0.3 s hidden
        sha = pool.submit(file_sha256, checkpoint_path)
        extractor = Extractor(checkpoint_path, config)
        dim = extractor.dim(images.channels)
        digest = sha.result()
    reads = extractor.reader.module_name or "forward_features"
    job = _job(checkpoint_path, digest, data, split, images, config, dim, reads)
    record = _resume_point(paths, job, config.batch_size, overwrite)
    done, batch_size = record.progress["done"], record.progress["batch_size"]
    if done == 0:
        rows = open_memmap(paths.partial, mode="w+", dtype=config.dtype, shape=(len(images), dim))
        record.save(paths.progress)
    else:
        rows = open_memmap(paths.partial, mode="r+")
        log.info("%s: resuming at row %d of %d", paths.partial, done, len(images))
    batches = iter_batches(images, batch_size, size=extractor.size, device="cpu", workers=config.workers, start=done // batch_size)
    if on_batch is not None:
        on_batch(done, len(images))
    with extractor.casting(), runtime.intra_op_threads(config.threads):
        for start, x in _batches(batches, done, batch_size):
            rows[start:start + len(x)] = extractor(x).numpy().astype(config.dtype, copy=False)
            rows.flush()
            done = record.progress["done"] = start + len(x)
            record.save(paths.progress)
            if on_batch is not None:
                on_batch(done, len(images))
    del rows
    return _finish(paths, job, images, extractor)


def _batches(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], done: int, batch_size: int
             ) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, images) per batch. A file a DataLoader worker could not decode reaches us as a
    RuntimeError holding the worker's traceback; it becomes the one line the worker raised."""
    try:
        for i, (x, _) in enumerate(batches):
            yield done + i * batch_size, x
    except RuntimeError as e:
        found = re.search(r"BadImage: (.+?)\s*$", str(e))
        if "Caught BadImage" not in str(e) or found is None:
            raise
        raise AlexNetError(f"{found.group(1)} (fix it and run the same command to continue, or remove it and rerun with --force)") from None


def _check_finished(paths: FeaturePaths, overwrite: bool) -> None:
    """Finished files are replaced only with ``overwrite`` and only when they are a feature set (a features
    record beside them, or an unfinished run's job record): --force never replaces a file features did not write."""
    found = paths.finished()
    if not found:
        return
    refuse_existing(found[0], overwrite, "--out")
    try:
        ours = paths.progress.is_file() or {"checkpoint_sha256", "layer", "shape"} <= set(json.loads(paths.record.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise AlexNetError(f"{found[0]}: not a feature set (no features record {paths.record.name} beside it); refusing to "
                           "replace it even with --force")


def _resume_point(paths: FeaturePaths, job: dict[str, Any], batch_size: int, overwrite: bool) -> JobRecord:
    """The record to write on: the unfinished run's (``progress``: rows done, its batch size) or a fresh one at row 0."""
    settings = {k: job[k] for k in RESUME_KEYS}
    record = resume(paths.progress, "features", settings, force=overwrite, own=[paths.partial.name])
    fresh = JobRecord("features", settings, {"done": 0, "batch_size": batch_size}, [paths.partial.name])
    if record is None or not paths.partial.is_file():
        return fresh
    try:
        done, old_batch = int(record.progress["done"]), int(record.progress["batch_size"])
    except (KeyError, TypeError, ValueError) as e:
        if not overwrite:
            raise AlexNetError(f"{paths.progress}: no rows done or batch size in the record ({e!r}); pass --force to "
                               "start again") from None
        return fresh
    if old_batch != batch_size:
        log.warning("resuming with the first run's --batch-size %d (not %d), so the rows are the same", old_batch, batch_size)
    record.progress |= {"done": done - done % old_batch, "batch_size": old_batch}
    return record


def _finish(paths: FeaturePaths, job: dict[str, Any], images: ImageSet, extractor: Extractor) -> dict[str, Any]:
    with open(paths.partial, "rb+") as f:
        os.fsync(f.fileno())
    record = {
        **job,
        "shape": [job["rows"], job["dim"]],
        "model": extractor.ckpt.model,
        "input_size": extractor.ckpt.input_size,
        "classes": list(images.classes),
        "config": asdict(extractor.config),
        "index": paths.index.name,
    }
    atomic_write(paths.index, index_csv(images))
    os.replace(paths.partial, paths.array)
    write_json(paths.record, record)
    paths.progress.unlink(missing_ok=True)
    return record


# -- reading ------------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """A finished feature set: rows (memory-mapped), labels, paths, and its record."""

    path: Path
    rows: np.ndarray  # [N, D], np.memmap
    labels: np.ndarray  # int64 [N]
    paths: list[str]  # "" where the images are not files
    record: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    def __len__(self) -> int:
        return len(self.labels)


def open_features(path: str | os.PathLike) -> FeatureSet:
    """Read what :func:`extract` wrote, checking the three files against each other and the record against
    the rows: dtype, shape, finite values, one index line per row in order, labels among the classes."""
    paths = FeaturePaths.of(path)
    if not paths.array.is_file():
        hint = " (an unfinished run: rerun its alexnet features command)" if paths.partial.is_file() else ""
        raise AlexNetError(f"{path}: no such features file{hint}")
    for p in (paths.index, paths.record):
        if not p.is_file():
            raise AlexNetError(f"{path}: {p.name} is missing beside it (alexnet features writes NAME.npy, NAME.csv, NAME.json)")
    try:
        record = json.loads(paths.record.read_text(encoding="utf-8"))
        rows = np.load(paths.array, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise AlexNetError(f"{path}: unreadable features ({e})") from None
    classes = _check_record(paths.record, record)
    if rows.ndim != 2 or list(rows.shape) != list(record["shape"]) or rows.dtype != np.dtype(record["dtype"]):
        raise AlexNetError(f"{path}: {rows.dtype} rows {list(rows.shape)} but {paths.record.name} says "
                           f"{record['dtype']} {record['shape']}")
    check_rows(path, rows)
    index = read_index(paths.index, len(rows))
    if index.labels is None or "row" not in index.columns:
        raise AlexNetError(f"{paths.index}: not the index alexnet features writes (columns {','.join(INDEX_COLUMNS)})")
    if not np.array_equal(index.positions, np.arange(len(rows))):
        at = int(np.flatnonzero(index.positions != np.arange(len(rows)))[0])
        raise AlexNetError(f"{paths.index}: line {at + 2} gives row {index.positions[at]}, expected {at} (one line per row, in order)")
    outside = np.flatnonzero((index.labels < 0) | (index.labels >= len(classes)))
    if len(outside):
        raise AlexNetError(f"{paths.index}: row {outside[0]} has label {index.labels[outside[0]]}, outside the "
                           f"{len(classes)} classes (0–{len(classes) - 1}) of {paths.record.name}")
    return FeatureSet(paths.array, rows, index.labels, index.paths, record)


def _check_record(path: Path, record: Any) -> list[str]:
    """The record's classes, after checking that it holds what open_features compares (dtype, shape, classes)."""
    ok = isinstance(record, dict) and record.get("dtype") in DTYPES and isinstance(record.get("classes"), list) and \
        isinstance(record.get("shape"), list) and len(record["shape"]) == 2
    if not ok:
        raise AlexNetError(f"{path}: not a features record (needs dtype {' or '.join(DTYPES)}, a shape [rows, columns] and "
                           "the classes)")
    return record["classes"]


def check_rows(path: str | os.PathLike, rows: np.ndarray, chunk: int = 8192) -> None:
    """Refuse a bank with no rows or a value that is not finite (NaN, ±inf), naming the first such row; read in chunks."""
    if len(rows) == 0:
        raise AlexNetError(f"{path}: no rows (a feature set of an empty split)")
    for start in range(0, len(rows), chunk):
        bad = np.flatnonzero(~np.isfinite(np.asarray(rows[start:start + chunk], dtype=np.float32)).all(axis=1))
        if len(bad):
            raise AlexNetError(f"{path}: row {start + bad[0]} holds NaN or infinite values; extract the features again")


@dataclass
class FeatureIndex:
    """What a features index (``NAME.csv``) says of each row."""

    positions: np.ndarray  # int64 [N]: the row's image in its split (the "row" column, or "index"), each once
    labels: np.ndarray | None  # int64 [N], None without a "label" column
    paths: list[str]  # "" where the image is not a file or the index has no "path" column
    columns: list[str]  # the header


def read_index(path: str | os.PathLike, rows: int) -> FeatureIndex:
    """The one reader of a feature set's index: ``alexnet features``' ``row,path,label,class``, or a
    hand-made CSV whose ``index`` column gives each row's position in the split (explore reads those).
    UTF-8, one line per row, each position once."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            entries = list(reader)
    except UnicodeDecodeError as e:
        raise AlexNetError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); an index is "
                           "the UTF-8 CSV alexnet features writes") from None
    except csv.Error as e:
        raise AlexNetError(f"{path}: not a CSV index ({e})") from None
    position = next((c for c in ("row", "index") if c in columns), None)
    if position is None:
        raise AlexNetError(f"{path}: not a features index (header {columns}, expected {','.join(INDEX_COLUMNS)})")
    if len(entries) != rows:
        raise AlexNetError(f"{path}: {len(entries)} index lines for {rows} rows")
    try:
        positions = np.array([int(e[position]) for e in entries], dtype=np.int64)
        labels = np.array([int(e["label"]) for e in entries], dtype=np.int64) if "label" in columns else None
    except (TypeError, ValueError) as e:
        raise AlexNetError(f"{path}: bad index line ({e})") from None
    unique, counts = np.unique(positions, return_counts=True)
    if len(unique) != len(positions):
        raise AlexNetError(f"{path}: {position} {unique[counts > 1][0]} is given {counts.max()} times; each image once")
    return FeatureIndex(positions, labels, [e.get("path") or "" for e in entries], columns)
