"""Why the network chose a class: Grad-CAM on the last conv layer and occlusion sensitivity.

* :func:`grad_cam` (Selvaraju et al. 2017, "Grad-CAM", eq. 1–2): the class score's gradient with
  respect to the maps A of the last conv layer, averaged over each map, weighs the maps; the heat map
  is ReLU(Σₖ αₖ Aₖ), bilinearly resized to the crop. The score is the class's logit (before the
  softmax, as the paper takes yᶜ). The maps are those after the last conv's nonlinearity (relu5 in
  the AlexNet family: :func:`cam_layer`), the "rectified convolutional feature maps" of §3.
* :func:`occlusion` (Zeiler & Fergus 2014, §4.2 and Fig. 7): a grey square is slid over the crop
  and the class's probability is read at each position; the map is the drop from the unoccluded
  probability, averaged over the squares that cover each pixel. "Grey" is the training set's mean
  colour (what mean subtraction turns into 0); each occluded image goes through the one inference
  path, :func:`alexnet.inference.evaluate.batch_probabilities`, as the uint8 image the checkpoint's
  preprocessing crops.

Both are a few lines of hooks and tensor code; neither library the issue suggested (Captum,
TorchCAM) is needed for this much. Both maps are returned as float [crop, crop].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.data.transforms import Preprocess, centre_offset
from alexnet.inference.evaluate import batch_probabilities, evaluating
from alexnet.tools.explore.activations import forward_with_hooks

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid)
NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)
OCCLUSION_BATCH = 64


@torch.no_grad()
def call_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The names of the leaf modules in the order one forward pass calls them."""
    order: list[str] = []
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    forward_with_hooks(model, x, leaves, lambda name: lambda module, inputs, output: order.append(name))
    return order


def cam_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The module whose output Grad-CAM weighs: the nonlinearity after the last Conv2d (past a
    BatchNorm between them), else the last Conv2d itself."""
    modules = dict(model.named_modules())
    order = call_order(model, x)
    convs = [i for i, name in enumerate(order) if isinstance(modules[name], nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    last = convs[-1]
    for name in order[last + 1:]:
        if isinstance(modules[name], ACTIVATIONS):
            return name
        if not isinstance(modules[name], NORMS):
            break
    return order[last]


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, layer: str) -> np.ndarray:
    """Grad-CAM of class ``target`` for one preprocessed input ``x`` [1, C, h, w] → float [h, w] in 0–1
    (all zeros when no map speaks for the class)."""
    module = dict(model.named_modules())[layer]
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, output: seen.__setitem__("maps", output))
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(x)
            (gradient,) = torch.autograd.grad(logits[0, target], seen["maps"])
    finally:
        handle.remove()
    maps = seen["maps"].detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # αₖ: the gradient averaged over map k
    cam = F.relu((weights * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).cpu().numpy()


@dataclass
class Occlusion:
    drop: np.ndarray  # float [crop, crop]: unoccluded probability − occluded, averaged over covering squares
    probability: float  # the class's probability without occlusion
    lowest: float  # the lowest probability any square left
    patch: int
    stride: int
    positions: int


def occlusion_grid(crop: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets of the squares along one side: every ``stride`` pixels, the last flush with the edge."""
    starts = list(range(0, crop - patch + 1, stride))
    if starts[-1] != crop - patch:
        starts.append(crop - patch)
    return starts


def grey_value(preprocess: Preprocess, channels: int) -> torch.Tensor:
    """The training set's mean colour (0–255) per channel; mid-grey when the checkpoint has no statistics."""
    if preprocess.stats is None:
        return torch.full((channels,), 127.5)
    mean = torch.tensor(preprocess.stats.channel_mean, dtype=torch.float32)
    return mean if len(mean) == channels else mean.mean().expand(channels)


@torch.no_grad()
def occlusion(model: nn.Module, preprocess: Preprocess, image: torch.Tensor, target: int, *, patch: int,
              stride: int) -> Occlusion:
    """Occlusion sensitivity of class ``target`` for one uint8 image [1, S, S, C] as the model takes it."""
    p = preprocess.pipeline
    fitted = preprocess.fit(image).round().clamp(0, 255)  # float [1, C, S, S]
    offset, crop = centre_offset(p.resize, p.crop), p.crop
    if not 0 < patch <= crop or stride < 1:
        raise ValueError(f"occlusion square {patch} must be within 1–{crop} pixels and the stride at least 1")
    grey = grey_value(preprocess, fitted.shape[1]).round().view(1, -1, 1, 1).to(fitted.device)
    starts = occlusion_grid(crop, patch, stride)
    boxes = [(t, l) for t in starts for l in starts]
    base = float(batch_probabilities(model, preprocess, _as_uint8(fitted))[0, target])
    drops = []
    for i in range(0, len(boxes), OCCLUSION_BATCH):
        batch = fitted.repeat(len(boxes[i: i + OCCLUSION_BATCH]), 1, 1, 1)
        for b, (t, l) in enumerate(boxes[i: i + OCCLUSION_BATCH]):
            batch[b, :, offset + t: offset + t + patch, offset + l: offset + l + patch] = grey[0]
        drops.append(base - batch_probabilities(model, preprocess, _as_uint8(batch))[:, target].float().cpu())
    drop = torch.cat(drops)
    total, cover = torch.zeros(crop, crop), torch.zeros(crop, crop)
    for d, (t, l) in zip(drop.tolist(), boxes):
        total[t: t + patch, l: l + patch] += d
        cover[t: t + patch, l: l + patch] += 1
    return Occlusion((total / cover).numpy(), base, base - float(drop.max()), patch, stride, len(boxes))


def _as_uint8(fitted: torch.Tensor) -> torch.Tensor:
    return fitted.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def default_square(crop: int) -> tuple[int, int]:
    """(patch, stride) for a crop: a square of about 1/7 of the side (Zeiler & Fergus's 35 px on 224
    is 1/6.4), moved by half of it: 14×14 positions on 227 (32 px squares every 16), 12×12 on 24."""
    patch = max(1, round(crop / 7))
    return patch, max(1, round(patch / 2))
