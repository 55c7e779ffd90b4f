"""What ``alexnet serve MODEL...`` serves: each MODEL a file or a folder in Triton's repository layout.

* a checkpoint (``.pt``, or safetensors) or an exported ``.onnx`` (fp32 or int8): one model, named
  by the file's stem, version ``1``;
* a model folder ``NAME/VERSION/FILE`` (Triton's layout: each version a folder named by a positive
  integer, holding ``model.onnx`` or ``model.pt``, or a single model file of any name): the model
  NAME with every version; a request that names no version gets the highest (Triton's default
  policy serves only the latest; here all are loaded, so ``/versions/V`` reaches each);
* a repository, a folder of such model folders: every model in it.

Files and folders are read at start only; nothing a request sends names a path. A name given twice
is refused in one line naming both sources. Each model is loaded by
:func:`alexnet.inference.evaluate.load_classifier`, the loader ``eval`` and ``predict`` use, with
its own preprocessing; :class:`Served` adds what the protocol reports and turns a request's
tensors into the model's input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet import checkpoint
from alexnet.data.images import MAX_PIXELS, decode_bytes
from alexnet.data.transforms import downsample
from alexnet.errors import AlexNetError, whole_number
from alexnet.inference.evaluate import input_probabilities, load_classifier

log = logging.getLogger(__name__)

PREFERRED = ("model.onnx", "model.pt")  # Triton's default file names for these backends


@dataclass(frozen=True)
class ModelFile:
    name: str
    version: str  # a positive integer as text, as the protocol's URLs carry it
    path: Path
    source: str  # the MODEL argument it came from, for messages


def find_models(paths: list[str | Path]) -> list[ModelFile]:
    """Every model file the MODEL arguments name, in order; a name given twice is refused."""
    found: list[ModelFile] = []
    seen: dict[str, str] = {}  # name → the argument that gave it
    for given in paths:
        path = Path(given)
        if path.is_file():
            files = [ModelFile(path.stem, "1", path, str(given))]
        elif path.is_dir():
            files = _folder(path, str(given))
        else:
            raise AlexNetError(f"{given}: no such file or folder (serve takes a checkpoint, an .onnx, or a model "
                               "repository folder NAME/VERSION/FILE)")
        for name in dict.fromkeys(f.name for f in files):
            if name in seen:
                raise AlexNetError(f"model name {name!r} is given twice: by {seen[name]} and by {given}; "
                                   "a model's name is its file's stem or its folder's name, so rename one")
            seen[name] = str(given)
        found.extend(files)
    return found


def _versions(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and (whole_number(p.name) or 0) > 0), key=lambda p: int(p.name))


def _folder(folder: Path, source: str) -> list[ModelFile]:
    """A model folder (version folders inside) or a repository (model folders inside)."""
    if _versions(folder):
        return [ModelFile(folder.name, v.name, _version_file(v), source) for v in _versions(folder)]
    models = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        raise AlexNetError(f"{source}: a folder with no version folders (1/, 2/, …) and no model folders in it; "
                           "serve takes NAME/VERSION/FILE or a folder of such NAME folders")
    for m in models:
        if not _versions(m):
            raise AlexNetError(f"{m}: a model folder in the repository {source} without version folders (1/, 2/, …)")
    return [ModelFile(m.name, v.name, _version_file(v), source) for m in models for v in _versions(m)]


def _version_file(folder: Path) -> Path:
    for name in PREFERRED:
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) != 1:
        listed = ", ".join(p.name for p in files) or "nothing"
        raise AlexNetError(f"{folder}: a version folder holds model.onnx, model.pt or one model file; it holds {listed}")
    return files[0]


def check_precision(files: list[ModelFile], precision: str) -> None:
    """``--precision`` is autocast of a torch model: an .onnx among ``files`` refuses any but fp32."""
    for f in files:
        if checkpoint.is_onnx(f.path) and precision != "fp32":
            raise AlexNetError(f"{f.path}: an .onnx runs in fp32 on ONNX Runtime's CPU provider (its int8 is in the file); "
                               f"--precision {precision} applies to checkpoints")


class Served:
    """One loaded model version: what the protocol reports of it and the two ways a request's tensors
    become its input (an FP32 batch already preprocessed, or encoded image files)."""

    def __init__(self, file: ModelFile, device: str = "cpu", precision: str = "fp32") -> None:
        check_precision([file], precision)
        meta, self.model, self.preprocess = load_classifier(file.path, device, precision)
        self.name, self.version, self.path = file.name, file.version, file.path
        self.device, self.precision = torch.device(device), precision
        self.classes: list[str] = list(meta.classes)
        self.onnx = checkpoint.is_onnx(file.path)
        self.description = meta.describe() if self.onnx else f"checkpoint, torch {precision}"
        self.architecture = meta.model
        pipe: Any = self.preprocess.pipeline
        self.channels, self.crop, self.size = pipe.channels, pipe.crop, pipe.resize

    @property
    def platform(self) -> str:
        """The spec's ``<project>_<format>``: ``onnx_onnxv1`` is its own name for an .onnx; the spec's
        list has no eager PyTorch checkpoint, so that one is ``pytorch_checkpoint``."""
        return "onnx_onnxv1" if self.onnx else "pytorch_checkpoint"

    def parameters(self) -> dict[str, Any]:
        """Our additions to the model metadata: the classes, what the file is, the preprocessing."""
        pipe, stats = self.preprocess.pipeline, self.preprocess.stats
        preprocessing: dict[str, Any] = {"pipeline": pipe.name, "resize": pipe.resize, "crop": pipe.crop,
                                         "channels": pipe.channels, "normalize": pipe.normalize}
        if stats is not None and pipe.normalize == "channel":
            preprocessing.update(mean=[float(v) for v in stats.channel_mean], std=[float(v) for v in stats.channel_std])
        return {"classes": self.classes, "architecture": self.architecture, "format": self.description,
                "preprocessing": preprocessing}

    def from_files(self, blobs: list[bytes], names: list[str]) -> torch.Tensor:
        """Encoded image files → model input [N, C, crop, crop]: decoded (the pixel limit of ``predict``),
        §2's down-sampling and the centre crop, as ``alexnet predict`` does; a bad file's message names it."""
        images = [downsample(decode_bytes(blob, name, MAX_PIXELS), self.size) for blob, name in zip(blobs, names)]
        batch = torch.from_numpy(np.stack(images)).to(self.device)
        return self.preprocess.centre_crop(batch)

    def from_array(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Model input [N, C, crop, crop] → probabilities [N, K] on the CPU (one centre view)."""
        return input_probabilities(self.model, x[:, None], self.precision).cpu()

    def warm_up(self, max_batch_size: int) -> None:
        """Run every batch size the batcher can form, the largest first, on zeros: what a batch of each
        size takes (oneDNN's primitives, ONNX Runtime's arena, the allocator's blocks) is taken before
        the first request, so the server's memory is flat from there (Triton's ``model_warmup``).
        Measured: RSS rose 40 MB over 240 random-size batches without it, and stayed flat with it (docs/SERVING.md)."""
        x = torch.zeros(max_batch_size, self.channels, self.crop, self.crop, device=self.device)
        for n in range(max_batch_size, 0, -1):
            self.probabilities(x[:n])


def load_all(files: list[ModelFile], device: str = "cpu", precision: str = "fp32") -> dict[str, dict[str, Served]]:
    """name → version → :class:`Served`, every file loaded (a wrong one is a one-line error naming it)."""
    models: dict[str, dict[str, Served]] = {}
    for f in files:
        log.info("serve: loading %s version %s from %s", f.name, f.version, f.path)
        models.setdefault(f.name, {})[f.version] = Served(f, device, precision)
    return models

