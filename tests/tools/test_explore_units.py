"""What a unit sees: receptive fields equal autograd's, the top 9 equal a brute-force search, and the
feature visualisation raises its unit far above the starting noise."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from alexnet import models
from alexnet.data import Preprocess, compute_stats, open_dataset, pipeline
from alexnet.errors import AlexNetError
from alexnet.tools.explore import activations, units


def digits_model():
    """An untrained alexnet_small for the digits (the explorer tests' checkpoint, made in memory)."""
    torch.manual_seed(0)
    train = open_dataset("digits").splits["train"]
    preprocess = Preprocess(pipeline("small", resize=28, crop=24, channels=1, flip=False, lighting=0.0), compute_stats(train.images))
    model = models.create("alexnet_small", num_classes=10, in_channels=1, width=0.25, input_size=24).eval()
    return model, preprocess


# -- receptive fields ----------------------------------------------------------------------------
def linearised(model: nn.Module) -> nn.Module:
    """The same geometry with every path open: max-pools become average pools of the same windows (a max
    passes gradient to one input only), conv weights 1/fan-in and biases 0.1, so that on an all-ones
    input every activation is positive (no ReLU cuts a path) and every pixel the unit can see has a
    non-zero gradient."""
    m = copy.deepcopy(model).eval()
    for name, module in list(m.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            setattr(m, name, nn.AvgPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode))
        elif isinstance(module, nn.Conv2d):
            with torch.no_grad():
                module.weight.fill_(1.0 / module.weight[0].numel())
                module.bias.fill_(0.1)
    return m


def field_by_gradient(model: nn.Module, layer: str, unit: tuple[int, int, int], x: torch.Tensor) -> tuple[int, ...]:
    """The bounding box (top, left, bottom, right; exclusive) of the input pixels whose gradient is non-zero."""
    x = x.clone().requires_grad_(True)
    out = units.capture(model, dict(model.named_modules())[layer], x)
    (gradient,) = torch.autograd.grad(out[(0, *unit)], x)
    rows, cols = gradient[0].abs().sum(0).nonzero().T
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.mark.parametrize("name, options, side, fields", [
    ("alexnet_small", {"in_channels": 1, "width": 0.25, "input_size": 24}, 24, {"conv1": 5, "pool2": 19, "pool5": 51}),
    ("alexnet", {}, 227, {"conv1": 11, "pool1": 19, "conv2": 51, "pool2": 67, "pool5": 195}),  # the paper's net: pool5 sees 195 px
    ("alexnet_cudaconvnet", {}, 224, {"conv1": 11, "pool2": 99, "pool5": 227}),  # its pad1 and same-map rnorm2 widen it
])
def test_the_receptive_field_is_autograds(name, options, side, fields):
    model = models.create(name, num_classes=10, **options).eval()
    channels = model.config.in_channels
    open_model, ones = linearised(model), torch.ones(1, channels, side, side)
    for layer in ("conv1", "pool1", "conv2", "norm2", "pool2", "relu5", "pool5"):
        steps, shape = units.chain(model, torch.zeros(1, channels, side, side), layer)
        if layer in fields:
            assert units.field_size(steps) == fields[layer], layer
        for row, col in ((0, 0), (shape[1] // 2, shape[2] // 3), (shape[1] - 1, shape[2] - 1)):  # corners are clipped
            assert units.receptive_field(steps, row, col) == field_by_gradient(open_model, layer, (1, row, col), ones), \
                (name, layer, row, col)


def test_a_dilated_and_padded_chain():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2, padding=1))
    x = torch.zeros(1, 1, 20, 20)
    steps, shape = units.chain(model, x, "3")
    assert shape == (2, 5, 5) and units.field_size(steps) == 1 + 4 + 1 + 2 * 2 * 1  # 5 (dilated 3), +1 (pool), +2·2 (conv at jump 2)
    open_model = linearised(model)
    for row, col in ((0, 0), (2, 3), (4, 4)):
        assert units.receptive_field(steps, row, col) == field_by_gradient(open_model, "3", (0, row, col), torch.ones_like(x))


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x * 0.5)


def test_what_has_no_receptive_field_is_refused():
    model, _ = digits_model()
    x = torch.zeros(1, 1, 24, 24)
    with pytest.raises(AlexNetError, match="fc6 is not a map layer"):
        units.chain(model, x, "fc6")
    with pytest.raises(AlexNetError, match=r"unknown map layer 'conv9' \(did you mean 'conv5'\?\); valid: conv1, relu1"):
        units.chain(model, x, "conv9")
    with pytest.raises(AlexNetError, match="does not read the previous layer's output"):
        units.chain(Masked(), x, "conv")
    inception = models.create("googlenet_d2l", num_classes=10).eval()
    grey96 = Preprocess(pipeline("small", resize=96, crop=96, channels=1, normalize="unit", flip=False, lighting=0.0), None)
    views = units.UnitViews(inception, grey96, list("0123456789"), limit=1, device=torch.device("cpu"))
    offered = [layer["name"] for layer in views.layers()]
    assert offered[:3] == ["conv1.conv", "conv1.relu", "maxpool1"]  # the stem is a chain
    assert "inception3a.branch2.1.conv" not in offered  # past the first branch it is not
    with pytest.raises(AlexNetError, match="a branching net"):
        views.unit("inception3a.branch2.1.conv", 0, None)


# -- the top 9 -----------------------------------------------------------------------------------
def test_the_top_nine_are_a_brute_force_searchs():
    model, preprocess = digits_model()
    test = open_dataset("digits").splits["test"]
    count = 60
    layers = {"conv2": 20, "pool5": 7}
    each = [{layer.name: layer.output for layer in activations.layer_outputs(model, preprocess.centre_crop(torch.from_numpy(test.images[i: i + 1])))}
            for i in range(count)]  # image by image
    modules = dict(model.named_modules())
    for layer, channel in layers.items():
        maxima = np.array([float(e[layer][channel].max()) for e in each])
        brute = np.argsort(-maxima, kind="stable")[:9]
        found = units.strongest(model, preprocess, test, modules[layer], limit=count).top(channel)
        assert [v for _, v, _ in found] == pytest.approx(maxima[brute].tolist(), rel=1e-5, abs=1e-6)  # the same nine values …
        assert [maxima[i] for i, _, _ in found] == pytest.approx([v for _, v, _ in found], rel=1e-5, abs=1e-6)  # … of these images
        for i, _, (row, col) in found:
            assert float(each[i][layer][channel, row, col]) == pytest.approx(maxima[i], rel=1e-5)  # at the place it says
    logits = units.strongest(model, preprocess, test, None, limit=count).top(3)
    brute = np.argsort(-np.array([float(e["fc8"][3]) for e in each]), kind="stable")[:9]
    assert [i for i, _, _ in logits] == brute.tolist() and logits[0][2] is None


def test_the_pass_is_made_once_per_split_and_layer(monkeypatch):
    model, preprocess = digits_model()
    test = open_dataset("digits").splits["test"]
    views = units.UnitViews(model, preprocess, [str(d) for d in range(10)], limit=30, device=torch.device("cpu"))
    calls = []
    real = units.strongest
    monkeypatch.setattr(units, "strongest", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    crop = lambda i: preprocess.fit(torch.from_numpy(test.images[i: i + 1]))[0, :, 2:26, 2:26].permute(1, 2, 0).byte().numpy()
    first = views.top("test", test, views.unit("conv2", 4, None), crop)
    again = views.top("test", test, views.unit("conv2", 9, None), crop)  # another channel of the same layer
    assert len(calls) == 1 and first["images"] == 30 and len(first["patches"]) == len(again["patches"]) == 9
    steps = views.chain("conv2")[0]
    for patch in first["patches"]:
        assert patch["box"] == list(units.receptive_field(steps, *patch["at"]))
    views.top("test", test, views.unit(None, None, 2), crop)
    assert len(calls) == 2
    for bad, words in ((("fc7", 0, None), "fc7 is not a map layer"), (("conv2", 32, None), "channel 32 is outside conv2's 0–31"),
                       ((None, None, 10), "class 10 is outside"), (("conv2", 1, 3), "not both"), ((None, None, None), "name a unit")):
        with pytest.raises(AlexNetError, match=words):
            views.unit(*bad)


# -- feature visualisation -----------------------------------------------------------------------
def test_the_visualisation_raises_its_unit_far_above_the_starting_noise():
    model, preprocess = digits_model()
    modules = dict(model.named_modules())
    unbounded = units.VisualiseConfig(seconds=float("inf"))  # all 96 steps however loaded the machine (its bound: below)
    v = units.visualise(model, preprocess, modules["relu5"], 5, unbounded)
    # measured on this untrained digits net (96 steps, 0.5 s): 0.089 → 0.88, × 9.8; pool5 channel 7: × 77
    assert v.steps == 96 and v.image.shape == (24, 24, 1) and v.end > 5 * v.start > 0
    assert v.image.max() - v.image.min() > 128  # a pattern, not the grey it started from
    logit = units.visualise(model, preprocess, None, 3, unbounded)
    assert logit.start < 0 < 1.0 < logit.end  # measured: −0.28 → 1.19
    stopped = units.visualise(model, preprocess, modules["relu5"], 5, units.VisualiseConfig(seconds=0))
    assert stopped.steps == 0 and stopped.end == pytest.approx(stopped.start)


def test_the_colour_basis_is_the_square_root_of_the_colour_covariance():
    train = open_dataset("digits").splits["train"]
    stats = compute_stats(np.repeat(train.images[:50], 3, axis=3) + np.arange(3, dtype=np.uint8) * 7)
    basis = units.colour_basis(Preprocess(pipeline("small", resize=28, crop=24, channels=3, flip=False, lighting=0.0), stats), 3)
    covariance = stats.eigvec @ np.diag(stats.eigval) @ stats.eigvec.T  # of the pixels, 0–255²
    assert (basis @ basis.T).numpy() == pytest.approx(covariance / stats.eigval.max(), abs=1e-5)  # columns of U·√Λ: norms √λ
    assert float(basis.norm(dim=0).max()) == pytest.approx(1.0)
