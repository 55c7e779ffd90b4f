"""The family around AlexNet: LeNet, VGG, NiN, GoogLeNet, alexnet_bn (docs/FAMILY.md).

Parameter counts are checked against torchvision where it has the network, and otherwise against
sums written out here from the layer shapes. Counting is done on PyTorch's "meta" device (shapes
without storage), so VGG's 144 M weights cost nothing; outputs are compared on real tensors.
"""

import json

import pytest
import torch
import torchvision

from alexnet import models
from alexnet.cli import main
from alexnet.models.googlenet import AUX_LOSS_WEIGHT, INCEPTIONS, GoogLeNetOutputs
from alexnet.models.lenet import ScaledTanh

FAMILY = ["alexnet_bn", "lenet", "lenet_d2l", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_d2l",
          "nin", "nin_d2l", "googlenet", "googlenet_d2l"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(build, *args, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return build(*args, **kwargs)


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {r.name: r.output_shape for r in models.summarize(model).layers}


def test_every_family_member_is_registered_with_its_interface():
    for name in FAMILY:
        assert name in models.names()
        model = on_meta(models.create, name)
        assert model.name == name
        assert isinstance(model.input_size, int) and model.in_channels in (1, 3)
        assert "num_classes" in models.entry(name).options()
        assert callable(model.forward_features)


# -- parameter counts against torchvision ------------------------------------------------------

@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_counts_equal_torchvision(depth, batch_norm):
    theirs = on_meta(getattr(torchvision.models, f"vgg{depth}{'_bn' if batch_norm else ''}"), weights=None)
    ours = on_meta(models.create, f"vgg{depth}", batch_norm=batch_norm)
    assert count(ours) == count(theirs)
    assert len(ours.state_dict()) == len(theirs.state_dict())  # BN buffers too


def test_vgg_table_2_of_the_paper():
    # Simonyan & Zisserman Table 2: 133, 133, 138, 144 million parameters for A, B, D, E
    got = [round(count(on_meta(models.create, f"vgg{d}")) / 1e6) for d in (11, 13, 16, 19)]
    assert got == [133, 133, 138, 144]


def test_googlenet_counts_equal_torchvision():
    ours = on_meta(models.create, "googlenet")
    theirs = on_meta(torchvision.models.googlenet, weights=None, aux_logits=False, init_weights=False)
    assert count(ours) == count(theirs) == 6_624_904
    with_aux = on_meta(models.create, "googlenet", aux_logits=True)
    theirs_aux = on_meta(torchvision.models.googlenet, weights=None, aux_logits=True, init_weights=False)
    assert count(with_aux) == count(theirs_aux) == 13_004_888


# -- outputs equal to torchvision with the same weights ----------------------------------------

@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg11_equals_torchvision_with_shared_weights(batch_norm):
    theirs = (torchvision.models.vgg11_bn if batch_norm else torchvision.models.vgg11)(weights=None).eval()
    ours = on_meta(models.create, "vgg11", batch_norm=batch_norm).eval()  # no 133 M-weight init to pay for
    rename = {v: k for k, v in ours.torchvision_names().items()}
    state = {f"{rename[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, assign=True)  # strict: every tensor has a place and a matching shape
    x = torch.randn(1, 3, 64, 64)  # AdaptiveAvgPool2d(7) makes any size ≥ 32 work, and 64 is cheap
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_googlenet_equals_torchvision_with_shared_weights_and_heads():
    theirs = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    ours = on_meta(models.create, "googlenet", aux_logits=True)
    ours.load_state_dict(theirs.state_dict(), assign=True)  # same keys: conv1.conv.weight, inception3a.branch2.1.bn...
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
        ours.train(), theirs.train()  # BN on batch statistics; dropout with the same random stream
        torch.manual_seed(3)
        a = ours(x)
        torch.manual_seed(3)
        b = theirs(x)
    assert isinstance(a, GoogLeNetOutputs) and a._fields == b._fields == ("logits", "aux_logits2", "aux_logits1")
    for mine, tv in zip(a, b):
        torch.testing.assert_close(mine, tv)


# -- GoogLeNet ---------------------------------------------------------------------------------

def test_googlenet_returns_a_tensor_except_when_training_with_heads():
    x = torch.randn(2, 1, 96, 96)
    plain = models.create("googlenet_d2l", num_classes=5)
    assert isinstance(plain.train()(x), torch.Tensor)
    heads = models.create("googlenet_d2l", num_classes=5, aux_logits=True)
    out = heads.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert out.logits.shape == out.aux_logits1.shape == out.aux_logits2.shape == (2, 5)
    with torch.no_grad():
        assert isinstance(heads.eval()(x), torch.Tensor)
    assert AUX_LOSS_WEIGHT == 0.3


# Table 1 of Szegedy et al.: ops (multiply-accumulates, millions) of the stem and of each module
TABLE_1_OPS = {"conv1": 118, "conv2+conv3": 360, "inception3a": 128, "inception3b": 304, "inception4a": 73,
               "inception4b": 88, "inception4c": 100, "inception4d": 119, "inception4e": 170, "inception5b": 71}


def test_googlenet_paper_form_matches_table_1():
    s = models.summarize(on_meta(models.create, "googlenet", form="paper"))
    macs: dict[str, int] = {}
    for r in s.layers:
        top = r.name.split(".")[0]
        macs[top] = macs.get(top, 0) + r.macs
    macs["conv2+conv3"] = macs["conv2"] + macs["conv3"]
    for module, table in TABLE_1_OPS.items():
        assert abs(macs[module] / 1e6 - table) <= 1, module
    # 5a: Table 1 prints 54M ops and 1072K parameters, but its own widths give 1018K weights and 51M;
    # our 5a has the widths, the same as 4e's on 832 input maps
    assert round(macs["inception5a"] / 1e6) == 51
    rows = {r.name: r for r in s.layers}
    assert rows["inception3a.branch3.1.conv"].params == 16 * 32 * 5 * 5 + 32  # a true 5×5
    assert "norm1" in rows and "norm2" in rows and "conv1.bn" not in rows
    assert rows["maxpool4"].output_shape == (832, 7, 7)


def inception_params(in_ch: int, widths: tuple[int, ...], k5: int, bias: bool) -> int:
    c1, c3r, c3, c5r, c5, proj = widths
    weights = in_ch * c1 + in_ch * c3r + c3r * c3 * 9 + in_ch * c5r + c5r * c5 * k5 * k5 + in_ch * proj
    return weights + (c1 + c3r + c3 + c5r + c5 + proj) * (1 if bias else 0)


def test_googlenet_d2l_count_and_shapes_by_hand():
    total, in_ch = 0, 192
    for widths in INCEPTIONS.values():
        total += inception_params(in_ch, widths, 5, bias=True)
        in_ch = widths[0] + widths[2] + widths[4] + widths[5]
    stem = (1 * 64 * 49 + 64) + (64 * 64 + 64) + (64 * 192 * 9 + 192)
    head = 1024 * 10 + 10
    model = on_meta(models.create, "googlenet_d2l")
    assert count(model) == stem + total + head == 5_977_530
    got = shapes(model)  # d2l's printed shapes for b1..b5 at 96×96
    assert got["maxpool1"] == (64, 24, 24)
    assert got["maxpool2"] == (192, 12, 12)
    assert got["maxpool3"] == (480, 6, 6)
    assert got["maxpool4"] == (832, 3, 3)
    assert got["fc"] == (10,)


# -- LeNet -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet", "lenet_d2l"])
def test_lenet_count_and_shapes(name):
    model = models.create(name)
    # C1 6·(5·5·1)+6, C3 16·(5·5·6)+16 (full connection), C5 120·400+120, F6 84·120+84, output 10·84+10
    assert count(model) == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    got = shapes(model)
    assert got["conv1"] == (6, 28, 28) and got["pool1"] == (6, 14, 14)
    assert got["conv2"] == (16, 10, 10) and got["pool2"] == (16, 5, 5)
    assert got["fc4"] == (84,) and got["fc5"] == (10,)


def test_lenet_forms_and_options():
    paper, d2l = models.create("lenet"), models.create("lenet_d2l")
    assert (paper.input_size, paper.conv1.padding) == (32, (0, 0))
    assert (d2l.input_size, d2l.conv1.padding) == (28, (2, 2))
    assert isinstance(paper.act1, ScaledTanh) and isinstance(d2l.act1, torch.nn.Sigmoid)
    assert isinstance(paper.pool1, torch.nn.AvgPool2d)
    modern = models.create("lenet_d2l", activation="relu", pooling="max")
    assert isinstance(modern.act1, torch.nn.ReLU) and isinstance(modern.pool1, torch.nn.MaxPool2d)
    f = ScaledTanh()(torch.tensor([-1.0, 0.0, 1.0]))  # LeCun 1998 App. A: f(±1) = ±1
    torch.testing.assert_close(f, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    # Appendix C's init: U(−2.4/F, 2.4/F) with F the fan-in (25 for C1)
    assert paper.conv1.weight.abs().max() <= 2.4 / 25
    with pytest.raises(ValueError, match="activation='gelu' is not one of"):
        models.create("lenet", activation="gelu")


# -- NiN ---------------------------------------------------------------------------------------

def test_nin_counts_by_hand():
    def block(in_ch, widths, k):
        a, b, c = widths
        return (in_ch * a * k * k + a) + (a * b + b) + (b * c + c)

    first3 = lambda in_ch: block(in_ch, (96,) * 3, 11) + block(96, (256,) * 3, 5) + block(256, (384,) * 3, 3)
    assert count(models.create("nin")) == first3(3) + block(384, (1024, 1024, 1000), 3) == 7_595_176
    assert count(models.create("nin_d2l")) == first3(1) + block(384, (10, 10, 10), 3) == 1_992_166


def test_nin_shapes_caffe_rounds_up_d2l_rounds_down():
    caffe, d2l = shapes(on_meta(models.create, "nin")), shapes(on_meta(models.create, "nin_d2l"))
    assert [caffe[f"pool{i}"][1] for i in (1, 2, 3)] == [27, 13, 6]
    assert [d2l[f"pool{i}"][1] for i in (1, 2, 3)] == [26, 12, 5]  # d2l's printed 26, 12, 5
    assert d2l["cccp8"] == (10, 5, 5) and d2l["avgpool"] == (10, 1, 1)
    assert "fc" not in " ".join(caffe)  # no fully-connected layer at all


def test_nin_logits_are_the_average_of_the_class_maps():
    model = models.create("nin_d2l", num_classes=7).eval()
    x = torch.randn(2, 1, 224, 224)
    with torch.no_grad():
        maps = model.forward_maps(x)
        expected = torch.relu(model.cccp8(maps)).mean(dim=(2, 3))
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model.forward_features(x), maps.mean(dim=(2, 3)))
    assert model.forward_features(x).shape == (2, 7)


# -- VGG, d2l form -----------------------------------------------------------------------------

def test_vgg11_d2l_count_by_hand_and_shapes():
    widths = [16, 32, 64, 64, 128, 128, 128, 128]  # VGG-11 ÷ 4
    convs = sum(i * o * 9 + o for i, o in zip([1, *widths], widths))
    fcs = (128 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    model = on_meta(models.create, "vgg11_d2l")
    assert count(model) == convs + fcs == 43_093_322
    got = shapes(model)
    assert got["pool5"] == (128, 7, 7) and "avgpool" not in got  # d2l flattens 7×7 straight into fc6
    assert got["fc7"] == (4096,)
    with pytest.raises(ValueError, match="ratio=5"):
        models.create("vgg11_d2l", ratio=5)


def test_vgg_input_size_and_channels_are_options_of_the_imagenet_forms():
    """torchvision's VGGs take any side from 32 (the adaptive pool); the option tells the data pipeline."""
    model = on_meta(models.create, "vgg16", num_classes=10, in_channels=1, input_size=64)
    assert (model.input_size, model.in_channels) == (64, 1)
    assert count(model) == count(on_meta(models.create, "vgg16", num_classes=10, in_channels=1))  # the pool keeps fc6 at 512·7·7
    assert shapes(model)["pool5"] == (512, 2, 2) and shapes(model)["avgpool"] == (512, 7, 7)
    with pytest.raises(ValueError, match="input_size=16 is too small for 5 VGG blocks"):
        models.create("vgg11", input_size=16)


def test_vgg_layer_names_follow_caffe():
    model = on_meta(models.create, "vgg16", batch_norm=True)
    keys = {k.rpartition(".")[0] for k in model.state_dict()}
    assert {"conv1_1", "bn1_1", "conv5_3", "bn5_3", "fc6", "fc7", "fc8"} <= keys
    assert "conv5_4" not in keys and "conv5_4" in {k.rpartition(".")[0] for k in on_meta(models.create, "vgg19").state_dict()}
    assert model.torchvision_names()["fc8"] == "classifier.6"


# -- alexnet_bn --------------------------------------------------------------------------------

def test_alexnet_bn_replaces_lrn_with_batch_norm():
    model = on_meta(models.create, "alexnet_bn")
    assert count(model) == 60_965_224 + 2 * (96 + 256 + 384 + 384 + 256) == 60_967_976
    assert not any(n.startswith("norm") for n, _ in model.named_children())
    assert model.conv_order[:4] == ["conv1", "bn1", "relu1", "pool1"]  # BN after the conv, before the ReLU
    rows = {r.name: r for r in models.summarize(model).layers}
    assert rows["bn5"].params == 2 * 256 and rows["bn1"].output_shape == (96, 55, 55)
    assert models.AlexNetConfig.from_dict(model.config.to_dict()).batch_norm is True


def test_batch_norm_is_a_flag_of_the_small_net_for_the_norm_study():
    arms = {
        "lrn": models.create("alexnet_small", num_classes=10),
        "batch": models.create("alexnet_small", num_classes=10, lrn=False, batch_norm=True),
        "none": models.create("alexnet_small", num_classes=10, lrn=False),
    }
    kinds = {arm: {type(m).__name__ for m in model.modules()} for arm, model in arms.items()}
    assert "LocalResponseNorm" in kinds["lrn"] and "BatchNorm2d" not in kinds["lrn"]
    assert "BatchNorm2d" in kinds["batch"] and "LocalResponseNorm" not in kinds["batch"]
    assert not {"BatchNorm2d", "LocalResponseNorm"} & kinds["none"]


def test_batch_norm_at_identity_statistics_is_the_plain_net():
    """With γ=1, β=0, running mean 0, variance 1 and ε=0, BN in eval mode is the identity."""
    plain = models.create("alexnet_small", num_classes=10, lrn=False).eval()
    bn = models.create("alexnet_small", num_classes=10, lrn=False, batch_norm=True).eval()
    missing = bn.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("bn") for k in missing)
    for m in bn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 0.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bn(x), plain(x))


def test_two_tower_placement_refuses_batch_norm():
    with pytest.raises(ValueError, match="BatchNorm"):
        models.create("alexnet", batch_norm=True, devices=("cpu", "cpu"))


# -- every small member: shapes, features, eval ------------------------------------------------

@pytest.mark.parametrize("name,features", [("lenet", 84), ("lenet_d2l", 84), ("nin_d2l", 5), ("googlenet_d2l", 1024),
                                           ("vgg11_d2l", 4096)])
def test_features_and_logits(name, features):
    model = models.create(name, num_classes=5).eval()
    x = torch.randn(2, model.in_channels, model.input_size, model.input_size)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, features)
        assert model(x).shape == (2, 5)


def test_wrong_input_size_names_the_expected_one():
    with pytest.raises(ValueError, match="28×28"):
        models.create("lenet_d2l")(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="224×224"):
        models.create("vgg11_d2l")(torch.zeros(1, 1, 96, 96))


def test_googlenet_form_is_checked():
    with pytest.raises(ValueError, match="form='caffe' is not one of torchvision, paper"):
        models.create("googlenet", form="caffe")


# -- CLI ---------------------------------------------------------------------------------------

def test_models_lists_the_family(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in FAMILY:
        assert f"\n{name} " in out
    assert "132,863,336" in out and "6,624,904" in out and "60,967,976" in out


@pytest.mark.parametrize("name,params", [("googlenet", 6_624_904), ("vgg19", 143_667_240), ("lenet", 61_706)])
def test_summary_json_of_family_members(capsys, name, params):
    assert main(["summary", name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == params
    assert sum(layer["params"] for layer in data["layers"]) == params


def test_summary_of_too_small_input_is_a_one_line_error(capsys):
    assert main(["summary", "vgg11", "--input-size", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexnet: error: vgg11 cannot take 16×16 input") and "\n" not in err
