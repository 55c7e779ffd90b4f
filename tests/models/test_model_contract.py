"""The model contract of models/base.py, held for every registered model (the registry is the test matrix).

Built on the meta device (shapes only, no initialisation or arithmetic), so walking the whole registry,
VGG-19 and ResNet-50 included, costs about a second on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet import checkpoint, models
from alexnet.models.base import ConfiguredNet, classifier_head
from alexnet.training import finetune


def meta_model(name: str, **options) -> ConfiguredNet:
    with torch.device("meta"):
        return models.create(name, **options).eval()


def out_width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def in_width(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_keeps_the_contract(name):
    model = meta_model(name, num_classes=7)
    assert isinstance(model, ConfiguredNet) and model.name == name
    assert model.num_classes == 7 and isinstance(model.input_size, int) and isinstance(model.in_channels, int)
    children = [n for n, _ in model.named_children()]
    assert sorted(model.layer_order()) == sorted(children)  # every child once, in the order forward runs them
    assert model.last_hidden() is None or model.last_hidden() in children
    x = torch.zeros(2, model.in_channels, model.input_size, model.input_size, device="meta")
    with torch.no_grad():
        logits, features = model(x), model.forward_features(x)
    assert logits.shape == (2, 7) and features.ndim == 2 and features.shape[0] == 2
    head = model.get_submodule(classifier_head(model))
    assert out_width(head) == 7 and in_width(head) == features.shape[1]  # the head reads forward_features


@pytest.mark.parametrize("name", models.names())
def test_the_head_finder_agrees_with_the_last_layer_that_has_parameters(name):
    """fc8, fc, classifier, fc10 or NiN's last 1×1 conv: the layer whose output is the logits, and the
    last layer with weights (GoogLeNet's auxiliary heads come before its fc)."""
    model = meta_model(name)
    weighted = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    assert classifier_head(model) == weighted[-1]


@pytest.mark.parametrize("name", ["nin", "nin_d2l"])
def test_nins_head_is_its_last_one_by_one_convolution(name):
    model = meta_model(name, num_classes=5)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    head = model.get_submodule(classifier_head(model))
    assert classifier_head(model) == convs[-1] and head.kernel_size == (1, 1) and head.out_channels == 5
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # a "last nn.Linear" rule finds nothing


def test_the_two_tower_placement_names_the_grouped_models_head():
    """A TwoTowerAlexNet (what ``alexnet(devices=…)`` builds) gives its logits from the grouped model's fc8, whole on
    its first device, so its state dict and head are the grouped model's."""
    grouped = models.create("alexnet_small", num_classes=6, lrn=False)
    model = models.TwoTowerAlexNet(grouped, ("cpu", "cpu")).eval()
    head = model.get_submodule(classifier_head(model))
    assert classifier_head(model) == "fc8" and head.out_features == 6
    with torch.no_grad():
        x = torch.randn(1, model.in_channels, model.input_size, model.input_size)
        torch.testing.assert_close(model(x), grouped.eval()(x))
        torch.testing.assert_close(model(x), head(model.forward_features(x)))


def test_finetune_reinitialises_nins_head_for_new_classes():
    source = models.create("nin_d2l", num_classes=4, input_size=67)
    ckpt = checkpoint.from_model(source, ["a", "b", "c", "d"])
    model = models.create("nin_d2l", num_classes=4, input_size=67)
    rows = finetune.init_from(model, ckpt, classes=["w", "x", "y", "z"], reset_head=False, source="test")
    head = classifier_head(model)
    assert {r.tensor for r in rows if r.status == finetune.STATUS_NEW} == {f"{head}.weight", f"{head}.bias"}
    assert not torch.equal(model.get_submodule(head).weight, source.get_submodule(head).weight)
    frozen = finetune.freeze(model, "features", rows)
    assert frozen and not any(t.startswith(head + ".") for t in frozen)
