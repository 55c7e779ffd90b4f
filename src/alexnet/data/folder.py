"""An image folder in ImageNet layout, read lazily (each image is decoded when it is loaded).

Layout (the one torchvision's ``ImageFolder`` and ImageNet's training archive use)::

    ROOT/train/CLASS/*.jpg      one folder per class; the class names are the sorted folder names
    ROOT/val/CLASS/*.jpg        the same classes (a subset is fine)
    ROOT/test/CLASS/*.jpg       optional

Images are found recursively under each class folder, sorted by path; files whose names do not end
in an image suffix (``IMAGE_SUFFIXES``) and hidden files are ignored.

ImageNet's validation images come flat (``ROOT/val/ILSVRC2012_val_00000001.JPEG`` …) with a label
file, looked for in ROOT, ROOT/val, ``ROOT/ILSVRC2012_devkit_t12/data`` and up to three folders
above ROOT (which covers Kaggle's ``ILSVRC/Data/CLS-LOC`` layout):

* ``LOC_val_solution.csv`` (Kaggle's ImageNet object-localisation challenge): rows
  ``ImageId,PredictionString``; the label is the first WordNet id of the prediction string.
* ``ILSVRC2012_validation_ground_truth.txt`` (the ILSVRC2012 devkit): line i is the ILSVRC2012_ID
  (1–1000) of the i-th image in name order; the ids are turned into WordNet ids with the devkit's
  ``meta.mat`` in the same folder (read with scipy, as torchvision does).

A flat ``test/`` (ImageNet's, which has no public labels) is left out with a log line.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from alexnet.data.images import decode_image, is_image_name
from alexnet.data.imageset import ImageSet
from alexnet.errors import AlexNetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CSV_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"


class FileDecoder:
    """``loader(i)`` of a lazy ImageSet: decodes ``paths[i]``. A class, so worker processes can pickle it."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> np.ndarray:
        return decode_image(self.paths[i])


def is_image_folder(root: Path) -> bool:
    return any((root / s).is_dir() for s in SPLITS)


def open_image_folder(root: str | os.PathLike) -> tuple[dict[str, ImageSet], list[str]]:
    """The splits found under ``root`` and the class names (see the module doc for the layout)."""
    root = Path(root)
    if not root.is_dir():
        raise AlexNetError(f"{root}: no such folder")
    found = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if not found:
        raise AlexNetError(f"{root}: no train/, val/ or test/ folder (expected ROOT/train/CLASS/*.jpg)")

    layouts = {s: _layout(d) for s, d in found.items()}
    class_splits = [s for s in SPLITS if layouts.get(s) == "classes"]
    reference = found[class_splits[0]] if class_splits else None  # the split that names the classes
    classes = sorted(_class_dirs(reference)) if reference else None  # None: from the label file

    splits: dict[str, ImageSet] = {}
    for split, folder in found.items():
        if layouts[split] == "classes":
            paths, labels = _read_class_folders(folder, classes, reference)
        elif split == "test":
            log.info("%s: flat folder without labels (ImageNet's test set): left out", folder)
            continue
        else:
            paths = sorted(str(p) for p in _images_in(folder))
            paths, labels, classes = _label_flat_folder(root, folder, paths, classes)
        splits[split] = ImageSet(labels=np.asarray(labels, dtype=np.int64), classes=classes,
                                 loader=FileDecoder(paths), paths=paths, info={"source": "folder", "folder": str(folder)})
    for s in splits.values():
        s.classes = classes
    return splits, classes


def _visible(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _class_dirs(folder: Path) -> list[str]:
    return [e.name for e in _visible(folder) if e.is_dir()]


def _images_in(folder: Path) -> list[Path]:
    return [Path(e.path) for e in _visible(folder) if e.is_file() and is_image_name(e.name)]


def _layout(folder: Path) -> str:
    """"classes" (CLASS sub-folders) or "flat" (images directly inside)."""
    dirs, images = _class_dirs(folder), _images_in(folder)
    if dirs and images:
        raise AlexNetError(f"{folder}: has both class folders ({dirs[0]}, …) and loose images ({images[0].name}, …)")
    if dirs:
        return "classes"
    if images:
        return "flat"
    raise AlexNetError(f"{folder}: no class folders and no images")


def _walk(top: Path) -> list[str]:
    """The visible files below ``top``, following symbolic links to directories, each real directory
    once; a link that leads back to one of its own ancestors (a loop, which would revisit the tree
    forever or under another class's name) is a one-line error naming it."""
    files: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            link = os.path.join(dirpath, d)
            target = os.path.realpath(link)
            if os.path.islink(link) and (real + os.sep).startswith(target + os.sep):
                raise AlexNetError(f"{link}: a symbolic link loop (it leads back to {target}, which holds it); remove it")
            if target not in seen:
                seen.add(target)
                keep.append(d)
        dirnames[:] = keep
        for name in [*dirnames, *filenames]:
            if "\n" in name or "\r" in name:
                raise AlexNetError(f"{os.path.join(dirpath, name)!r}: a name with a line break; rename it (a packed store "
                                   "lists its paths one per line)")
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return files


def _read_class_folders(folder: Path, classes: list[str], reference: Path) -> tuple[list[str], list[int]]:
    index = {c: i for i, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in _class_dirs(folder):
        if name not in index:
            raise AlexNetError(f"{folder / name}: class {name!r} is not one of the {len(classes)} classes in {reference}")
        files = _walk(folder / name)
        images = [f for f in files if is_image_name(f)]
        if not files:
            raise AlexNetError(f"{folder / name}: empty class folder")
        if not images:
            raise AlexNetError(f"{folder / name}: class folder without images ({len(files)} other files, "
                               f"e.g. {os.path.basename(files[0])})")
        paths += images
        labels += [index[name]] * len(images)
    return paths, labels


def _label_flat_folder(root: Path, folder: Path, paths: list[str],
                       classes: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    """Labels for a flat validation folder from LOC_val_solution.csv or the devkit ground truth."""
    label_file = _find_label_file(root, folder)
    log.info("%s: labels from %s", folder, label_file)
    if label_file.name == CSV_LABELS:
        wnids = _read_loc_csv(label_file, paths)
    else:
        wnids = _read_devkit(label_file, label_file.parent / DEVKIT_META, paths)
    if classes is None:
        classes = sorted(set(wnids))
    index = {c: i for i, c in enumerate(classes)}
    unknown = [(p, w) for p, w in zip(paths, wnids) if w not in index]
    if unknown:
        raise AlexNetError(f"{label_file}: labels {unknown[0][0]} as {unknown[0][1]!r}, which is not one of the "
                           f"{len(classes)} classes ({len(unknown)} such images)")
    return paths, [index[w] for w in wnids], classes


def _find_label_file(root: Path, folder: Path) -> Path:
    above = list(root.resolve().parents)[:3]
    places = [root, folder, *above]
    places += [p / "ILSVRC2012_devkit_t12" / "data" for p in (root, *above)]
    for place in places:
        for name in (CSV_LABELS, DEVKIT_LABELS):
            if (place / name).is_file():
                return place / name
    raise AlexNetError(f"{folder}: flat folder of images but no label file ({CSV_LABELS} or {DEVKIT_LABELS}) "
                       f"in {root}, its devkit folder or the three folders above it")


def _read_loc_csv(path: Path, images: list[str]) -> list[str]:
    labels: dict[str, str] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise AlexNetError(f"{path}: expected the header 'ImageId,PredictionString', got {header!r}")
        for line, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[1].split():
                raise AlexNetError(f"{path}: line {line} has no label: {row!r}")
            labels[row[0].strip()] = row[1].split()[0]
    stems = [Path(p).stem for p in images]
    missing = [s for s in stems if s not in labels]
    if missing:
        raise AlexNetError(f"{path}: no label for {missing[0]} ({len(missing)} of {len(images)} images in "
                           f"{Path(images[0]).parent} have none)")
    if len(labels) != len(images):
        extra = sorted(set(labels) - set(stems))
        raise AlexNetError(f"{path}: {len(labels)} labels but {len(images)} images in {Path(images[0]).parent} "
                           f"(no image for {extra[0]}, …)")
    return [labels[s] for s in stems]


def _read_devkit(path: Path, meta: Path, images: list[str]) -> list[str]:
    ids = []
    with open(path) as f:
        for line, text in enumerate(f, start=1):
            if text.strip():
                try:
                    ids.append(int(text))
                except ValueError:
                    raise AlexNetError(f"{path}: line {line} is not an ILSVRC2012_ID: {text.strip()!r}") from None
    if len(ids) != len(images):
        raise AlexNetError(f"{path}: {len(ids)} labels but {len(images)} images in {Path(images[0]).parent} "
                           f"(line i labels the i-th image in name order, so the counts must match)")
    wnid_of = _devkit_synsets(meta)
    bad = [i for i in ids if i not in wnid_of]
    if bad:
        raise AlexNetError(f"{path}: ILSVRC2012_ID {bad[0]} is not a leaf synset of {meta}")
    return [wnid_of[i] for i in ids]


def _devkit_synsets(meta: Path) -> dict[int, str]:
    """ILSVRC2012_ID → WordNet id for the leaf synsets (num_children == 0) of the devkit's meta.mat."""
    if not meta.is_file():
        raise AlexNetError(f"{meta}: missing; the devkit's meta.mat gives the synset order of {DEVKIT_LABELS}")
    from scipy.io import loadmat  # scipy comes with scikit-learn; .mat files hold data, never code

    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        ids, wnids, children = synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]
    except Exception as e:
        raise AlexNetError(f"{meta}: not the devkit's meta.mat ({type(e).__name__}: {e})") from None
    return {int(i): str(w) for i, w, n in zip(np.atleast_1d(ids), np.atleast_1d(wnids), np.atleast_1d(children))
            if int(n) == 0}
