"""What the explorer holds (a checkpoint, its data, a run folder, the uploads) and what each view asks of them.

:class:`Session` answers every request of the page with a JSON-ready dict; :mod:`.app` only parses
the request, takes the model lock and calls one of its methods. An image is referred to by an
:class:`ImageRef`: an upload's token (the decoded image is kept in memory, the last
``KEPT_UPLOADS`` of them) or a data-set split and index. Never a path: the server opens no file
named by a request.

Every image is first brought to the form the checkpoint's data took (§2: shorter side to S, centre
S×S, :func:`alexnet.data.transforms.downsample`; data-set images as the loader yields them), so
what the page shows as "the crop the network saw" is the pixels the model is given, before the
training mean is subtracted.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet.checkpoint import check_state_dict
from alexnet.data import ImageSet, downsample, open_dataset
from alexnet.data.images import MAX_PIXELS, MAX_UPLOAD, decode_bytes
from alexnet.data.sources import recorded_spec
from alexnet.data.transforms import centre_offset
from alexnet.errors import AlexNetError
from alexnet.inference.evaluate import batch_probabilities, check_classes, iter_probabilities, load_for_inference, score, shown_split, top_labels
from alexnet.inference.features import Extractor, FeatureConfig, check_made_with
from alexnet.inference.samples import display_images, image_batch
from alexnet.models.base import classifier_head
from alexnet.models.summary import summarize
from alexnet.reporting.architecture import architecture_svg
from alexnet.reporting.figures import conv1_kernels, curves_figure, figure_png, filter_mosaics
from alexnet.runtime import RuntimeSettings, prepare_model
from alexnet.tools.explore import activations, arithmetic, neighbours, units, why
from alexnet.tools.explore.pictures import data_uri, heat_overlay, png_uri, thumbnail, upscale
from alexnet.training.resume import saved_config
from alexnet.training.run_folder import RunFolder

log = logging.getLogger(__name__)

KEPT_UPLOADS = 32
TOP = 5
VIEW_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right", "centre",
              "reflected top-left", "reflected top-right", "reflected bottom-left", "reflected bottom-right", "reflected centre")
CELL_IMAGES = 48  # images listed for a clicked confusion cell
FILTER_WIDTH = 600  # pixels a tower's kernel mosaic is enlarged towards (whole factors: the paper's 191 → 573)


class NotFound(AlexNetError):
    """A request named an image, split or class that does not exist (the app answers 404)."""


STALE_S = 30.0  # a live.json older than this, of a run without report.json: the run is not updating (stopped?)


@dataclass(frozen=True)
class ExploreConfig:
    checkpoint: Path
    data: str | None = None  # 'digits' or a folder; default: the data the checkpoint was trained on
    run: Path | None = None  # a run folder for the Run view
    features: Path | None = None  # an .npy fc7 bank of the training split (alexnet features)
    device: str = "cpu"
    bank_limit: int = 5000  # training images whose fc7 codes are computed on start when no --features is given
    eval_limit: int = 2000  # images of the test (else val) split the confusion matrix covers
    max_upload: int = MAX_UPLOAD  # bytes of one uploaded file
    max_pixels: int = MAX_PIXELS  # decoded pixels of one upload (the decompression-bomb guard of predict)


@dataclass(frozen=True)
class ImageRef:
    token: str | None = None  # an upload
    split: str | None = None  # or a data-set image
    index: int = 0


class Session:
    def __init__(self, config: ExploreConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.ckpt, model, self.preprocess = load_for_inference(config.checkpoint, self.device)
        self.model = prepare_model(model.eval(), RuntimeSettings(device=str(self.device)))  # channels_last: oneDNN's layout
        self.codes = Extractor.of_model(self.model, self.preprocess, FeatureConfig(device=str(self.device)))  # fc7, as alexnet features
        self.classes = list(self.ckpt.classes)
        self.size, self.crop = self.preprocess.pipeline.resize, self.preprocess.pipeline.crop
        self.towers = _towers(self.model)
        self.head = classifier_head(self.model)
        blank = self.preprocess.centre_crop(self._input(np.zeros((self.size, self.size, 3), np.uint8)))
        self.cam_layer = why.cam_layer(self.model, blank)  # one forward pass; two more warm oneDNN up for the first request
        with torch.no_grad():
            for _ in range(2):
                self.model(blank)
        self.data_spec, self.splits = self._open_data(config.data)
        self.run = self._open_run(config.run)
        self.uploads: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bank = self._bank()
        self._confusion: dict[str, Any] | None = None
        self._architecture: str | None = None
        # the checkpoint file's mtime and the epoch the model's weights came from (live() follows the file)
        self._weights: tuple[int, Any] | None = (config.checkpoint.stat().st_mtime_ns, (self.ckpt.train_state or {}).get("epoch"))
        self._weights_error: str | None = None  # why the file's latest state could not be followed
        self.units = units.UnitViews(self.model, self.preprocess, self.classes, limit=config.eval_limit, device=self.device)

    # -- set-up ------------------------------------------------------------------------------
    def _open_data(self, spec: str | None) -> tuple[str | None, dict[str, ImageSet]]:
        """The data set asked for (its errors are the user's), else the one the checkpoint records (a
        warning when it cannot be opened here: the explorer still classifies uploads)."""
        recorded = ((self.ckpt.provenance or {}).get("config") or {}).get("data", {}).get("spec")
        if spec is None and not recorded:
            return None, {}
        try:
            dataset = open_dataset(spec or recorded)
            check_classes(self.classes, dataset.classes, f"{self.config.checkpoint} on {spec or recorded}")
        except AlexNetError as e:
            if spec is not None:
                raise
            log.warning("not showing the checkpoint's data set: %s (pass --data)", e)
            return None, {}
        return str(spec or recorded), {name: s for name, s in dataset.splits.items() if len(s)}

    def _open_run(self, path: Path | None) -> RunFolder | None:
        if path is None:
            return None
        run = RunFolder(path, write=False)
        run.read_config()  # a one-line error when it is not a run folder
        return run

    def _bank(self) -> neighbours.FeatureBank | None:
        if self.config.features:
            record = neighbours.bank_record(self.config.features)
            if "checkpoint_sha256" in record:  # written by alexnet features: its codes are of one file's weights
                check_made_with(self.config.checkpoint, record, self.config.features)
            split = str(record.get("split") or "train")
            if record.get("data") is not None and (self.data_spec is None or record["data"] != recorded_spec(self.data_spec)):
                raise AlexNetError(f"{self.config.features}: a bank of {record['data']} [{split}], but explore shows "
                                   f"{self.data_spec or 'no data set'}; pass --data {record['data']}")
            if split not in self.splits:
                raise AlexNetError(f"{self.config.features}: a bank of the {split!r} split needs the data set with it (pass --data)")
            dim = int(self.codes(self._input(self.stored(split, 0))).shape[1])
            return neighbours.read_bank(self.config.features, self.splits[split], dim, split)
        if "train" not in self.splits:
            return None
        return neighbours.compute_bank(self.codes, self.splits["train"], limit=self.config.bank_limit)

    # -- images ------------------------------------------------------------------------------
    def add_upload(self, data: bytes, name: str) -> str:
        """Decode an upload (a BadImage names what is wrong; its size the app checked), keep it at the model's size, return its token."""
        image = downsample(decode_bytes(data, name, self.config.max_pixels), self.size)
        token = "u" + secrets.token_hex(8)
        self.uploads[token] = image
        while len(self.uploads) > KEPT_UPLOADS:
            self.uploads.popitem(last=False)
        return token

    def split(self, name: str) -> ImageSet:
        if name not in self.splits:
            raise NotFound(f"no split {name!r} (has {', '.join(self.splits) or 'none: start with --data'})")
        return self.splits[name]

    def stored(self, split: str, index: int) -> np.ndarray:
        images = self.split(split)
        if not 0 <= index < len(images):
            raise NotFound(f"{split} has images 0–{len(images) - 1}, not {index}")
        return image_batch(images, np.array([index]), self.size)[0].numpy()

    def image(self, ref: ImageRef) -> np.ndarray:
        if ref.token is not None:
            if ref.token not in self.uploads:
                raise NotFound("that upload is no longer kept; upload it again")
            return self.uploads[ref.token]
        if ref.split is None:
            raise AlexNetError("name an image: image=TOKEN from an upload, or split=NAME&index=N")
        return self.stored(ref.split, ref.index)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(image))[None].to(self.device)  # a copy: stored sets may be read-only maps

    def _seen(self, image: np.ndarray) -> np.ndarray:
        """uint8 [S, S, C]: the image as the model takes it before cropping (its size and channels)."""
        return display_images(self.preprocess, self._input(image))[0]

    def _crop_of(self, seen: np.ndarray) -> np.ndarray:
        o = centre_offset(self.size, self.crop)
        return seen[o: o + self.crop, o: o + self.crop]

    def dataset_png(self, split: str, index: int) -> np.ndarray:
        return self._seen(self.stored(split, index))

    def _truth(self, ref: ImageRef) -> dict[str, Any] | None:
        if ref.split is None:
            return None
        label = int(self.split(ref.split).labels[ref.index])
        return {"index": label, "label": self.classes[label]}

    # -- the views ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        p = self.preprocess.pipeline
        return {"checkpoint": Path(self.config.checkpoint).name, "model": self.ckpt.model, "classes": len(self.classes),
                "class_names": self.classes[:1000], "input": f"{p.crop}×{p.crop}×{p.channels} crops of {p.resize}×{p.resize}",
                "pipeline": p.name, "normalize": p.normalize, "towers": self.towers, "cam_layer": self.cam_layer,
                "data": self.data_spec, "splits": {name: len(s) for name, s in self.splits.items()},
                "bank": self.bank.source if self.bank else None, "run": str(self.config.run) if self.run else None,
                "max_upload": self.config.max_upload}

    def classify(self, ref: ImageRef, views: int) -> dict[str, Any]:
        image = self.image(ref)
        probs = batch_probabilities(self.model, self.preprocess, self._input(image), views)[0].cpu()
        seen = self._seen(image)
        answer = {"top": top_labels(probs[None], self.classes, TOP)[0],
                  "truth": self._truth(ref), "views": views, "seen": data_uri(upscale(seen, 96)),
                  "crop": data_uri(upscale(self._crop_of(seen), 96)), "size": self.size, "crop_size": self.crop}
        if views == 10:
            answer["view_images"] = [{"name": n, "png": data_uri(thumbnail(np.ascontiguousarray(v), 112))}
                                     for n, v in zip(VIEW_NAMES, self._ten(seen))]
        return answer

    def _ten(self, seen: np.ndarray) -> list[np.ndarray]:
        """§4.1's ten patches in :meth:`Preprocess.views`'s order (torchvision TenCrop's)."""
        s, c, o = self.size, self.crop, centre_offset(self.size, self.crop)
        five = [seen[t: t + c, l: l + c] for t, l in ((0, 0), (0, s - c), (s - c, 0), (s - c, s - c), (o, o))]
        tl, tr, bl, br, centre = five
        return five + [v[:, ::-1] for v in (tr, tl, br, bl, centre)]

    def layers(self, ref: ImageRef) -> dict[str, Any]:
        x = self.preprocess.centre_crop(self._input(self.image(ref)))
        layers = activations.layer_outputs(self.model, x)
        return {"towers": self.towers, "input": activations.shape_text(x[0]),
                "layers": activations.describe(layers, self.towers, self.head)}

    def arithmetic(self, ref: ImageRef, layer: str, unit: list[int]) -> dict[str, Any]:
        """The numbers that made ``unit`` of ``layer`` for the image's centre crop (:mod:`.arithmetic`)."""
        x = self.preprocess.centre_crop(self._input(self.image(ref)))
        return arithmetic.explain(arithmetic.record(self.model, x), layer, unit)

    def architecture(self) -> str:
        """The network drawn as Figure 2 (``alexnet summary --svg``'s drawing), from this model's own layers."""
        if self._architecture is None:
            self._architecture = architecture_svg(summarize(self.model, self.ckpt.input_size, name=self.ckpt.model))
        return self._architecture

    def filters(self) -> dict[str, Any]:
        weight, towers = conv1_kernels(self.model)
        mosaics = filter_mosaics(weight, towers)
        k, c, kh, kw = weight.shape
        return {"kernels": k, "shape": f"{kh}×{kw}×{c}", "towers": [
            {"name": f"tower {t + 1}" if towers > 1 else "all kernels", "count": k // towers,
             "png": data_uri(_enlarge((m * 255).round().astype(np.uint8), FILTER_WIDTH))} for t, m in enumerate(mosaics)]}

    def why(self, ref: ImageRef, target: int | None, patch: int | None, stride: int | None, coarse: bool = False
            ) -> dict[str, Any]:
        """Grad-CAM and occlusion of ``target`` (default: the top class); ``coarse`` moves the square by its side, not half."""
        image = self.image(ref)
        x = self._input(image)
        probs = batch_probabilities(self.model, self.preprocess, x)[0].cpu()
        if target is None:
            target = int(probs.argmax())
        if not 0 <= target < len(self.classes):
            raise NotFound(f"class {target} is not among the checkpoint's 0–{len(self.classes) - 1}")
        default_patch, default_stride = why.default_square(self.crop)
        crop = self._crop_of(self._seen(image))
        cam = why.grad_cam(self.model, self.preprocess.centre_crop(x), target, self.cam_layer)
        patch = patch or default_patch
        occ = why.occlusion(self.model, self.preprocess, x, target, patch=patch,
                            stride=stride or (patch if coarse else default_stride))
        drop = np.clip(occ.drop, 0.0, None)
        return {"class": target, "label": self.classes[target], "probability": float(probs[target]),
                "crop": data_uri(upscale(crop, 192)), "layer": self.cam_layer,
                "gradcam": data_uri(upscale(heat_overlay(crop, cam), 192)),
                "occlusion": data_uri(upscale(heat_overlay(crop, drop / max(float(drop.max()), 1e-12)), 192)),
                "occlusion_lowest": occ.lowest, "patch": occ.patch, "stride": occ.stride, "positions": occ.positions,
                "peak": {"gradcam": _peak(cam), "occlusion": _peak(occ.drop)}}

    def neighbours(self, ref: ImageRef, k: int) -> dict[str, Any]:
        if self.bank is None:
            raise NotFound("no feature bank: start with --data (a training split) or --features BANK.npy")
        index, distance = self.bank.nearest(self.codes(self._input(self.image(ref)))[0].numpy(), k)
        images = self.splits[self.bank.split]
        return {"bank": self.bank.source, "split": self.bank.split, "neighbours": [
            {"index": int(i), "distance": float(d), "label": self.classes[int(images.labels[i])]}
            for i, d in zip(index, distance)]}

    # -- what a unit sees (units.py) --------------------------------------------------------------
    def unit_layers(self) -> dict[str, Any]:
        return {"layers": self.units.layers(), "classes": len(self.classes), "splits": list(self.splits)}

    def unit_top(self, split: str | None, layer: str | None, channel: int | None, target: int | None) -> dict[str, Any]:
        """The top 9 patches of ``split`` for a channel of a map layer, or a class; by default the split a
        figure shows (test, else val), else the one the data set has (a folder of train/ only)."""
        unit = self.units.unit(layer, channel, target)
        name = split or self._shown() or next(iter(self.splits), None)
        if name is None:
            raise NotFound("no data set for the top patches: start with --data")
        images = self.split(name)
        return self.units.top(name, images, unit, lambda i: self._crop_of(self._seen(self.stored(name, i))))

    def unit_visualise(self, layer: str | None, channel: int | None, target: int | None, steps: int | None) -> dict[str, Any]:
        return self.units.visualisation(self.units.unit(layer, channel, target), steps)

    # -- the run -----------------------------------------------------------------------------
    def run_info(self) -> dict[str, Any]:
        if self.run is None:
            return {"run": None}
        history = self.run.read_metrics()
        report = self.run.read_report_json() if self.run.report_json.is_file() else None
        curves = png_uri(figure_png(curves_figure(history))) if history else None
        return {"run": str(self.run.root), "epochs": len(history), "curves": curves, "config": saved_config(self.run),
                "report": report, "last": history[-1] if history else None}

    def live(self) -> dict[str, Any]:
        """A run that is still training, as it goes: its live.json (epoch, batch, loss, images/s), the
        epochs it has finished, and whether it has ended; the model's weights follow its checkpoint
        (reloaded when the file changes, so the filters, layers and predictions are the run's latest)."""
        if self.run is None:
            raise NotFound("no run: start with --run RUN")
        reloaded = self._follow_checkpoint()
        live, finished = self.run.read_live(), self.run.report_json.is_file()
        stale = bool(live) and not finished and time.time() - float(live.get("time", 0)) > STALE_S
        return {"live": live, "epochs_done": len(self.run.read_metrics()), "finished": finished, "stale": stale,
                "weights": self._weights[1] if self._weights else None, "reloaded": reloaded, "weights_error": self._weights_error}

    def _follow_checkpoint(self) -> bool:
        """Load the checkpoint's weights again when the file has changed since they were loaded."""
        path = self.config.checkpoint
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return False
        if self._weights is not None and self._weights[0] == stamp:
            return False
        try:  # checked whole before a tensor is copied: a file of another model leaves the weights as they were
            ckpt, model, preprocess = load_for_inference(path, "cpu")
            check_state_dict(model.state_dict(), self.model.state_dict(), str(path))
            if (ckpt.model, ckpt.classes) != (self.ckpt.model, self.ckpt.classes) or not preprocess.same_as(self.preprocess):
                raise AlexNetError(f"{path}: now holds another model, classes or preprocessing than the one explored")
        except AlexNetError as e:
            self._weights = (stamp, self._weights[1] if self._weights else None)  # not retried until the file changes again
            self._weights_error = f"{e}; the explorer keeps the weights it had (restart it to explore the new file)"
            return False
        self.model.load_state_dict(model.state_dict())
        epoch = (ckpt.train_state or {}).get("epoch")
        self._weights, self._weights_error, self._confusion = (stamp, epoch), None, None
        self.units = units.UnitViews(self.model, self.preprocess, self.classes, limit=self.config.eval_limit, device=self.device)
        return True

    def _shown(self) -> str | None:
        return shown_split(self.splits.get("test"), self.splits.get("val"))

    def confusion(self) -> dict[str, Any]:
        """The centre-crop confusion matrix over the test split (else val), its first ``eval_limit`` images; computed once."""
        if self._confusion is None:
            name = self._shown()
            if name is None:
                raise NotFound("no test or val split for a confusion matrix: start with --data")
            images = self.splits[name]
            out = [p.cpu() for p, _ in iter_probabilities(self.model, self.preprocess, images, device=self.device,
                                                          limit=self.config.eval_limit)]
            probs = torch.cat(out)
            labels = np.asarray(images.labels[: len(probs)])
            scores = score(probs, torch.as_tensor(labels, dtype=torch.long), self.classes)
            self._confusion = {"split": name, "images": len(probs), "of": len(images), "top1_error": scores.top1_error,
                               "top5_error": scores.top5_error, "matrix": scores.confusion.tolist(),
                               "predicted": probs.argmax(1).numpy(), "labels": labels}
        return {k: v for k, v in self._confusion.items() if k not in ("predicted", "labels")}

    def confusion_cell(self, true: int, predicted: int) -> dict[str, Any]:
        self.confusion()
        k = len(self.classes)
        if not (0 <= true < k and 0 <= predicted < k):
            raise NotFound(f"classes are 0–{k - 1}")
        c = self._confusion
        hits = np.flatnonzero((c["labels"] == true) & (c["predicted"] == predicted))
        return {"split": c["split"], "true": self.classes[true], "predicted": self.classes[predicted],
                "count": len(hits), "indices": [int(i) for i in hits[:CELL_IMAGES]]}


def _enlarge(image: np.ndarray, width: int) -> np.ndarray:
    """Nearest-neighbour enlargement by the largest whole factor that keeps the width within ``width``."""
    factor = max(1, width // image.shape[1])
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _peak(heat: np.ndarray) -> list[int]:
    """(row, column) of a map's maximum in crop pixels."""
    return [int(v) for v in np.unravel_index(int(np.argmax(heat)), heat.shape)]


def _towers(model: nn.Module) -> int:
    try:
        return conv1_kernels(model)[1]
    except ValueError:
        return 1


