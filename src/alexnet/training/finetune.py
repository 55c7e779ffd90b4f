"""Starting a run from pretrained weights: ``alexnet train --init CHECKPOINT [--freeze WHAT]``.

What timm's ``pretrained=True, num_classes=N``, PyTorch's transfer-learning tutorial and MATLAB's
"Transfer Learning Using AlexNet" do, for any checkpoint of ours (a run's, or what ``alexnet import
torchvision|caffe`` wrote):

* the model is the checkpoint's architecture with its options, and the data's class count; a
  ``--set model.options.X`` applies where it leaves every loaded tensor's shape as it is (dropout,
  LRN, activation) and is refused, naming it, where it does not (width, input size);
* every tensor whose name and shape match is loaded; the others keep their fresh initialisation;
  the classifier head is loaded only when the data names the checkpoint's classes in its order
  (``finetune.reset_head`` re-initialises it even then);
* ``finetune.freeze``: ``none``; ``features``, every parameter outside the fully connected layers and
  the head (conv1–conv5 for AlexNet); or a layer name, every parameter up to and including that
  layer. Frozen parameters get no gradient, hence no update and no weight decay;
* ``finetune.loaded_lr_mult``: the loaded layers' learning rate as a multiple of the new layers'
  (Caffe's fine-tuning examples: ``lr_mult`` 10 on the new fc8, which is 0.1 here);
* the checkpoint's own normalisation and statistics are kept (ImageNet's mean/std for torchvision's
  weights, Caffe's mean image for Caffe's), not recomputed from the small data set, unless
  ``finetune.keep_preprocess = false``; the augmentation is the recipe's.

:func:`init_checkpoint` reads ``--init``'s checkpoint, :func:`prepare` applies it (or, on a resume,
the saved table); :func:`init_from` returns the table (layer, shape, loaded / re-initialised, frozen) that the run
prints and saves as ``init.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from alexnet import checkpoint, models
from alexnet.checkpoint import Checkpoint
from alexnet.errors import AlexNetError
from alexnet.models.base import ConfiguredNet, classifier_head
from alexnet.training.config import ModelConfig, TrainConfig

STATUS_LOADED, STATUS_NEW = "loaded", "re-initialised"


@dataclass
class InitRow:
    tensor: str
    shape: tuple[int, ...]
    status: str  # "loaded" or "re-initialised"
    frozen: bool = False
    note: str = ""  # why it was not loaded

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


def read_rows(path: Path) -> list[InitRow]:
    """The table a fine-tuning run saved (init.json): a resume rebuilds its groups and frozen layers from it."""
    try:
        return [InitRow(r["tensor"], tuple(r["shape"]), r["status"], r["frozen"], r.get("note", ""))
                for r in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AlexNetError(f"{path}: cannot read the fine-tuning table this run saved ({type(e).__name__}: {e})") from None


def init_checkpoint(config: TrainConfig, *, resume: bool) -> tuple[TrainConfig, Checkpoint | None]:
    """``--init``'s checkpoint (any of ours: a run's, an import, a safetensors export) and the config
    with its architecture, which config.json then records; a resume reads neither again."""
    ft = config.finetune
    if resume:
        return config, None
    if not ft.init:
        if ft.freeze != "none" or ft.loaded_lr_mult != 1.0:
            what = f"--freeze {ft.freeze}" if ft.freeze != "none" else f"preset {config.preset}"
            raise AlexNetError(f"{what} fine-tunes pretrained weights: pass --init CHECKPOINT (e.g. what `alexnet import` wrote)")
        return config, None
    init = checkpoint.load(ft.init, map_location="cpu")
    if not init.preprocess and ft.keep_preprocess:
        raise AlexNetError(f"--init {ft.init}: the checkpoint has no preprocessing to keep; "
                           "set finetune.keep_preprocess=false to fit it to the data")
    options = {k: v for k, v in init.model_options.items() if k != "num_classes"}
    given = {k: v for k, v in config.model.options.items() if options.get(k, _UNSET) != v}
    for name, value in given.items():
        _check_option(init, options, name, value, ft.init)
    return replace(config, model=ModelConfig(init.model, {**options, **given})), init


_UNSET = object()


def _check_option(init: Checkpoint, options: dict, name: str, value, source: str) -> None:
    """Refuse a ``--set model.options.NAME`` that would change the shape of a tensor ``init`` holds or leave
    one out (the head apart: it is fitted to the data); dropout, LRN and the like apply. Built on the meta
    device: no memory, no initialisation."""
    try:
        with torch.device("meta"):
            model = models.create(init.model, num_classes=init.num_classes, **{**options, name: value})
    except (ValueError, TypeError) as e:
        raise AlexNetError(f"--set model.options.{name}={value!r}: {e}") from None
    head, own = classifier_head(model), model.state_dict()
    for key, tensor in init.state_dict.items():
        if key.startswith(head + "."):
            continue
        ours = own.get(key)
        if ours is None or tuple(ours.shape) != tuple(tensor.shape):
            now = "no such tensor" if ours is None else f"{tuple(ours.shape)}"
            raise AlexNetError(f"--set model.options.{name}={value!r}: --init {source}'s {key} is {tuple(tensor.shape)}, "
                               f"and {init.model} with {name}={value!r} would have {now}; "
                               "with --init the checkpoint's architecture is kept (leave it out, or train without --init)")


def prepare(model: ConfiguredNet, config: TrainConfig, init: Checkpoint | None, classes: list[str], init_json: Path) -> list[InitRow]:
    """Load what fits from ``init`` and freeze what is asked; on a resume (``init`` None) the same frozen
    layers and learning-rate groups from the run's ``init_json``."""
    ft = config.finetune
    if init is not None:
        rows = init_from(model, init, classes=classes, reset_head=ft.reset_head, source=ft.init)
    else:
        rows = read_rows(init_json)
    freeze(model, ft.freeze, rows)
    return rows


def init_from(model: ConfiguredNet, ckpt: Checkpoint, *, classes: list[str], reset_head: bool, source: str) -> list[InitRow]:
    """Copy every tensor of ``ckpt`` whose name and shape match into ``model`` (in place); the table.

    The head's rows are the checkpoint's classes: it is loaded only when the data names the same
    classes in the same order (a run continued on its own data), else re-initialised."""
    head = classifier_head(model)
    if list(ckpt.classes) != list(classes):
        reset_head, why = True, "other classes than the checkpoint's"
    else:
        why = "reset_head"
    own = model.state_dict()
    rows, loaded = [], {}
    for key, tensor in own.items():
        theirs = ckpt.state_dict.get(key)
        if reset_head and key.startswith(head + "."):
            rows.append(InitRow(key, tuple(tensor.shape), STATUS_NEW, note=why))
        elif theirs is None:
            rows.append(InitRow(key, tuple(tensor.shape), STATUS_NEW, note="not in the checkpoint"))
        elif tuple(theirs.shape) != tuple(tensor.shape):
            rows.append(InitRow(key, tuple(tensor.shape), STATUS_NEW, note=f"checkpoint has {tuple(theirs.shape)}"))
        else:
            loaded[key] = theirs
            rows.append(InitRow(key, tuple(tensor.shape), STATUS_LOADED))
    if not loaded:
        raise AlexNetError(f"--init {source}: no tensor of the checkpoint ({ckpt.model}) fits model {model.name}")
    model.load_state_dict(loaded, strict=False)
    return rows


def freeze(model: ConfiguredNet, what: str, rows: list[InitRow]) -> set[str]:
    """Turn off the gradient of the parameters ``what`` names (module docstring); their names."""
    if what == "none":
        return set()
    head = classifier_head(model)
    layers = [name for name, m in model.named_modules() if name and any(True for _ in m.parameters(recurse=False))]
    if what == "features":
        chosen = [n for n, m in model.named_modules() if n in layers and n != head and not isinstance(m, nn.Linear)]
    elif what in layers:
        chosen = layers[: layers.index(what) + 1]
    else:
        top = [n for n in layers if "." not in n]
        raise AlexNetError(f"--freeze {what!r}: not a layer of {model.name}; give none, features or one of {', '.join(top)}")
    frozen = {f"{layer}.{p}" for layer in chosen for p, _ in model.get_submodule(layer).named_parameters(recurse=False)}
    if all(name in frozen for name, _ in model.named_parameters()):
        raise AlexNetError(f"--freeze {what}: freezes every parameter of {model.name} ({what} is its last layer), which "
                           "leaves nothing to train; freeze a layer below it, or features")
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    for row in rows:
        row.frozen = row.tensor in frozen
    return frozen


def lr_multipliers(rows: list[InitRow], loaded_lr_mult: float) -> dict[str, float]:
    """The learning-rate multiplier of every loaded tensor (the new ones keep 1)."""
    return {r.tensor: loaded_lr_mult for r in rows if r.status == STATUS_LOADED and loaded_lr_mult != 1.0}


def table(rows: list[InitRow]) -> str:
    """The init table as text, one line per tensor: what the run prints."""
    width = max(len(r.tensor) for r in rows)
    lines = [f"  {'tensor':<{width}}  {'shape':<18} status"]
    for r in rows:
        status = r.status + (", frozen" if r.frozen else "") + (f" ({r.note})" if r.note else "")
        lines.append(f"  {r.tensor:<{width}}  {'×'.join(map(str, r.shape)) or 'scalar':<18} {status}")
    loaded = sum(r.status == STATUS_LOADED for r in rows)
    lines.append(f"  {loaded} of {len(rows)} tensors loaded, {sum(r.frozen for r in rows)} frozen")
    return "\n".join(lines)
