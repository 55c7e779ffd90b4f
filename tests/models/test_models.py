"""The model zoo: parameter counts, shapes, LRN conventions, towers, init, torchvision parity."""

import math

import pytest
import torch
import torchvision

from alexnet import models
from alexnet.models import LocalResponseNorm
from alexnet.tools.interop.torchvision import from_torchvision, to_torchvision

PARAMS = {
    "alexnet": 60_965_224,  # reference §1, bvlc_alexnet and CaffeNet too
    "bvlc_alexnet": 60_965_224,
    "caffenet": 60_965_224,
    "alexnet_owt": 61_100_840,  # torchvision
}


@pytest.mark.parametrize("name,count", PARAMS.items())
def test_parameter_counts_at_1000_classes(name, count):
    model = models.create(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_d2l_parameter_count_at_10_classes():
    assert sum(p.numel() for p in models.create("alexnet_d2l", num_classes=10).parameters()) == 46_764_746


def test_one_tower_is_half_width_and_no_groups():
    one = models.create("alexnet", towers=1)
    assert one.conv2.weight.shape == (128, 48, 5, 5)
    assert one.fc6.weight.shape == (2048, 128 * 6 * 6)
    two = models.create("alexnet")
    assert sum(p.numel() for p in one.parameters()) < sum(p.numel() for p in two.parameters()) / 2


def test_alexnet_layer_shapes_at_227():
    s = models.summarize(models.create("alexnet"))
    shapes = {r.name: r.output_shape for r in s.layers}
    assert shapes["conv1"] == (96, 55, 55)
    assert shapes["pool1"] == (96, 27, 27)
    assert shapes["conv2"] == (256, 27, 27)
    assert shapes["pool2"] == (256, 13, 13)
    assert shapes["conv3"] == (384, 13, 13)
    assert shapes["conv4"] == (384, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6)
    assert shapes["fc6"] == shapes["fc7"] == (4096,)
    assert shapes["fc8"] == (1000,)
    assert s.total_params == 60_965_224
    assert round(s.total_macs / 1e9, 3) == 0.724
    # a training image: forward, every input gradient but the image's (conv1: 105,415,200), every weight gradient
    assert s.training_macs == 3 * s.total_macs - 105_415_200 and round(2 * s.training_macs / 1e9, 2) == 4.14
    # §3.5's neuron counts for conv1..conv5
    neurons = [math.prod(shapes[f"conv{i}"]) for i in range(1, 6)]
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264]


def test_grouped_weights_shaped_as_caffe_stores_them():
    sd = models.create("alexnet").state_dict()
    assert sd["conv2.weight"].shape == (256, 48, 5, 5)
    assert sd["conv4.weight"].shape == (384, 192, 3, 3)
    assert sd["conv5.weight"].shape == (256, 192, 3, 3)
    assert sd["conv3.weight"].shape == (384, 256, 3, 3)
    assert list(sd) == [f"{l}.{k}" for l in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"] for k in ["weight", "bias"]]


def test_owt_layer_shapes_at_224():
    shapes = {r.name: r.output_shape for r in models.summarize(models.create("alexnet_owt")).layers}
    assert shapes["conv1"] == (64, 55, 55)
    assert shapes["pool1"] == (64, 27, 27)
    assert shapes["conv2"] == (192, 27, 27)
    assert shapes["pool2"] == (192, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6)
    assert shapes["avgpool"] == (256, 6, 6)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="227"):
        models.create("alexnet")(torch.zeros(1, 3, 224, 224))


def lrn_reference(x: torch.Tensor, n: int, alpha: float, beta: float, k: float, groups: int = 1) -> torch.Tensor:
    """The formula of §3.3 in float64, term by term; alpha here is α' (what multiplies each a_j²)."""
    x = x.double()
    out = torch.empty_like(x)
    c = x.shape[1]
    per = c // groups
    for i in range(c):
        g0 = (i // per) * per
        lo, hi = max(g0, i - n // 2), min(g0 + per - 1, i + n // 2)
        s = (x[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, i] = x[:, i] / (k + alpha * s) ** beta
    return out


@pytest.mark.parametrize("convention,alpha_per_term", [("as_run", 1e-4 / 5), ("as_printed", 1e-4)])
@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_matches_float64_formula(convention, alpha_per_term, groups):
    x = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 30  # large activations so α matters
    lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0, convention=convention, groups=groups)
    ref = lrn_reference(x, 5, alpha_per_term, 0.75, 2.0, groups)
    torch.testing.assert_close(lrn(x), ref, rtol=1e-10, atol=1e-12)
    # the two conventions really differ at this scale
    other = lrn_reference(x, 5, 1e-4 if convention == "as_run" else 1e-4 / 5, 0.75, 2.0, groups)
    assert (lrn(x) - other).abs().max() > 1e-3


def test_lrn_default_matches_pytorch_module():
    x = torch.randn(2, 96, 7, 7) * 10
    torch.testing.assert_close(LocalResponseNorm()(x), torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x))


def test_two_towers_equal_grouped_model():
    torch.manual_seed(1)
    grouped = models.create("alexnet", num_classes=10, init="kaiming").eval()
    placed = models.TwoTowerAlexNet(grouped, ("cpu", "cpu")).eval()
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        torch.testing.assert_close(placed(x), grouped(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(placed.forward_features(x), grouped.forward_features(x), rtol=1e-4, atol=1e-5)


def test_two_towers_through_the_registry():
    model = models.create("alexnet", num_classes=5, devices=("cpu", "cpu"))
    assert isinstance(model, models.TwoTowerAlexNet)
    assert model(torch.randn(1, 3, 227, 227)).shape == (1, 5)


def test_two_towers_refuse_lrn_across_towers():
    with pytest.raises(ValueError, match="lrn_groups"):
        models.TwoTowerAlexNet(models.create("bvlc_alexnet"), ("cpu", "cpu"))


def test_paper_init_statistics():
    model = models.create("alexnet")
    for name, layer in model.weighted_layers().items():
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 1e-3, name
        assert w.std().item() == pytest.approx(0.01, rel=0.05), name
        expected_bias = 1.0 if name in {"conv2", "conv4", "conv5", "fc6", "fc7"} else 0.0
        assert torch.all(layer.bias == expected_bias), name


def test_caffe_fillers():
    bvlc = models.create("bvlc_alexnet")
    assert bvlc.fc6.weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert torch.all(bvlc.conv2.bias == 0.1) and torch.all(bvlc.conv1.bias == 0)
    caffenet = models.create("caffenet")
    assert torch.all(caffenet.fc7.bias == 1.0)
    assert caffenet.conv_order[:4] == ["conv1", "relu1", "pool1", "norm1"]  # pool before LRN
    assert caffenet.norm1.k == 1.0 and models.create("alexnet").norm1.k == 2.0


def test_owt_equals_torchvision_with_shared_weights():
    ours = models.create("alexnet_owt").eval()
    theirs = torchvision.models.alexnet(weights=None).eval()
    from_torchvision(theirs.state_dict(), ours)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    # and back again
    fresh = torchvision.models.alexnet(weights=None)
    fresh.load_state_dict(to_torchvision(ours))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), theirs(x))


def test_torchvision_import_names_the_wrong_tensor():
    from alexnet.errors import AlexNetError

    sd = torchvision.models.alexnet(weights=None, num_classes=10).state_dict()
    with pytest.raises(AlexNetError, match=r"fc8.weight.*\(10, 4096\).*\(1000, 4096\)"):
        from_torchvision(sd, models.create("alexnet_owt"))


def test_ablation_options_change_the_network():
    assert isinstance(models.create("alexnet", activation="tanh").relu1, torch.nn.Tanh)
    assert not hasattr(models.create("alexnet", lrn=False), "norm1")
    assert models.create("alexnet", lrn_convention="as_printed").norm1.alpha_per_term == 1e-4
    nonover = models.create("alexnet", pooling="non-overlapping")
    assert nonover.pool1.kernel_size == 2 and nonover.fc6.in_features == 9216  # same sizes, §3.4
    assert not hasattr(models.create("alexnet", dropout=0.0), "drop6")
    assert models.create("alexnet", dropout=0.3).drop6.p == 0.3


def test_unknown_model_or_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: alexnet, "):
        models.create("alexnet9")
    with pytest.raises(ValueError, match=r"unknown alexnet option 'lrm' \(did you mean 'lrn'\?\); valid:.*lrn"):
        models.create("alexnet", lrm=False)
    with pytest.raises(ValueError, match=r"activation='gelu' is not one of relu, tanh \(did you mean 'relu'\?\)$"):
        models.create("alexnet", activation="gelu")
    with pytest.raises(ValueError, match=r"activation='Tanh' is not one of relu, tanh \(did you mean 'tanh'\?\)$"):
        models.create("alexnet", activation="Tanh")


def test_forward_features_is_the_fc7_code():
    model = models.create("alexnet_small", num_classes=7).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (3, 512)
    assert (feats >= 0).all()  # after relu7
    torch.testing.assert_close(model.fc8(feats), model(x))


@pytest.mark.parametrize("size", [28, 32, 64])
def test_small_net_takes_28_to_64_px(size):
    model = models.create("alexnet_small", input_size=size, in_channels=1)
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_paper_dropout_keeps_survivors_unscaled_and_scales_at_test():
    """§4.2: training zeroes outputs without rescaling the rest; test multiplies every output by 1 − p."""
    from alexnet.models.layers import PaperDropout

    drop = PaperDropout(0.5)
    x = torch.rand(64, 4096) + 0.5
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # survivors pass unchanged (nn.Dropout would double them)
    assert 0.45 < kept.float().mean().item() < 0.55
    torch.manual_seed(3)
    assert torch.equal(kept, torch.nn.Dropout(0.5)(x) != 0)  # the same mask as nn.Dropout draws
    assert torch.equal(drop.eval()(x), x * 0.5)


def test_dropout_scaling_per_variant():
    """The paper's net uses §4.2's scaling; Caffe's, torchvision's, d2l's and the small net keep inverted dropout."""
    from alexnet.models.layers import PaperDropout

    paper = models.create("alexnet")
    assert isinstance(paper.drop6, PaperDropout) and isinstance(paper.drop7, PaperDropout)
    assert isinstance(models.create("alexnet_bn").drop7, PaperDropout)
    for name in ("bvlc_alexnet", "caffenet", "alexnet_owt", "alexnet_d2l", "alexnet_small"):
        assert type(models.create(name).drop7) is torch.nn.Dropout, name
    inverted = models.create("alexnet", dropout_scaling="inverted")
    assert type(inverted.drop6) is torch.nn.Dropout
    # Same weights, eval mode: halving fc7's and fc8's weights turns one into the other.
    inverted.load_state_dict(paper.state_dict())
    with torch.no_grad():
        inverted.fc7.weight.mul_(0.5)
        inverted.fc8.weight.mul_(0.5)
    x = torch.randn(2, 3, 227, 227)
    torch.testing.assert_close(inverted.eval()(x), paper.eval()(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="dropout_scaling='x2' is not one of paper, inverted"):
        models.create("alexnet", dropout_scaling="x2")
