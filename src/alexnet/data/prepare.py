"""``alexnet prepare``: decode every image once, down-sample it (§2) and write a packed store.

What it does, in order:

1. opens the source with :func:`~alexnet.data.sources.open_dataset` (any ``--data`` spec; in
   practice an image folder) and refuses an existing OUT unless ``force`` (and even then only
   replaces a packed store or an empty folder);
2. works in ``OUT.partial``: each split's image file is allocated at full size, one slot of
   S×S×C bytes per source image, and ``SPLIT.done.npy`` marks the slots written. Worker processes
   decode (:func:`~alexnet.data.images.decode_image`, which validates) and down-sample
   (:func:`~alexnet.data.transforms.downsample`: shorter side to S, centre crop S×S); the main
   process writes each result into its slot and every ``checkpoint_every`` images flushes the file
   and then records the done marks (atomically). A run that is interrupted, even killed, resumes
   from the last checkpoint: the same command continues where it stopped, provided the source's
   listing and the size are the same (``state.json``);
3. accumulates the statistics of the train split (:class:`~alexnet.data.stats.StatsAccumulator`)
   as it writes (on a resume, first over the slots already written);
4. bad images are collected with their path and reason. Without ``skip_bad`` the run ends with an
   error naming the first bad file and the count (all of them listed in ``OUT.partial/bad_images.txt``)
   and leaves OUT.partial to resume; the good images are kept. With ``skip_bad`` each is recorded
   in the manifest and its slot is filled by moving the split's last images into the holes (a
   handful of moves instead of shifting the whole file), so the order within a split is the source
   order except for those moved images;
5. finishes: labels, paths, ``stats.npz`` and finally ``manifest.json`` are written into OUT.partial,
   which is then renamed to OUT. Bad images are retried on every resume, so a fixed file is picked up.

With ``encoding="jpeg"`` the workers also encode each down-sampled image as JPEG at ``quality``
and the main process appends the records to ``SPLIT.jpeg.bin`` (:class:`~alexnet.data.jpeg.RecordWriter`:
the same checkpoints and resume, the done marks being the record slots). The statistics are those of
the decoded JPEG images, which is what training sees; bad images simply have no record, so the
order of a split is exactly the source order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexnet import __version__
from alexnet.atomic import atomic_path, atomic_write, make_folder
from alexnet.data.images import MAX_PIXELS, BadImage, decode_image
from alexnet.data.imageset import ImageSet
from alexnet.data.jpeg import DEFAULT_QUALITY, ENCODINGS, RecordWriter, decode_pil, encode, index_file, records_file
from alexnet.data.sources import Dataset, open_dataset
from alexnet.data.stats import StatsAccumulator
from alexnet.data.store import FORMAT, MANIFEST, STATS, VERSION, images_file, is_store, labels_file, paths_file
from alexnet.data.transforms import downsample
from alexnet.errors import AlexNetError, at_least, not_one_of
from alexnet.jobs import STATE, JobRecord, RunLock, foreign, resume

log = logging.getLogger(__name__)
MAX_SIZE = 4096  # px: a store side beyond it is a typo (20000² × 3 bytes = 1.2 GB an image)

BAD_LIST = "bad_images.txt"


@dataclass(frozen=True)
class PrepareConfig:
    source: str  # a --data spec (image folder, CIFAR-10, IDX, digits, another store)
    out: str  # the store folder to create
    size: int = 256  # S: shorter side → S, then the central S×S (§2: 256)
    workers: int = 2  # decoding processes; 0 decodes in this process
    skip_bad: bool = False  # leave bad images out (recorded in the manifest) instead of failing
    force: bool = False  # replace an existing store at OUT / discard an incompatible OUT.partial
    max_pixels: int = MAX_PIXELS  # larger images are rejected as decompression bombs
    checkpoint_every: int = 512  # images between flushes of the resumable state
    progress: bool = True  # a tqdm bar on a terminal, plain lines otherwise
    encoding: str = "raw"  # "raw": uint8 slots for np.memmap; "jpeg": JPEG records (alexnet.data.jpeg), ≈ 1/13 the size
    quality: int = DEFAULT_QUALITY  # JPEG quality of encoding="jpeg" (FFCV's 90)


@dataclass
class SplitPlan:
    name: str
    imageset: ImageSet
    size: int
    channels: int
    bad: list[tuple[int, str]] = field(default_factory=list)  # (index, reason) found in this run

    @property
    def count(self) -> int:
        return len(self.imageset)

    @property
    def slot_bytes(self) -> int:
        return self.size * self.size * self.channels


def prepare(config: PrepareConfig) -> dict[str, Any]:
    """Write the store; returns its manifest. One writer at a time: the lock ``.OUT.lock`` beside OUT."""
    if not 8 <= config.size <= MAX_SIZE:
        raise AlexNetError(f"--size {config.size}: the stored side must be between 8 and {MAX_SIZE} pixels (the paper's is 256)")
    if config.encoding not in ENCODINGS:
        raise AlexNetError(not_one_of("--encoding ", config.encoding, ENCODINGS))
    at_least("--max-pixels", config.max_pixels)
    if not 1 <= config.quality <= 100:
        raise AlexNetError(f"--quality {config.quality}: JPEG quality runs from 1 to 100 (default {DEFAULT_QUALITY})")
    out = Path(config.out)
    _check_out(out, config.force)
    dataset = open_dataset(config.source)
    plans = _plan(dataset, config.size)
    with RunLock(out.parent, f".{out.name}.lock", out):
        _check_out(out, config.force)  # again, now that no other prepare can be writing it
        return _prepare(out, dataset, plans, config)


def _prepare(out: Path, dataset: Dataset, plans: list[SplitPlan], config: PrepareConfig) -> dict[str, Any]:
    partial = out.with_name(out.name + ".partial")
    _open_partial(partial, _settings(dataset, config), plans, config)
    if not (partial / MANIFEST).is_file():  # not already finishing: decode what is left
        stats = _fill(partial, plans, config)
        bad = [(p.name, p.imageset.paths[i] if p.imageset.paths else f"{p.name}[{i}]", r)
               for p in plans for i, r in p.bad]
        emptied = [p for p in plans if len(p.imageset) and len(p.bad) == len(p.imageset)]
        if emptied and config.skip_bad:  # --skip-bad leaves bad images out, not a whole split
            _write_text(partial / BAD_LIST, "".join(f"{path}\t{reason}\n" for _, path, reason in bad))
            split = emptied[0].name
            path, reason = next((path, reason) for name, path, reason in bad if name == split)
            raise AlexNetError(f"{config.source}: all {len(emptied[0].imageset):,} images of its {split} split are bad (the first: "
                               f"{path}: {reason}; all in {partial / BAD_LIST}); no store was written")
        if bad and not config.skip_bad:
            _write_text(partial / BAD_LIST, "".join(f"{path}\t{reason}\n" for _, path, reason in bad))
            _, path, reason = bad[0]
            raise AlexNetError(f"{path}: {reason} — the first of {len(bad)} bad images (all in {partial / BAD_LIST}); "
                               f"rerun with --skip-bad to leave them out, or fix them and rerun (the good images "
                               f"are kept in {partial})")
        _write_finish(partial, dataset, plans, stats, config)
    manifest = json.loads((partial / MANIFEST).read_text(encoding="utf-8"))
    _truncate(partial, manifest)
    _replace(partial, out)
    (out / STATE).unlink(missing_ok=True)  # kept until now so that a crash at any point above resumes
    return manifest


# -- the destination ------------------------------------------------------------------------------

def _check_out(out: Path, force: bool) -> None:
    """OUT may be replaced (``force``) only when it is empty or a store holding nothing prepare did not write."""
    if not out.exists():
        return
    if not force:
        raise AlexNetError(f"{out}: already exists; alexnet prepare never overwrites (pass --force to replace a packed store)")
    if not (out.is_dir() and (is_store(out) or not any(out.iterdir()))):
        raise AlexNetError(f"{out}: exists and is not a packed store; refusing to replace it even with --force")
    others = foreign(out, OWN_FILES)
    if others:
        raise AlexNetError(f"{out}: a packed store that also holds {others[0].name}, which alexnet prepare did not write; "
                           "refusing to replace it even with --force (move it out first)")


def _replace(partial: Path, out: Path) -> None:
    old = None
    if out.exists():  # checked by _check_out: a store of only its own files, or an empty folder, and force was given
        old = out.with_name(out.name + f".old-{os.getpid()}")
        os.replace(out, old)
    os.replace(partial, out)
    if old is not None:
        shutil.rmtree(old)


# -- planning and resuming ----------------------------------------------------------------------

def _plan(dataset: Dataset, size: int) -> list[SplitPlan]:
    plans = []
    for name in ("train", "val", "test"):
        if name in dataset.splits:
            s = dataset.splits[name]
            channels = 3 if not s.in_memory else int(s.images.shape[3])  # decode_image gives RGB
            plans.append(SplitPlan(name, s, size, channels))
    if not plans:
        raise AlexNetError(f"{dataset.root or dataset.name}: no splits to prepare")
    return plans


def _settings(dataset: Dataset, config: PrepareConfig) -> dict[str, Any]:
    """What must not change between a run and its resume: source, size, encoding, and the listing
    (classes, file list, labels, shapes) as one SHA-256."""
    source = str(Path(dataset.root).resolve()) if dataset.root else dataset.name
    settings = {"source": source, "size": config.size, "encoding": config.encoding}
    if config.encoding != "raw":
        settings["quality"] = config.quality
    h = hashlib.sha256(json.dumps(dataset.classes).encode())
    for name, s in sorted(dataset.splits.items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(s.labels, dtype=np.int64).tobytes())
        for start in range(0, len(s.paths or []), 10_000):
            h.update("".join(p + "\n" for p in s.paths[start : start + 10_000]).encode("utf-8", "surrogateescape"))
        if s.in_memory:
            h.update(str(s.images.shape).encode())
    return settings | {"listing": h.hexdigest()}


def _open_partial(partial: Path, settings: dict[str, Any], plans: list[SplitPlan], config: PrepareConfig) -> None:
    """Resume OUT.partial (its record, state.json, has the same settings) or start it afresh (jobs.resume's rule)."""
    if resume(partial / STATE, "prepare", settings, force=config.force, own=OWN_FILES) is not None:
        log.info("%s: resuming an interrupted run", partial)
        return
    others = foreign(partial, OWN_FILES)
    if others:  # they would end up in the store: never written over, never removed
        raise AlexNetError(f"{partial}: holds {others[0].name}, which alexnet prepare did not write; move it out or "
                           "choose another OUT")
    make_folder(partial)
    files = []
    for p in plans:
        if config.encoding == "jpeg":
            RecordWriter.create(partial / records_file(p.name), partial / _slots_file(p.name), p.count)
            files += [records_file(p.name), _slots_file(p.name)]
            continue
        with open(partial / images_file(p.name), "wb") as f:
            f.truncate(p.count * p.slot_bytes)  # sparse until written
        _save_npy(partial / _done_file(p.name), np.zeros(p.count, dtype=bool))
        files += [images_file(p.name), _done_file(p.name)]
    JobRecord("prepare", settings, {"splits": {p.name: p.count for p in plans}}, files).save(partial / STATE)


def _slots_file(split: str) -> str:
    return f"{split}.slots.npy"


def _done_file(split: str) -> str:
    return f"{split}.done.npy"


# every name prepare writes in OUT.partial (and so in OUT): the only files --force removes or replaces
OWN_FILES = frozenset({STATE, BAD_LIST, MANIFEST, STATS, *(name(split) for split in ("train", "val", "test") for name in (
    images_file, labels_file, paths_file, records_file, index_file, _slots_file, _done_file))})


class _RawSlots:
    """A raw split being written: one S×S×C slot per source image, and the marks of those written."""

    def __init__(self, partial: Path, plan: SplitPlan) -> None:
        self.done_path = partial / _done_file(plan.name)
        self.images = _memmap(partial / images_file(plan.name), plan, "r+")
        self.done = np.load(self.done_path, allow_pickle=False)

    def put(self, i: int, image: np.ndarray, data: bytes | None) -> None:
        self.images[i] = image
        self.done[i] = True

    def written(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.images[rows])

    def checkpoint(self) -> None:
        if isinstance(self.images, np.memmap):
            self.images.flush()
        _save_npy(self.done_path, self.done)

    def close(self) -> None:
        del self.images


def _writer(partial: Path, plan: SplitPlan, config: PrepareConfig) -> _RawSlots | RecordWriter:
    if config.encoding == "jpeg":
        return RecordWriter(partial / records_file(plan.name), partial / _slots_file(plan.name), plan.size, plan.channels)
    return _RawSlots(partial, plan)


# -- decoding and writing -----------------------------------------------------------------------

def _fill(partial: Path, plans: list[SplitPlan], config: PrepareConfig) -> StatsAccumulator:
    """Decode and write every slot not yet done; returns the train split's statistics so far."""
    writers = {p.name: _writer(partial, p, config) for p in plans}
    todos = {name: np.flatnonzero(~writer.done) for name, writer in writers.items()}
    stats = _resumed_stats(writers.get("train"))
    progress = _Progress(sum(len(todo) for todo in todos.values()), enabled=config.progress)
    since_checkpoint = 0

    def checkpoint() -> None:
        for writer in writers.values():
            writer.checkpoint()

    try:
        for p in plans:
            train_batch = _TrainBatch(stats if p.name == "train" else None)
            for i, image, reason, data in _results(p, todos[p.name], config):
                if reason is not None:
                    p.bad.append((i, reason))
                else:
                    writers[p.name].put(i, image, data)
                    train_batch.add(image)
                progress.update(p.name)
                since_checkpoint += 1
                if since_checkpoint >= config.checkpoint_every:
                    checkpoint()
                    since_checkpoint = 0
            train_batch.flush()
            p.bad.sort()
        checkpoint()
    except KeyboardInterrupt:
        checkpoint()  # everything marked done is written: keep it for the resume
        raise KeyboardInterrupt(f"interrupted; what was done is kept in {partial}: run the same command again to "
                                "resume") from None
    finally:
        for writer in writers.values():
            writer.close()
    progress.close()
    return stats


def _resumed_stats(train: _RawSlots | RecordWriter | None) -> StatsAccumulator:
    """On a resume, the statistics of the train images already written (in chunks of about 256)."""
    stats = StatsAccumulator()
    if train is not None and train.done.any():
        for chunk in np.array_split(np.flatnonzero(train.done), max(1, int(train.done.sum()) // 256)):
            stats.update(train.written(chunk))
    return stats


class _TrainBatch:
    """Train images gathered 64 at a time into the statistics (``stats`` None: another split, ignored)."""

    def __init__(self, stats: StatsAccumulator | None) -> None:
        self.stats, self.images = stats, []

    def add(self, image: np.ndarray) -> None:
        if self.stats is not None:
            self.images.append(image)
            if len(self.images) == 64:
                self.flush()

    def flush(self) -> None:
        if self.stats is not None and self.images:
            self.stats.update(np.stack(self.images))
            self.images = []


def _results(plan: SplitPlan, todo: np.ndarray, config: PrepareConfig):
    """(index, uint8 [S, S, C] or None, reason or None, JPEG bytes or None) for each slot to fill, in any order."""
    s = plan.imageset
    quality = config.quality if config.encoding == "jpeg" else 0
    if s.in_memory:
        for i in todo:
            image, data = _encoded(downsample(np.asarray(s.images[i]), config.size), quality)
            yield int(i), image, None, data
        return
    tasks = [(int(i), s.paths[i], config.size, config.max_pixels, quality) for i in todo]
    if config.workers <= 0 or len(tasks) < 2:
        yield from map(_decode_task, tasks)
        return
    with multiprocessing.get_context().Pool(config.workers, initializer=_ignore_interrupts) as pool:
        yield from pool.imap_unordered(_decode_task, tasks, chunksize=8)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process, which saves the checkpoint and closes the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_task(task: tuple[int, str, int, int, int]) -> tuple[int, np.ndarray | None, str | None, bytes | None]:
    """Decode, down-sample and (quality > 0) encode as JPEG one source image: (index, image, reason, bytes)."""
    i, path, size, max_pixels, quality = task
    try:
        image = downsample(decode_image(path, max_pixels=max_pixels), size)
    except BadImage as e:
        return i, None, e.reason, None
    image, data = _encoded(image, quality)
    return i, image, None, data


def _encoded(image: np.ndarray, quality: int) -> tuple[np.ndarray, bytes | None]:
    """``image`` as stored: itself (raw), or the decode of its JPEG encoding at ``quality`` and those bytes."""
    if not quality:
        return image, None
    data = encode(image, quality)
    return decode_pil(data, image.shape[2]), data


# -- finishing ----------------------------------------------------------------------------------

def _write_finish(partial: Path, dataset: Dataset, plans: list[SplitPlan], stats: StatsAccumulator,
                  config: PrepareConfig) -> None:
    """Close the holes left by bad images, write labels, paths, statistics and (last) the manifest."""
    splits, skipped = {}, []
    for p in plans:
        if config.encoding == "jpeg":  # no holes: a bad image has no record
            order = np.setdiff1d(np.arange(p.count), [i for i, _ in p.bad])
            writer = _writer(partial, p, config)
            writer.finish(order, partial / index_file(p.name))
            writer.close()
        else:
            order = _fill_holes(partial, p)
        labels = np.ascontiguousarray(p.imageset.labels[order], dtype=np.int64)
        _save_npy(partial / labels_file(p.name), labels)
        entry = {"count": len(order), "images": images_file(p.name), "labels": labels_file(p.name),
                 "shape": [len(order), config.size, config.size, p.channels], "paths": None}
        if config.encoding == "jpeg":
            entry |= {"images": records_file(p.name), "index": index_file(p.name),
                      "bytes": (partial / records_file(p.name)).stat().st_size}
        if p.imageset.paths is not None:
            _write_text(partial / paths_file(p.name), "".join(p.imageset.paths[i] + "\n" for i in order))
            entry["paths"] = paths_file(p.name)
        splits[p.name] = entry
        skipped += [{"split": p.name, "path": p.imageset.paths[i] if p.imageset.paths else f"{p.name}[{i}]",
                     "reason": r} for i, r in p.bad]
    has_train = any(p.name == "train" and splits["train"]["count"] for p in plans)
    if has_train:
        with atomic_path(partial / STATS) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz"
            stats.finish().save(f)
    manifest = {
        "format": FORMAT, "version": VERSION, "source": str(config.source), "source_kind": dataset.name,
        "size": config.size, "channels": plans[0].channels, "classes": dataset.classes, "encoding": config.encoding,
        **({"quality": config.quality} if config.encoding == "jpeg" else {}),
        "downsample": "shorter side to size (PIL bilinear), central size×size crop (§2)",
        "splits": splits, "skipped": skipped, "stats": STATS if has_train else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "alexnet_version": __version__,
    }
    _write_json(partial / MANIFEST, manifest)


def _fill_holes(partial: Path, plan: SplitPlan) -> np.ndarray:
    """Move the last good images into the bad slots; returns the source index of each final slot.

    Sources lie beyond the final length and are never overwritten, so redoing this after a crash
    gives the same result.
    """
    n = plan.count
    good = np.ones(n, dtype=bool)
    good[[i for i, _ in plan.bad]] = False
    keep = int(good.sum())
    order = np.arange(n)
    holes = np.flatnonzero(~good[:keep])
    movers = np.flatnonzero(good[keep:]) + keep
    if len(holes):
        slots = _memmap(partial / images_file(plan.name), plan, "r+")
        for hole, mover in zip(holes, movers):
            slots[hole] = slots[mover]
            order[hole] = mover
        slots.flush()
        del slots
    return order[:keep]


def _truncate(partial: Path, manifest: dict[str, Any]) -> None:
    for name, entry in manifest["splits"].items():
        if manifest.get("encoding", "raw") == "raw":
            with open(partial / entry["images"], "r+b") as f:
                f.truncate(int(np.prod(entry["shape"])))
        (partial / _done_file(name)).unlink(missing_ok=True)
        (partial / _slots_file(name)).unlink(missing_ok=True)
    (partial / BAD_LIST).unlink(missing_ok=True)


# -- small helpers ------------------------------------------------------------------------------

def _memmap(path: Path, plan: SplitPlan, mode: str) -> np.ndarray:
    shape = (plan.count, plan.size, plan.size, plan.channels)
    if plan.count == 0:
        return np.zeros(shape, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode=mode, shape=shape)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8", errors="surrogateescape"))


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=1) + "\n")


class _Progress:
    """A tqdm bar on a terminal; otherwise a plain line every 10% (logs stay readable)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.count, self.next_line = total, 0, max(1, total // 10)
        self.bar = None
        self.enabled = enabled and total > 0
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc="prepare", file=sys.stderr)

    def update(self, split: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(split, refresh=False)
            self.bar.update(1)
        elif self.enabled and (self.count >= self.next_line or self.count == self.total):
            print(f"prepare: {self.count}/{self.total} images ({split})", file=sys.stderr, flush=True)
            self.next_line += max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
