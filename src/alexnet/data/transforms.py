"""The paper's input pipeline (§2, §4.1) and the other recipes', as batch transforms on the device.

Images travel as uint8 [B, H, W, C]; :class:`Preprocess` makes float on the training device, so the
CPU does almost nothing per image. The steps, in the paper's order:

1. Down-sample (§2): shorter side to S, centre crop S×S — done once by ``alexnet prepare``
   (:func:`downsample`), or on the device for sets stored at another size (digits, CIFAR-10).
2. Subtract the training set's mean: the per-pixel mean image (§2, Caffe), per-channel mean/std
   (torchvision), or only scale to [0, 1] (d2l). ``mean_image`` keeps the paper's 0–255 scale.
3. Training: random crop×crop patches and horizontal reflections (§4.1: "increases the training
   set by a factor of 2048"), or torchvision's RandomResizedCrop; PCA lighting: to every pixel add
   Σ αᵢλᵢpᵢ with αᵢ ~ N(0, σ) drawn once per image per use, σ = 0.1 (§4.1).
4. Evaluation: the centre crop, or the paper's ten views — four corners and centre, each with its
   reflection — whose softmax outputs are averaged (§4.1).

PCA lighting convention: λᵢ are eigenvalues of the RGB covariance with pixels on the 0–1 scale (as
in Krizhevsky's code and fb.resnet.torch); on our 0–255 pixels that is Σ αᵢ (λᵢ/255²) pᵢ · 255.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from alexnet.data.stats import Stats
from alexnet.errors import AlexNetError, not_one_of, one_line, unknown

NORMALIZATIONS = ("mean_image", "channel", "unit")


@dataclass(frozen=True)
class Pipeline:
    """What one recipe does to its images. Fields are the knobs; the recipes are in PIPELINES."""

    name: str = "paper"
    resize: int = 256  # S: images are S×S before cropping (§2)
    crop: int = 227  # training/eval patch (227 for the paper's net, 224 for torchvision's)
    channels: int = 3  # what the model takes; grey data is repeated to RGB, RGB made grey
    normalize: str = "mean_image"  # see NORMALIZATIONS
    flip: bool = True  # random horizontal reflections (§4.1)
    lighting: float = 0.1  # σ of the PCA lighting coefficients (§4.1); 0 turns it off
    random_resized_crop: bool = False  # torchvision: area 8–100 %, aspect 3/4–4/3, then crop×crop
    min_area: float = 0.08

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(not_one_of("normalize=", self.normalize, NORMALIZATIONS))
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"crop={self.crop} must be positive and at most resize={self.resize}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels} must be 1 or 3")


PIPELINES = {
    "paper": Pipeline("paper"),
    "caffenet": Pipeline("caffenet", lighting=0.0),
    "torchvision": Pipeline("torchvision", crop=224, normalize="channel", lighting=0.0, random_resized_crop=True),
    "d2l": Pipeline("d2l", resize=224, crop=224, channels=1, normalize="unit", flip=False, lighting=0.0),
    # small images: stored side +1/8 (36 for 32), random 32 crops = the paper's 256 → 227 at small scale
    "small": Pipeline("small", resize=36, crop=32, normalize="channel", lighting=0.1),
}


# what --set data.pipeline_options.X may change, of the type Pipeline's field declares (annotations are text here)
OPTION_KINDS = {f.name: {"int": int, "float": float, "bool": bool, "str": str}[f.type] for f in fields(Pipeline) if f.name != "name"}


def pipeline(name: str, /, **changes: Any) -> Pipeline:
    """The recipe ``name`` with ``changes`` to its fields, each checked: a known option (the nearest named),
    of its type (a whole number, a number, true/false, a word), in its range."""
    if name not in PIPELINES:
        raise ValueError(unknown("pipeline", name, PIPELINES))
    for key, value in changes.items():
        if key not in OPTION_KINDS:
            raise ValueError(unknown("pipeline option", key, OPTION_KINDS))
        kind = OPTION_KINDS[key]
        fits = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            fits = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not fits:
            words = {int: "a whole number", float: "a finite number", bool: "true or false", str: "a word"}[kind]
            raise ValueError(f"pipeline option {key}={value!r} must be {words}")
    for key, ok, rule in (("resize", lambda v: v >= 1, "≥ 1"), ("lighting", lambda v: v >= 0, "≥ 0 (0: off)"),
                          ("min_area", lambda v: 0 < v <= 1, "in (0, 1]")):
        if key in changes and not ok(changes[key]):
            raise ValueError(f"pipeline option {key}={changes[key]!r} must be {rule}")
    return replace(PIPELINES[name], **changes)


def centre_offset(size: int, crop: int) -> int:
    """torchvision's CenterCrop offset, int(round((size − crop) / 2)), so our crops match its pixels."""
    return int(round((size - crop) / 2.0))


# the most pixels, as a multiple of the size×size output, that downsample rescales whole before cropping
FULL_RESCALE = 4  # any aspect ratio up to 4:1 (photographs are 4:3 or 3:2): exactly torchvision's pixels


def downsample(image: np.ndarray, size: int) -> np.ndarray:
    """§2: rescale so the shorter side is ``size``, then crop the central size×size (uint8 HWC).

    PIL bilinear with antialiasing and torchvision's rounding, so it equals ``Resize(size)`` +
    ``CenterCrop(size)`` on a PIL image. The work is bounded by the output: an image whose rescaled
    whole would be over ``FULL_RESCALE`` × size² pixels (a 1×20000 strip would be 5,120,000×256) has
    only its crop computed, Pillow resampling the source box that maps onto it (``resize(box=…)``,
    which reads the pixels around the box that the filter needs); its pixels then differ from
    torchvision's by at most 1 of 255 where the filter's rounding falls the other way.
    """
    h, w = image.shape[:2]
    if (h, w) != (size, size):
        new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        top, left = centre_offset(new_h, size), centre_offset(new_w, size)
        grey = image.ndim == 3 and image.shape[2] == 1
        pil = Image.fromarray(image[..., 0] if grey else image)
        if new_h * new_w <= FULL_RESCALE * size * size:
            image = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))[top : top + size, left : left + size]
        else:
            sx, sy = w / new_w, h / new_h  # source pixels per rescaled pixel, as for the whole image
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            image = np.asarray(pil.resize((size, size), Image.BILINEAR, box=box))
    return np.ascontiguousarray(image if image.ndim == 3 else image[..., None])


class Preprocess:
    """A :class:`Pipeline` bound to its training-set :class:`Stats`; turns uint8 batches into model input."""

    def __init__(self, pipeline: Pipeline, stats: Stats | None) -> None:
        if stats is None and (pipeline.normalize != "unit" or pipeline.lighting > 0):
            raise ValueError(f"pipeline {pipeline.name!r} needs training-set statistics")
        self.pipeline, self.stats = pipeline, stats
        self._cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    # -- state for checkpoints -------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"pipeline": asdict(self.pipeline), "stats": self.stats.to_state() if self.stats else None}

    def same_as(self, other: Preprocess) -> bool:
        """The same pipeline and the same statistics, value for value (a run's checkpoints all have them)."""
        mine, theirs = (asdict(p.stats) if p.stats else {} for p in (self, other))
        return self.pipeline == other.pipeline and mine.keys() == theirs.keys() and all(
            np.array_equal(mine[k], theirs[k]) for k in mine)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocess:
        stats = Stats.from_state(state["stats"]) if state.get("stats") else None
        return cls(Pipeline(**state["pipeline"]), stats)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any] | None, source: object, need: str) -> Preprocess:
        """A checkpoint's preprocessing, or one line naming ``source``: absent (``need`` says what it is
        needed for) or unusable (a malformed file: the exception, in one line)."""
        if not state:
            raise AlexNetError(f"{source}: checkpoint has no preprocessing; {need}")
        try:
            return cls.from_state(state)
        except (KeyError, TypeError, ValueError) as e:
            raise AlexNetError(f"{source}: unusable preprocessing in checkpoint ({type(e).__name__}: {one_line(e, 120)})") from None

    # -- pieces ----------------------------------------------------------------------------------
    def _constants(self, device: torch.device, channels: int) -> dict[str, torch.Tensor]:
        key = (device, channels)
        if key not in self._cache:
            p, s = self.pipeline, self.stats
            c: dict[str, torch.Tensor] = {}
            if s is not None:
                mean_image = torch.from_numpy(s.mean_image).permute(2, 0, 1).float()  # [C, H, W]
                mean, std = torch.tensor(s.channel_mean).float(), torch.tensor(s.channel_std).float()
                if mean_image.shape[0] != channels:  # stats of RGB data, grey model (or the reverse)
                    mean_image = _match_channels(mean_image[None], channels)[0]
                    mean, std = _match_channels(mean[None, :, None, None], channels).flatten(), std.mean().expand(channels)
                if mean_image.shape[-1] != p.resize:
                    mean_image = _fit(mean_image[None], p.resize)[0]
                c["mean_image"], c["mean"], c["std"] = mean_image.to(device), mean.to(device), std.to(device)
                c["eig"] = (torch.tensor(s.eigvec).float() * torch.tensor(s.eigval).float() / 255.0).to(device)
            self._cache[key] = c
        return self._cache[key]

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        return fit_images(x, self.pipeline.resize, self.pipeline.channels)

    def normalize(self, x: torch.Tensor, tops: list[int] | int | None = None, lefts: list[int] | int | None = None) -> torch.Tensor:
        """Subtract the mean (for the mean image: the part under each crop, at ``tops``/``lefts`` — one
        offset per image, or one for all — or the centre when they are not given) and scale."""
        p = self.pipeline
        if p.normalize == "unit":
            return x / 255.0
        c = self._constants(x.device, x.shape[1])
        if p.normalize == "channel":
            return (x - c["mean"].view(1, -1, 1, 1)) / c["std"].view(1, -1, 1, 1)
        mean, h, w = c["mean_image"], x.shape[-2], x.shape[-1]
        if tops is None:
            tops, lefts = centre_offset(p.resize, h), centre_offset(p.resize, w)
        if isinstance(tops, int):
            return x - mean[:, tops : tops + h, lefts : lefts + w]
        return x - torch.stack([mean[:, t : t + h, l : l + w] for t, l in zip(tops, lefts)])

    # -- training --------------------------------------------------------------------------------
    def augment(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random crops (or RandomResizedCrop), reflections, PCA lighting; float [B, C, crop, crop].

        The random numbers are drawn on the CPU from ``generator`` (so a run is reproducible on any
        device); crops are cut from the uint8 images before anything becomes float, one slice per
        image, and only the images drawn for reflection are flipped.
        """
        p = self.pipeline
        b, device = x.shape[0], x.device
        if p.random_resized_crop:
            x = self._random_resized_crop(x, generator)
        else:
            span = p.resize - p.crop + 1
            tops = torch.randint(0, span, (b,), generator=generator).tolist()
            lefts = torch.randint(0, span, (b,), generator=generator).tolist()
            flips = (torch.rand(b, generator=generator) < 0.5).tolist() if p.flip else [False] * b
            if tuple(x.shape[1:]) == (p.resize, p.resize, p.channels):  # stored as the model takes it
                crop = self._crop_uint8 if device.type == "cpu" else self._crop_gather
                x = crop(x, tops, lefts, flips)
            else:
                x = self.fit(x)
                c = p.crop
                x = self.normalize(torch.stack([img[:, t : t + c, l : l + c] for img, t, l in zip(x, tops, lefts)]), tops, lefts)
                x = _reflect(x, flips)
        if p.lighting > 0 and x.shape[1] == 3 and self.stats.eigval.shape == (3,):  # RGB data only
            alpha = torch.randn(b, 3, generator=generator).to(device) * p.lighting  # αᵢ ~ N(0, σ), once per image
            shift = alpha @ self._constants(device, 3)["eig"].T  # Σ αᵢ λᵢ pᵢ, [B, 3]
            if p.normalize == "channel":
                shift = shift / self._constants(device, 3)["std"]
            elif p.normalize == "unit":
                shift = shift / 255.0
            x = x.add_(shift[:, :, None, None])
        return x

    def _crop_uint8(self, x: torch.Tensor, tops: list[int], lefts: list[int], flips: list[bool]) -> torch.Tensor:
        """Per image: cut the uint8 patch (reflected where drawn: a cheap uint8 copy) and write it,
        minus the mean under it (reflected alike), as float — one pass over the output. The output
        is channels_last (the patch's own order, so no transpose)."""
        p, c = self.pipeline, self.pipeline.crop
        out = torch.empty((x.shape[0], x.shape[3], c, c), device=x.device, memory_format=torch.channels_last)
        mean = self._constants(x.device, x.shape[3]).get("mean_image") if p.normalize == "mean_image" else None
        for i, (t, l, f) in enumerate(zip(tops, lefts, flips)):
            patch = x[i, t : t + c, l : l + c].permute(2, 0, 1)
            patch = patch.flip(-1) if f else patch
            if mean is None:
                out[i].copy_(patch)
            else:
                m = mean[:, t : t + c, l : l + c]
                torch.sub(patch, m.flip(-1) if f else m, out=out[i])
        return out if mean is not None else self._normalize_(out)

    def _crop_gather(self, x: torch.Tensor, tops: list[int], lefts: list[int], flips: list[bool]) -> torch.Tensor:
        """:meth:`_crop_uint8` as one gather for the whole batch (and one for the mean image under the
        crops): a few kernels per batch instead of one or two per image, for GPUs, where the
        per-image loop would cost more in launches than the work. Equal to it (tested on the CPU,
        where the loop is faster: advanced indexing runs there at a fraction of memory speed)."""
        p, c, b = self.pipeline, self.pipeline.crop, x.shape[0]
        where = torch.tensor([tops, lefts, flips], dtype=torch.long).to(x.device, non_blocking=True)
        step = torch.arange(c, device=x.device)
        rows = (where[0, :, None] + step)[:, :, None]  # [B, c, 1]
        cols = (where[1, :, None] + torch.where(where[2, :, None] > 0, c - 1 - step, step))[:, None, :]  # [B, 1, c], reflected where drawn
        patches = x[torch.arange(b, device=x.device)[:, None, None], rows, cols]  # uint8 [B, c, c, C]
        if p.normalize == "mean_image":
            mean = self._constants(x.device, x.shape[3])["mean_image"].permute(1, 2, 0)  # [S, S, C]
            return torch.sub(patches, mean[rows, cols]).permute(0, 3, 1, 2)  # NCHW view of channels_last memory
        return self._normalize_(patches.permute(0, 3, 1, 2).float())

    def _random_resized_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """torchvision's RandomResizedCrop: its box sampling (area ``min_area``–100 %, aspect 3/4–4/3,
        10 tries, then the central box), each box resized to crop×crop with antialiased bilinear
        interpolation — per image, on the uint8 patch where the batch is stored as the model takes it:
        exactly ``torchvision.transforms.v2.functional.resized_crop(..., antialias=True)`` on that
        uint8 image (the PIL pipeline rounds differently) — then reflected where drawn and
        normalised. float [B, C, crop, crop], channels_last."""
        p, b = self.pipeline, x.shape[0]
        images = x.permute(0, 3, 1, 2) if self._stored(x) else self.fit(x)  # [B, C, S, S]: uint8 views, or float
        h, w = images.shape[-2:]
        boxes = _resized_crop_boxes(b, h, w, p.min_area, generator)
        flips = (torch.rand(b, generator=generator) < 0.5).tolist() if p.flip else [False] * b
        out = torch.empty((b, images.shape[1], p.crop, p.crop), device=x.device, memory_format=torch.channels_last)
        exact_uint8 = images.device.type == "cpu"  # CUDA/MPS interpolate float only, as torchvision does there
        for i, (top, left, ch, cw) in enumerate(boxes):
            box = images[i : i + 1, :, top : top + ch, left : left + cw]
            patch = F.interpolate(box if exact_uint8 else box.float(), size=(p.crop, p.crop),
                                  mode="bilinear", align_corners=False, antialias=True)[0]
            out[i].copy_(patch.flip(-1) if flips[i] else patch)
        return self._normalize_(out)

    def _stored(self, x: torch.Tensor) -> bool:
        """x is a batch as the loader gives it at the pipeline's size: uint8 [B, resize, resize, channels]."""
        p = self.pipeline
        return x.dtype == torch.uint8 and tuple(x.shape[1:]) == (p.resize, p.resize, p.channels)

    def _normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`normalize` in place (the mean image's centre under every crop)."""
        p = self.pipeline
        if p.normalize == "unit":
            return x.div_(255.0)
        c = self._constants(x.device, x.shape[1])
        if p.normalize == "channel":
            return x.sub_(c["mean"].view(1, -1, 1, 1)).div_(c["std"].view(1, -1, 1, 1))
        t, l = centre_offset(p.resize, x.shape[-2]), centre_offset(p.resize, x.shape[-1])
        return x.sub_(c["mean_image"][:, t : t + x.shape[-2], l : l + x.shape[-1]])

    # -- evaluation ------------------------------------------------------------------------------
    def centre_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The centre crop: float [B, C, crop, crop]. A batch as stored (uint8 [B, S, S, C]) is cut
        before anything becomes float, and comes out channels_last, as the fast path takes it (one
        pass instead of four: 1.5 → 0.5 ms per 256² image, batch 64 on two CPU threads); the values
        are the same."""
        p = self.pipeline
        o = centre_offset(p.resize, p.crop)
        if self._stored(x):
            return self._normalize_(x[:, o : o + p.crop, o : o + p.crop].permute(0, 3, 1, 2).float())
        x = self.fit(x)
        return self.normalize(x[:, :, o : o + p.crop, o : o + p.crop].contiguous())

    def views(self, x: torch.Tensor, n: int = 10) -> torch.Tensor:
        """n=1: the centre crop; n=10: the paper's ten views (§4.1) in torchvision TenCrop's order —
        top-left, top-right, bottom-left, bottom-right, centre, then the five crops of the reflected image.
        Returns float [B, n, C, crop, crop]."""
        if n == 1:
            return self.centre_crop(x)[:, None]
        if n != 10:
            raise ValueError(f"views must be 1 or 10, got {n}")
        p = self.pipeline
        x = self.fit(x)
        s, c, o = p.resize, p.crop, centre_offset(p.resize, p.crop)
        corners = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), (o, o)]
        five = [self.normalize(x[:, :, t : t + c, l : l + c].contiguous(), t, l) for t, l in corners]
        tl, tr, bl, br, centre = five
        mirrored = [tr, tl, br, bl, centre]  # TenCrop crops the reflected image: its top-left is our top-right
        return torch.stack(five + [v.flip(-1) for v in mirrored], dim=1)


def _resized_crop_boxes(b: int, h: int, w: int, min_area: float, generator: torch.Generator | None
                        ) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) per image: torchvision's ``RandomResizedCrop.get_params`` with
    scale (min_area, 1) and ratio (3/4, 4/3), vectorised over the batch (the first of 10 tries that
    fits, else the central square of the shorter side), drawn on the CPU from ``generator``."""
    tries = 10
    scale = min_area + torch.rand(b, tries, generator=generator) * (1.0 - min_area)
    log_ratio = math.log(3 / 4) + torch.rand(b, tries, generator=generator) * (math.log(4 / 3) - math.log(3 / 4))
    ratio = torch.exp(log_ratio)
    cw = torch.sqrt(scale * h * w * ratio).round()
    ch = torch.sqrt(scale * h * w / ratio).round()
    ok = (cw <= w) & (ch <= h) & (cw > 0) & (ch > 0)
    found = ok.any(1)
    first = ok.float().argmax(1, keepdim=True)
    side = float(min(h, w))
    cw = torch.where(found, cw.gather(1, first)[:, 0], torch.full((b,), side))
    ch = torch.where(found, ch.gather(1, first)[:, 0], torch.full((b,), side))
    top = (torch.rand(b, generator=generator) * (h - ch + 1)).floor()
    left = (torch.rand(b, generator=generator) * (w - cw + 1)).floor()
    return [tuple(int(v) for v in box) for box in torch.stack([top, left, ch, cw], 1).tolist()]


def _reflect(x: torch.Tensor, flips: list[bool]) -> torch.Tensor:
    """Mirror (in place) the images of a float batch whose entry in ``flips`` is true."""
    chosen = [i for i, f in enumerate(flips) if f]
    if chosen:
        index = torch.tensor(chosen, device=x.device)
        x[index] = x[index].flip(-1)
    return x


def fit_images(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 [B, H, W, C] → float [B, channels, size, size] on x's device, on the 0–255 scale."""
    x = _match_channels(x.permute(0, 3, 1, 2).float(), channels)
    return x if x.shape[-2:] == (size, size) else _fit(x, size)


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey → RGB by repetition; RGB → grey by ITU-R 601 luma (PIL's ``convert("L")``)."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Device-side §2 down-sampling of float [B, C, H, W]: shorter side to size, centre crop."""
    h, w = x.shape[-2:]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=new_h < h)
    top, left = centre_offset(new_h, size), centre_offset(new_w, size)
    return x[:, :, top : top + size, left : left + size]
