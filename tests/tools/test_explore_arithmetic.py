"""The explorer's arithmetic: each value recomputed from the numbers shown equals the layer's output."""

import math

import numpy as np
import pytest
import torch

from alexnet import models
from alexnet.errors import AlexNetError
from alexnet.tools.explore.arithmetic import explain, record


def recompute(e: dict) -> float:
    """The unit's value from the shown numbers alone, by the rule the explanation names."""
    if e["kind"] == "conv":
        return sum(np.sum(np.array(w) * np.array(k)) for w, k in zip(e["window"], e["kernel"], strict=True)) + e["bias"]
    if e["kind"] == "linear":
        return float(np.dot(e["inputs"], e["weights"])) + e["bias"]
    if e["kind"] == "relu":
        return max(0.0, e["input"])
    if e["kind"] == "lrn":
        return e["input"] / (e["k"] + e["alpha_per_term"] * sum(v * v for v in e["values"])) ** e["beta"]
    if e["kind"] == "maxpool":
        return float(np.max(e["window"]))
    if e["kind"] == "scale":
        return e["input"] * e["factor"]
    if e["kind"] == "avgpool":
        return float(np.mean(e["window"]))
    return e["input"]  # dropout, flatten: the value passes


@pytest.mark.parametrize("name", ["alexnet", "alexnet_owt"])
def test_every_layers_shown_numbers_give_its_output(name):
    torch.manual_seed(0)
    model = models.create(name, num_classes=10).eval()
    x = torch.rand(1, 3, model.input_size, model.input_size) * 255
    recorded = record(model, x)
    rng = np.random.default_rng(0)
    kinds = set()
    for layer, (_, _, out) in recorded.items():
        for _ in range(3):
            unit = [int(rng.integers(0, s)) for s in out.shape[1:]]
            e = explain(recorded, layer, unit)
            kinds.add(e["kind"])
            assert e["output"] == pytest.approx(float(out[(0, *unit)]))
            assert recompute(e) == pytest.approx(e["output"], rel=1e-4, abs=1e-4), (layer, unit, e["kind"])
    assert {"conv", "relu", "maxpool", "linear"} <= kinds and ("lrn" in kinds) == (name == "alexnet")
    probabilities = explain(recorded, "softmax", [])["probabilities"]
    assert probabilities == pytest.approx(torch.softmax(model(x)[0].double(), 0).tolist(), rel=1e-6)
    assert math.isclose(sum(probabilities), 1.0)


def test_a_grouped_conv_reads_only_its_towers_channels_and_lrn_stays_in_its_tower():
    model = models.create("alexnet", num_classes=10).eval()
    recorded = record(model, torch.rand(1, 3, 227, 227))
    e = explain(recorded, "conv2", [200, 3, 4])  # conv2's 256 kernels: 128 per tower, each reading 48 of conv1's 96 maps
    assert e["channels"] == [48, 96] and e["tower"] == 1 and len(e["window"]) == 48 and len(e["window"][0]) == 5
    lrn = explain(recorded, "norm1", [48, 0, 0])  # the second tower's first map: its window starts at itself
    assert lrn["channels"] == [48, 51] and lrn["alpha_per_term"] == pytest.approx(1e-4 / 5)
    pool = explain(recorded, "pool1", [0, 1, 1])
    assert pool["overlap"] == 1 and pool["origin"] == [2, 2] and len(pool["window"]) == 3


def test_an_unknown_layer_or_a_unit_outside_the_map_is_one_line():
    recorded = record(models.create("alexnet_small", num_classes=10).eval(), torch.rand(1, 3, 32, 32))
    with pytest.raises(AlexNetError, match="unknown layer 'conv9'"):
        explain(recorded, "conv9", [0, 0, 0])
    with pytest.raises(AlexNetError, match=r"unit \[0, 99, 0\] is outside conv1's output"):
        explain(recorded, "conv1", [0, 99, 0])
    with pytest.raises(AlexNetError, match="outside"):
        explain(recorded, "conv1", [0, 0])
