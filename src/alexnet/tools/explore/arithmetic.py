"""The numbers that made one unit (CNN Explainer's view, with AlexNet's own layers).

One forward pass of the chosen image records every leaf layer's input and output (forward hooks,
eval mode, fp32 on the CPU); :func:`explain` then lays out, for a unit of a layer, the numbers its
value is computed from, by the layer's own rule:

* a convolution: the input window of each input channel it reads (a grouped layer reads only its
  own tower's channels, §3.2) times the kernel, summed per channel, plus the bias;
* a ReLU (§3.1): max(0, x); a fully-connected layer: the input vector · the weight row + bias;
* LRN (§3.3): the window of neighbouring maps inside the unit's tower, b = a / (k + α'·Σa²)^β with
  α' as the layer runs it (``LocalResponseNorm.alpha_per_term``);
* max-pooling (§3.4): the window, its maximum, and the rows and columns it shares with the next
  window (3×3 at stride 2 overlap by one);
* §4.2's dropout at test time: × (1 − p) (inverted dropout, flatten: the value passes unchanged);
* the output: the softmax over the logits.

Every explanation carries ``output``, the layer's own value, so that recomputing the shown numbers
can be checked against it (tests/tools/test_explore_arithmetic.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.errors import AlexNetError, unknown
from alexnet.models.layers import PaperDropout
from alexnet.models.lrn import LocalResponseNorm


def record(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """Every leaf layer's (module, input, output) for one image ``x`` [1, C, H, W], in forward order."""
    seen: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor) and name not in seen:
                seen[name] = (module, inputs[0].detach().float().cpu(), output.detach().float().cpu())
        return hook

    hooks = [m.register_forward_hook(keep(name)) for name, m in model.named_modules() if name and not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def explain(recorded: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]], layer: str, unit: list[int]) -> dict[str, Any]:
    """The arithmetic of ``unit`` ([c, y, x] of a map, or [j] of a vector) of ``layer``; ``layer`` "softmax"
    is the output's softmax over the last layer's logits (``unit`` ignored)."""
    if layer == "softmax":
        last = list(recorded)[-1]
        return {"layer": "softmax", "of": last, **softmax(recorded[last][2][0])}
    if layer not in recorded:
        raise AlexNetError(unknown("layer", layer, [*recorded, "softmax"]))
    module, inp, out = recorded[layer]
    shape = tuple(out.shape[1:])
    if len(unit) != len(shape) or not all(0 <= u < s for u, s in zip(unit, shape, strict=False)):
        raise AlexNetError(f"unit {unit} is outside {layer}'s output of shape {list(shape)}")
    base = {"layer": layer, "unit": unit, "shape": list(shape), "output": float(out[(0, *unit)])}
    for kind, rule in RULES:
        if isinstance(module, kind):
            return {**base, **rule(module, inp[0], unit)}
    return {**base, "kind": "identity", "input": float(inp[0].reshape(out[0].shape)[tuple(unit)]),
            "note": f"{type(module).__name__}: in eval mode the value passes through unchanged"}


def softmax(logits: torch.Tensor) -> dict[str, Any]:
    """The output layer's softmax, term by term (the largest logit subtracted, as it is computed)."""
    z = logits.double().flatten()
    shifted = (z - z.max()).exp()
    return {"kind": "softmax", "logits": z.tolist(), "max": float(z.max()), "exp": shifted.tolist(),
            "sum": float(shifted.sum()), "probabilities": (shifted / shifted.sum()).tolist()}


def _conv(m: nn.Conv2d, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    c, y, x = unit
    per_group = m.in_channels // m.groups
    group = c // (m.out_channels // m.groups)
    (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
    ph, pw = m.padding if isinstance(m.padding, tuple) else (0, 0)
    padded = F.pad(inp[group * per_group:(group + 1) * per_group], (pw, pw, ph, ph))
    window = padded[:, y * sh:y * sh + (kh - 1) * dh + 1:dh, x * sw:x * sw + (kw - 1) * dw + 1:dw]
    kernel = m.weight.detach().float().cpu()[c]
    per_channel = (window.double() * kernel.double()).sum((1, 2))
    bias = float(m.bias.detach()[c]) if m.bias is not None else 0.0
    return {"kind": "conv", "channels": [group * per_group, (group + 1) * per_group], "tower": group if m.groups > 1 else None,
            "origin": [y * sh - ph, x * sw - pw], "stride": [sh, sw], "padding": [ph, pw], "window": window.tolist(),
            "kernel": kernel.tolist(), "per_channel": per_channel.tolist(), "bias": bias, "sum": float(per_channel.sum()) + bias}


def _linear(m: nn.Linear, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    x, w = inp.flatten().double(), m.weight.detach().double().cpu()[unit[0]]
    terms = x * w
    bias = float(m.bias.detach()[unit[0]]) if m.bias is not None else 0.0
    top = terms.abs().argsort(descending=True)[:10].tolist()
    return {"kind": "linear", "inputs": x.tolist(), "weights": w.tolist(), "bias": bias, "sum": float(terms.sum()) + bias,
            "largest_terms": [{"input": i, "x": float(x[i]), "w": float(w[i]), "product": float(terms[i])} for i in top]}


def _relu(m: nn.Module, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    value = float(inp[tuple(unit)])
    return {"kind": "relu", "input": value, "rule": "max(0, x)"}


def _lrn(m: LocalResponseNorm, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    c, y, x = unit
    per_group = inp.shape[0] // m.groups
    low, high = (c // per_group) * per_group, (c // per_group + 1) * per_group
    first, last = max(low, c - m.size // 2), min(high - 1, c + (m.size - 1) // 2)
    values = inp[first:last + 1, y, x].double()
    squares = float((values**2).sum())
    denominator = (m.k + m.alpha_per_term * squares) ** m.beta
    return {"kind": "lrn", "channels": [first, last + 1], "values": values.tolist(), "input": float(inp[c, y, x]),
            "sum_of_squares": squares, "k": m.k, "n": m.size, "alpha": m.alpha, "alpha_per_term": m.alpha_per_term,
            "beta": m.beta, "convention": m.convention, "denominator": denominator,
            "rule": "a / (k + α'·Σa²)^β"}


def _maxpool(m: nn.MaxPool2d, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    c, y, x = unit
    k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
    padded = F.pad(inp[c], (p, p, p, p), value=-math.inf)
    window = padded[y * s:y * s + k, x * s:x * s + k]
    at = int(window.argmax())
    return {"kind": "maxpool", "origin": [y * s - p, x * s - p], "size": k, "stride": s, "window": window.tolist(),
            "max": float(window.max()), "argmax": [at // window.shape[1], at % window.shape[1]],
            "overlap": max(0, k - s), "note": f"the next window starts {s} further on: {max(0, k - s)} row(s)/column(s) shared"}


def _paper_dropout(m: PaperDropout, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    return {"kind": "scale", "input": float(inp.flatten()[unit[0]] if inp.dim() != len(unit) else inp[tuple(unit)]),
            "factor": 1.0 - m.p, "note": "§4.2's dropout at test time: every unit kept, its output × (1 − p)"}


def _adaptive_avg(m: nn.AdaptiveAvgPool2d, inp: torch.Tensor, unit: list[int]) -> dict[str, Any]:
    c, y, x = unit
    (h, w), (oh, ow) = inp.shape[1:], m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
    rows = (y * h // oh, -(-(y + 1) * h // oh))
    cols = (x * w // ow, -(-(x + 1) * w // ow))
    window = inp[c, rows[0]:rows[1], cols[0]:cols[1]].double()
    return {"kind": "avgpool", "origin": [rows[0], cols[0]], "window": window.tolist(), "mean": float(window.mean())}


RULES = ((PaperDropout, _paper_dropout), (nn.Conv2d, _conv), (nn.Linear, _linear), (nn.ReLU, _relu), (LocalResponseNorm, _lrn),
         (nn.MaxPool2d, _maxpool), (nn.AdaptiveAvgPool2d, _adaptive_avg))
