"""ResNet and DenseNet (d2l's "modern CNNs" after AlexNet): counts and outputs equal to torchvision's
with shared weights, the d2l forms by hand, and their digits presets."""

import pytest
import torch
import torchvision

from alexnet import models
from alexnet.data.transforms import pipeline
from alexnet.training.config import resolve

TORCHVISION = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "densenet121": 7_978_856}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,params", TORCHVISION.items())
def test_counts_equal_torchvision(name, params):
    with torch.device("meta"):
        ours, theirs = models.create(name), getattr(torchvision.models, name)()
    assert count(ours) == count(theirs) == params
    assert list(ours.state_dict()) == list(theirs.state_dict())  # torchvision's names, in its order


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121"])
def test_outputs_equal_torchvision_with_shared_weights(name):
    theirs = getattr(torchvision.models, name)(num_classes=7).eval()
    ours = models.create(name, num_classes=7).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        assert ours.forward_features(x).shape == (2, 2048 if name == "resnet50" else 512 if name == "resnet18" else 1024)


def test_resnet18_d2l_by_hand():
    model = models.create("resnet18_d2l")
    assert (model.input_size, model.in_channels) == (96, 1)
    # stem conv with bias; stage 1: 4 convs 64→64; stages 2–4: 4 convs each plus a bare 1×1 projection; BN γ, β
    convs = 64 * 49 + 64 + 4 * (64 * 64 * 9 + 64)
    bns = 2 * 64 + 4 * 2 * 64
    for c_in, c in ((64, 128), (128, 256), (256, 512)):
        convs += (c_in * c * 9 + c) + 3 * (c * c * 9 + c) + (c_in * c + c)
        bns += 4 * 2 * c
    assert count(model) == convs + bns + 512 * 10 + 10
    assert model.layer2[0].downsample is not None and len(model.layer2[0].downsample) == 1  # no BN on the shortcut
    assert model.conv1.bias is not None and model(torch.zeros(2, 1, 96, 96)).shape == (2, 10)


def test_densenet_d2l_by_hand():
    model = models.create("densenet_d2l")
    total, c = 64 * 49 + 64 + 2 * 64, 64  # stem conv (bias) and BN
    for block in range(4):
        for _ in range(4):
            total += 2 * c + (c * 32 * 9 + 32)  # BN, 3×3 conv to 32 maps
            c += 32
        if block < 3:
            total += 2 * c + (c * (c // 2) + c // 2)  # transition: BN, 1×1 conv
            c //= 2
    total += 2 * c + c * 10 + 10  # final BN and the classifier
    assert count(model) == total and model.forward_features(torch.zeros(1, 1, 96, 96)).shape == (1, c)


@pytest.mark.parametrize("preset,name", [("resnet", "resnet18_d2l"), ("densenet", "densenet_d2l")])
def test_digits_presets_build_a_model_that_fits_the_pipeline(preset, name):
    config = resolve(preset, {}, [])
    assert config.model.name == name and config.data.spec == "digits"
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    model = models.create(name, **config.model.options).eval()
    assert (model.input_size, model.in_channels) == (pipe.crop, pipe.channels) == (32, 1)
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
