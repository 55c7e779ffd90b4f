"""What a unit sees: the image patches that excite a channel most, and an image made to excite it.

OpenAI Microscope's two views of a unit, over our checkpoints (Zeiler & Fergus 2014, Fig. 2, show
the first: "the top 9 activations in a random subset of feature maps across the validation data"):

* :func:`strongest` runs a split once (its first ``limit`` images, centre crops) and keeps, for every
  channel of one layer, each image's largest activation and where in the map it is. The nine
  images with the largest are the channel's top 9; each is cropped to the *receptive field* of the
  unit at that place (:func:`receptive_field`): the input pixels that can change the unit, from
  the geometry (kernel, stride, padding, dilation) of every layer below it. For a class (an output
  unit) the value is its logit and the patch is the whole crop.
* :func:`visualise` (Olah, Mordvintsev & Schubert 2017, "Feature Visualization", Distill; the
  Lucid library, ``lucid/optvis/param/spatial.py``, ``color.py`` and ``transform.py``): gradient
  ascent on the input, from low-amplitude noise, on a channel's mean activation or a class's logit.
  Plain pixel ascent gives high-frequency noise that a convnet answers strongly and a person cannot
  read; Lucid's three remedies are used as it uses them: the image is parameterised by its Fourier
  spectrum scaled by 1/frequency (so every spatial frequency learns at about the same rate), its
  colours are decorrelated (the parameter lives in the training set's colour-PCA basis: §4.1's
  eigenvectors of the checkpoint's own statistics, where Lucid hard-codes ImageNet's) and squashed
  into 0–1 by a sigmoid, and each step sees the image padded, jittered, scaled and rotated a little
  (``standard_transforms``), so only a pattern that works wherever it lands survives.

A receptive field is computed for a chain: every leaf layer up to the chosen one must take the
previous one's output (checked on a forward pass, by tensor identity); a branching net (Inception,
ResNet) is refused with a message, as is a layer whose output is not a map.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.data import ImageSet
from alexnet.data.stats import IMAGENET_EIGVAL, IMAGENET_EIGVEC
from alexnet.data.transforms import Preprocess
from alexnet.errors import AlexNetError, unknown
from alexnet.inference.evaluate import evaluating
from alexnet.inference.samples import image_batch
from alexnet.models.cudaconvnet_layers import SameMapResponseNorm
from alexnet.models.layers import PaperDropout
from alexnet.models.lrn import LocalResponseNorm
from alexnet.tools.explore.pictures import data_uri, upscale

TOP = 9  # patches per unit, as Zeiler & Fergus's Fig. 2 and Microscope show
BATCH = 64  # images per forward pass of the split
POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity,
             PaperDropout, LocalResponseNorm, nn.LocalResponseNorm, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)


# -- the receptive field ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One layer's geometry, (rows, columns) each: output index i reads input indices
    i·stride − pad + j·dilation for j in 0 … kernel − 1."""

    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]  # top, left (what comes after the map only clips)
    dilation: tuple[int, int]
    size: tuple[int, int]  # the layer's input map, height × width


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def geometry(name: str, module: nn.Module, size: tuple[int, int]) -> Step | None:
    """The :class:`Step` of a spatial layer, None for one that works per position (ReLU, LRN, dropout)."""
    if isinstance(module, POINTWISE):
        return None
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        left, _, top, _ = module.padding
        return Step(name, (1, 1), (1, 1), (top, left), (1, 1), size)
    if hasattr(module, "kernel_size") and hasattr(module, "stride"):  # Conv2d, MaxPool2d, AvgPool2d, LocallyConnected2d
        padding = getattr(module, "padding", 0)
        if isinstance(padding, str):
            raise AlexNetError(f"{name}: padding={padding!r}; the receptive field needs it in pixels")
        stride = module.stride if module.stride is not None else module.kernel_size
        return Step(name, _pair(module.kernel_size), _pair(stride), _pair(padding), _pair(getattr(module, "dilation", 1)), size)
    if isinstance(module, SameMapResponseNorm):  # cuda-convnet's rnorm: a size×size window centred on the unit
        return Step(name, (module.size, module.size), (1, 1), (module.size // 2,) * 2, (1, 1), size)
    raise AlexNetError(f"{name} ({type(module).__name__}): no known geometry, so no receptive field through it")


class _Reached(Exception):
    """Raised by a hook to end a forward pass at the layer it records (the layers above are not needed)."""


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


@torch.no_grad()
def chain(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[list[Step], tuple[int, ...]]:
    """The spatial :class:`Step` s from the input up to ``layer`` and ``layer``'s output shape [C, H, W],
    from one forward pass of ``x`` [1, C, h, w]; refused unless each leaf layer read the previous one's output."""
    modules = dict(_leaves(model))
    if layer not in modules:
        raise AlexNetError(unknown("map layer", layer, map_layers(model, x)))
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls.append((name, module, inputs[0] if inputs else None, output))
            if name == layer:
                raise _Reached
        return hook

    _run_to(model, x, list(modules.items()), keep)
    if not calls or calls[-1][0] != layer:
        raise AlexNetError(f"{layer} is not called by the forward pass")
    if not isinstance(calls[-1][3], torch.Tensor) or calls[-1][3].dim() != 4:
        raise AlexNetError(f"{layer} is not a map layer (its output is {tuple(getattr(calls[-1][3], 'shape', ()))[1:]}): "
                           f"choose one of {', '.join(map_layers(model, x))}, or a class")
    steps, previous = [], x
    for name, module, given, output in calls:
        if given is not previous:
            raise AlexNetError(f"{layer}: {name} does not read the previous layer's output (a branching net), "
                               "so its receptive field is not a chain of layers")
        step = geometry(name, module, tuple(given.shape[-2:]))
        steps += [step] if step else []
        previous = output
    return steps, tuple(calls[-1][3].shape[1:])


def _run_to(model: nn.Module, x: torch.Tensor, modules: list[tuple[str, nn.Module]], make_hook) -> None:
    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules]
    try:
        with evaluating(model):
            model(x)
    except _Reached:
        pass
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def map_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The leaf layers whose output is a map [C, H, W], in call order (what a unit's channel can be chosen of)."""
    found: list[str] = []

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and name not in found:
                found.append(name)
        return hook

    _run_to(model, x, _leaves(model), keep)
    return found


def receptive_field(steps: list[Step], row: int, col: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom and right exclusive: the input pixels unit (row, col) of the
    last step's output can see. Walked down layer by layer, each interval clipped to the map it
    indexes: a window that reads padding reads nothing of the image there."""
    lo, hi = [row, col], [row, col]
    for s in reversed(steps):
        for a in (0, 1):
            lo[a] = max(0, lo[a] * s.stride[a] - s.pad[a])
            hi[a] = min(s.size[a] - 1, hi[a] * s.stride[a] - s.pad[a] + (s.kernel[a] - 1) * s.dilation[a])
    return lo[0], lo[1], hi[0] + 1, hi[1] + 1


def field_size(steps: list[Step]) -> int:
    """The receptive field's side, unclipped (rows): 11 for conv1 of the paper's net, 195 for pool5."""
    side, jump = 1, 1
    for s in steps:
        side += (s.kernel[0] - 1) * s.dilation[0] * jump
        jump *= s.stride[0]
    return side


# -- the strongest images of a split ----------------------------------------------------------------
@dataclass
class Strongest:
    """For each image of the pass and each channel (or class): its largest value and where."""

    values: torch.Tensor  # float [N, C]: the max over the map's positions (a class: the logit)
    where: torch.Tensor  # long [N, C]: the position of that max, row · W + column (0 for a vector)
    shape: tuple[int, ...]  # the layer's output, [C, H, W] or [K]

    def top(self, channel: int, k: int = TOP) -> list[tuple[int, float, tuple[int, int] | None]]:
        """(image index, value, (row, column) or None) of the ``k`` largest, largest first."""
        values, index = self.values[:, channel].topk(min(k, len(self.values)))
        width = self.shape[2] if len(self.shape) == 3 else None
        return [(int(i), float(v), divmod(int(self.where[i, channel]), width) if width else None)
                for v, i in zip(values, index)]


def capture(model: nn.Module, module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``module``'s output for ``x``, the forward pass ended there (None: the model's output, the
    logits); gradients flow when enabled."""
    if module is None:
        with evaluating(model):
            return model(x)
    seen: list[torch.Tensor] = []

    def record(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen.append(output)
        raise _Reached

    _run_to(model, x, [("", module)], lambda name: record)
    if not seen:
        raise AlexNetError(f"{type(module).__name__} is not called by the forward pass")
    return seen[0]


@torch.no_grad()
def strongest(model: nn.Module, preprocess: Preprocess, images: ImageSet, module: nn.Module | None, *,
              limit: int = 0, device: torch.device | str = "cpu") -> Strongest:
    """One pass over the first ``limit`` images (all when 0) of a split, centre crops as ``eval`` takes them."""
    count = min(len(images), limit) if limit else len(images)
    values, where, shape = [], [], ()
    for start in range(0, count, BATCH):
        x = image_batch(images, np.arange(start, min(count, start + BATCH)), preprocess.pipeline.resize).to(device)
        out = capture(model, module, preprocess.centre_crop(x)).float().cpu()
        shape = tuple(out.shape[1:])
        if out.dim() == 4:
            best = out.flatten(2).max(2)
            values.append(best.values)
            where.append(best.indices)
        else:
            values.append(out.flatten(1))
            where.append(torch.zeros(out.shape[0], out[0].numel(), dtype=torch.long))
    if not values:
        raise AlexNetError("the split has no images")
    return Strongest(torch.cat(values), torch.cat(where), shape)


# -- feature visualisation by optimisation ----------------------------------------------------------
@dataclass(frozen=True)
class VisualiseConfig:
    steps: int = 96  # Adam steps; Lucid's render_vis takes 512 by default, 96 keeps a CPU answer to seconds on small nets
    seconds: float = 30.0  # wall-clock bound: the ascent stops here even with steps left (the paper's net: ~0.3 s a step on 2 cores)
    lr: float = 0.05  # Adam's step size, Lucid's render_vis default
    decay: float = 1.0  # the spectrum is scaled by 1/frequency^decay (Lucid's decay_power)
    sd: float = 0.01  # the starting spectrum's standard deviation: faint noise around grey (Lucid's fft_image)
    seed: int = 0


class FourierImage(nn.Module):
    """Lucid's ``fft_image`` + ``to_valid_rgb``: a [1, C, S, S] image in 0–1 from a scaled spectrum,
    its colours decorrelated by the square root of the colour covariance (U·√Λ, column-normalised)."""

    def __init__(self, channels: int, size: int, colour: torch.Tensor, config: VisualiseConfig) -> None:
        super().__init__()
        fy, fx = torch.fft.fftfreq(size)[:, None], torch.fft.rfftfreq(size)[None, :]
        frequency = (fx * fx + fy * fy).sqrt()
        self.register_buffer("scale", size / frequency.clamp(min=1.0 / size) ** config.decay)  # × √(h·w): unitary
        generator = torch.Generator().manual_seed(config.seed)
        self.spectrum = nn.Parameter(config.sd * torch.randn(2, channels, *frequency.shape, generator=generator))
        self.register_buffer("colour", colour)
        self.size = size

    def forward(self) -> torch.Tensor:
        spectrum = torch.complex(self.spectrum[0], self.spectrum[1]) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size)) / 4.0  # [C, S, S], Lucid's / 4
        image = torch.einsum("dc,chw->dhw", self.colour, image)
        return torch.sigmoid(image)[None]


def colour_basis(preprocess: Preprocess, channels: int) -> torch.Tensor:
    """Lucid's ``color_correlation_svd_sqrt`` for the checkpoint's data: eigvec · diag(√eigval), each column
    divided by the largest column norm (ImageNet's when the checkpoint has no statistics); 1 for grey."""
    if channels != 3:
        return torch.eye(channels)
    stats = preprocess.stats
    vec, val = (stats.eigvec, stats.eigval) if stats is not None and stats.eigvec.shape == (3, 3) else (IMAGENET_EIGVEC, IMAGENET_EIGVAL)
    sqrt = torch.as_tensor(vec * np.sqrt(np.clip(val, 0, None)), dtype=torch.float32)
    return sqrt / sqrt.norm(dim=0).max()


def jitter(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Lucid's ``standard_transforms`` scaled to the input side S (its numbers are for 224): pad by 12/224·S
    with grey, translate by up to (8 + 4)/224·S, scale by 0.9–1.1, rotate by up to 10°, keep S×S."""
    s = image.shape[-1]
    pad, shift = max(1, round(12 * s / 224)), max(1, round(12 * s / 224))
    padded = F.pad(image, (pad,) * 4, value=0.5)
    scale = 1 + (int(torch.randint(0, 11, (), generator=generator)) - 5) / 50
    angles = list(range(-10, 11)) + [0] * 5
    angle = math.radians(angles[int(torch.randint(0, len(angles), (), generator=generator))])
    dy, dx = (torch.randint(-shift, shift + 1, (2,), generator=generator).float() * 2 / padded.shape[-1]).tolist()
    r = s / padded.shape[-1] / scale  # the output's S pixels span this much of the padded image
    theta = torch.tensor([[r * math.cos(angle), -r * math.sin(angle), dx],
                          [r * math.sin(angle), r * math.cos(angle), dy]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta[None], [1, image.shape[1], s, s], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class Visualisation:
    image: np.ndarray  # uint8 [S, S, C]
    start: float  # the objective on the starting noise
    end: float  # on the final image (no jitter)
    steps: int  # the steps taken (fewer than asked when the time ran out)
    seconds: float


def visualise(model: nn.Module, preprocess: Preprocess, module: nn.Module | None, channel: int,
              config: VisualiseConfig = VisualiseConfig(), device: torch.device | str = "cpu") -> Visualisation:
    """Gradient ascent on :func:`objective` (``channel`` of ``module``: a map's mean, or a vector's unit)
    from faint noise, by Adam on :class:`FourierImage`'s spectrum, each step through :func:`jitter`."""
    p = preprocess.pipeline
    param = FourierImage(p.channels, p.crop, colour_basis(preprocess, p.channels), config).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam([param.spectrum], lr=config.lr)
    score = lambda image: objective(model, preprocess, module, channel, image)
    with torch.no_grad():
        start = float(score(param()))
    began, taken = time.perf_counter(), 0
    with torch.enable_grad():
        while taken < config.steps and time.perf_counter() - began < config.seconds:
            (gradient,) = torch.autograd.grad(-score(jitter(param(), generator)), [param.spectrum])
            param.spectrum.grad = gradient / gradient.norm().clamp(min=1e-30)  # Adam's ε would swamp an untrained net's 1e-9s
            optimiser.step()
            taken += 1
    with torch.no_grad():
        final = param()
        end = float(score(final))
    picture = (final[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Visualisation(picture, start, end, taken, time.perf_counter() - began)


def objective(model: nn.Module, preprocess: Preprocess, module: nn.Module | None, channel: int,
              image: torch.Tensor) -> torch.Tensor:
    """What the ascent raises, for an image in 0–1: the mean over positions of ``channel`` of ``module``'s
    output (a map), or unit ``channel`` of a vector (``module`` None: class ``channel``'s logit)."""
    out = capture(model, module, preprocess.normalize(image * 255.0))
    return out[0, channel].mean() if out.dim() == 4 else out[0, channel]


# -- what the explorer asks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """A channel of a map layer, or a class (``layer`` None: the model's output)."""

    layer: str | None
    index: int

    def describe(self, classes: list[str]) -> str:
        return f"class {self.index} ({classes[self.index]})" if self.layer is None else f"{self.layer} channel {self.index}"


KEPT_VISUALISATIONS = 64


class UnitViews:
    """The Units view of one explorer session: the layer geometry, one pass per (split, layer) and the
    visualisations, each computed once and kept (a second request for them is answered from memory)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, classes: list[str], *, limit: int,
                 device: torch.device, visualise: VisualiseConfig = VisualiseConfig()) -> None:
        self.model, self.preprocess, self.classes, self.limit, self.device = model, preprocess, classes, limit, device
        self.config = visualise
        p = preprocess.pipeline
        self.blank = torch.zeros(1, p.channels, p.crop, p.crop, device=device)
        self.modules = dict(model.named_modules())
        self.chains: dict[str, tuple[list[Step], tuple[int, ...]]] = {}
        self.passes: dict[tuple[str, str | None], Strongest] = {}
        self.pictures: dict[tuple[Unit, int], dict] = {}
        self._layers: list[dict] | None = None

    def chain(self, layer: str) -> tuple[list[Step], tuple[int, ...]]:
        if layer not in self.chains:
            self.chains[layer] = chain(self.model, self.blank, layer)
        return self.chains[layer]

    def layers(self) -> list[dict]:
        """Every map layer a channel can be chosen of: name, kind, shape, channels, receptive field."""
        if self._layers is None:
            self._layers = []
            for name in map_layers(self.model, self.blank):
                try:
                    steps, shape = self.chain(name)
                except AlexNetError:  # past a branch: no receptive field, so not offered
                    continue
                self._layers.append({"name": name, "kind": type(self.modules[name]).__name__, "channels": shape[0],
                                     "shape": f"{shape[1]}×{shape[2]}×{shape[0]}", "field": field_size(steps)})
        return self._layers

    def unit(self, layer: str | None, channel: int | None, target: int | None) -> Unit:
        """The unit a request names (layer and channel, or class), checked: a one-line AlexNetError if not."""
        if target is not None:
            if layer or channel is not None:
                raise AlexNetError("name a layer and a channel, or a class, not both")
            if not 0 <= target < len(self.classes):
                raise AlexNetError(f"class {target} is outside the checkpoint's 0–{len(self.classes) - 1}")
            return Unit(None, target)
        if not layer or channel is None:
            raise AlexNetError("name a unit: layer=NAME&channel=N (a map layer's channel) or class=K")
        channels = self.chain(layer)[1][0]
        if not 0 <= channel < channels:
            raise AlexNetError(f"channel {channel} is outside {layer}'s 0–{channels - 1}")
        return Unit(layer, channel)

    def top(self, split: str, images: ImageSet, unit: Unit, crop_of) -> dict:
        """The :data:`TOP` images of ``split`` that excite ``unit`` most, each cut to the unit's receptive
        field around its strongest place; ``crop_of(i)`` is image i's centre crop as shown (uint8 [h, w, C])."""
        key = (split, unit.layer)
        if key not in self.passes:
            module = self.modules[unit.layer] if unit.layer else None
            self.passes[key] = strongest(self.model, self.preprocess, images, module, limit=self.limit, device=self.device)
        found = self.passes[key]
        steps = self.chain(unit.layer)[0] if unit.layer else None
        patches = []
        for index, value, at in found.top(unit.index):
            crop = crop_of(index)
            box = receptive_field(steps, *at) if steps is not None else (0, 0, crop.shape[0], crop.shape[1])
            patch = np.ascontiguousarray(crop[box[0]:box[2], box[1]:box[3]])
            patches.append({"index": index, "value": value, "at": list(at) if at else None, "box": list(box),
                            "label": self.classes[int(images.labels[index])], "png": data_uri(upscale(patch, 72))})
        return {"unit": unit.describe(self.classes), "split": split, "images": len(found.values), "of": len(images),
                "field": field_size(steps) if steps is not None else None, "patches": patches}

    def visualisation(self, unit: Unit, steps: int | None) -> dict:
        """:func:`visualise` of ``unit`` (``steps`` or the configured number), kept for the next request."""
        key = (unit, steps or self.config.steps)
        if key not in self.pictures:
            config = replace(self.config, steps=key[1])
            module = self.modules[unit.layer] if unit.layer else None
            v = visualise(self.model, self.preprocess, module, unit.index, config, self.device)
            self.pictures[key] = {"unit": unit.describe(self.classes), "png": data_uri(upscale(v.image, 192)),
                                  "objective": "its logit" if unit.layer is None else "its mean activation over the map",
                                  "start": v.start, "end": v.end, "factor": v.end / v.start if v.start > 0 else None,
                                  "steps": v.steps, "asked": key[1], "seconds": round(v.seconds, 2)}
            while len(self.pictures) > KEPT_VISUALISATIONS:
                self.pictures.pop(next(iter(self.pictures)))
        return self.pictures[key]
