"""Krizhevsky's cuda-convnet: the same-map norm and the locally connected layer against float64 loop
references, alexnet_cudaconvnet's geometry and towers, and the CIFAR-10 nets of §3 on CIFAR-10 files
written in the real format."""

import json

import numpy as np
import pytest
import torch
from helpers import cifar_folder

from alexnet import models
from alexnet.data.sources import open_dataset
from alexnet.data.transforms import pipeline
from alexnet.models.cudaconvnet_layers import LocallyConnected2d, SameMapResponseNorm, ceil_extra, ceil_output_size
from alexnet.models.lrn import LocalResponseNorm
from alexnet.tools.ablate import AblationOptions, check_models, plan
from alexnet.training.config import resolve


def same_map_reference(x: torch.Tensor, size: int, scale: float, power: float, min_div: float) -> torch.Tensor:
    """conv_util.cu's kCNorm_fewfilter in float64, pixel by pixel: the window starts at −size/2 (C
    division) and is clipped to the image; scale is divided by size² as layer.py does."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    start = -(size // 2)
    for y in range(h):
        for xx in range(w):
            y0, y1 = max(0, y + start), min(h, y + start + size)
            x0, x1 = max(0, xx + start), min(w, xx + start + size)
            s = (x[:, :, y0:y1, x0:x1] ** 2).sum(dim=(2, 3))
            out[:, :, y, xx] = x[:, :, y, xx] * (min_div + scale / size**2 * s) ** (-power)
    return out


@pytest.fixture
def lrn_kernel():
    """The LRN kernel (which the same-map norm shares) for one test, put back after it."""
    from alexnet import runtime

    before = runtime.lrn_kernel()
    yield runtime.set_lrn_kernel
    runtime.set_lrn_kernel(before)


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
@pytest.mark.parametrize("size", [3, 4, 5])
def test_same_map_norm_matches_the_float64_formula_and_its_gradient(size, kernel, lrn_kernel):
    """The closed-form backward, with the eager and the compiled passes, against the formula's autograd
    gradient (an even size makes the window, and so its transpose, asymmetric)."""
    lrn_kernel(kernel)
    x = (torch.randn(2, 3, 7, 6, dtype=torch.float64) * 20).requires_grad_()
    layer = SameMapResponseNorm(size, 0.001, 0.75, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.plain(x), rtol=1e-12, atol=1e-12)  # inference: the eager passes
    ref = same_map_reference(x, size, 0.001, 0.75, 1.0)
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert (out - x).abs().max() > 1e-2  # the norm really acts at this scale
    g = torch.randn_like(ref)
    grad, = torch.autograd.grad(out, x, g)
    grad_ref, = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)
    small = (torch.randn(1, 2, 5, 5, dtype=torch.float64) * 20).requires_grad_()
    assert torch.autograd.gradcheck(layer, (small,))  # against finite differences of the formula


def test_same_map_norm_keeps_fp16_finite():
    x = torch.full((1, 1, 5, 5), 300.0, dtype=torch.float16)  # 300² overflows fp16
    out = SameMapResponseNorm()(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    leaf = x.clone().requires_grad_()
    SameMapResponseNorm()(leaf).float().sum().backward()
    assert leaf.grad.dtype == torch.float16 and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_same_map_norm_in_bfloat16_channels_last_is_within_its_tolerance(kernel, lrn_kernel):
    lrn_kernel(kernel)
    x = (torch.randn(2, 16, 9, 9, dtype=torch.float64) * 40).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    exact = x.clone().requires_grad_()
    ref = same_map_reference(exact, 5, 0.001, 0.75, 1.0)
    (grad_ref,) = torch.autograd.grad(ref, exact, g)
    low = x.bfloat16().requires_grad_()
    out = SameMapResponseNorm()(low)
    (grad,) = torch.autograd.grad(out, low, g.bfloat16())
    assert out.dtype == grad.dtype == torch.bfloat16 and grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), ref.detach(), rtol=2e-2, atol=1e-1)
    torch.testing.assert_close(grad.double(), grad_ref, rtol=3e-2, atol=3e-2)


def test_same_map_norm_exports_the_plain_formula():
    layer = SameMapResponseNorm()
    x = torch.randn(1, 4, 6, 6) * 20
    traced = torch.jit.trace(layer, x)
    assert "avg_pool2d" in str(traced.graph)
    torch.testing.assert_close(traced(x), layer(x))


def local_reference(x: torch.Tensor, layer: LocallyConnected2d) -> torch.Tensor:
    """Every output unit as its own dot product, in float64, with zeros outside the image."""
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    padded = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 2 * p + layer.extra, x.shape[3] + 2 * p + layer.extra, dtype=x.dtype)
    padded[:, :, p:p + x.shape[2], p:p + x.shape[3]] = x
    side = layer.output_size
    out = torch.empty(x.shape[0], layer.out_channels, side, side, dtype=x.dtype)
    for o in range(layer.out_channels):
        for y in range(side):
            for xx in range(side):
                patch = padded[:, :, y * s:y * s + k, xx * s:xx * s + k]
                out[:, o, y, xx] = (patch * layer.weight[o, y, xx]).sum(dim=(1, 2, 3)) + layer.bias[o, y, xx]
    return out


@pytest.mark.parametrize("stride,padding,size", [(1, 1, 6), (2, 0, 7), (2, 1, 8)])
def test_locally_connected_layer_matches_a_float64_loop(stride, padding, size):
    layer = LocallyConnected2d(3, 4, 3, size, stride=stride, padding=padding, init_std=0.5).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    assert layer.output_size == ceil_output_size(size, 3, stride, padding)
    torch.testing.assert_close(layer(x), local_reference(x, layer), rtol=1e-12, atol=1e-12)


def test_locally_connected_weights_are_unshared():
    layer = LocallyConnected2d(1, 1, 3, 5, padding=1)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 2, 2, 0, 1, 1] = 1.0  # only the centre position sees its centre pixel
    out = layer(torch.ones(1, 1, 5, 5))
    assert out[0, 0, 2, 2] == 1.0 and out.sum() == 1.0  # a shared filter would give 25
    assert sum(p.numel() for p in layer.parameters()) == 5 * 5 * 9 + 5 * 5
    with pytest.raises(ValueError, match="built for 1×5×5"):
        layer(torch.ones(1, 1, 6, 6))


def test_ceil_rule_of_cuda_convnet():
    assert ceil_output_size(224, 11, 4, 0) == 55 and ceil_extra(224, 11, 4, 0) == 3
    assert ceil_output_size(227, 11, 4, 0) == 55 and ceil_extra(227, 11, 4, 0) == 0
    assert ceil_output_size(32, 3, 2, 0) == 16  # cuda-convnet's 3/2 pooling of 32; PyTorch's floor gives 15


# -- alexnet_cudaconvnet ------------------------------------------------------------------------

def shapes(model):
    return {r.name: r.output_shape for r in models.summarize(model).layers}


def test_cudaconvnet_geometry_and_parameter_count():
    model = models.create("alexnet_cudaconvnet")
    s = models.summarize(model)
    got = {r.name: r.output_shape for r in s.layers}
    assert model.input_size == 224 and s.total_params == 60_965_224
    assert got["pad1"] == (3, 227, 227) and got["conv1"] == (96, 55, 55)  # ceil rule: 55 from 224, no padding
    assert [got[n][1] for n in ("pool1", "pool2", "conv5", "pool5")] == [27, 13, 13, 6]
    assert s.total_macs == models.summarize(models.create("alexnet")).total_macs
    order = model.conv_order
    assert order[:5] == ["pad1", "conv1", "norm1", "relu1", "pool1"]  # cmrnorm on conv1 before its ReLU
    assert order[5:10] == ["conv2", "relu2", "norm2", "rnorm2", "pool2"]
    assert (model.norm1.k, model.norm1.alpha_per_term, model.norm1.groups) == (2.0, 1e-4 / 5, 2)
    assert (model.rnorm2.size, model.rnorm2.scale, model.rnorm2.min_div) == (5, 1e-3, 1.0)
    assert type(model.drop6) is torch.nn.Dropout  # type=dropout: inverted
    assert model.conv3.weight.std().item() == pytest.approx(0.03, rel=0.05)
    assert model.conv1.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(model.conv4.bias == 1) and torch.all(model.conv3.bias == 0)


def test_cudaconvnet_padding_is_zeros_past_the_image():
    """224 with the ceil rule is the 227 net reading three zero rows and columns at the bottom/right."""
    model = models.create("alexnet_cudaconvnet", num_classes=3).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.conv1(torch.nn.functional.pad(x, (0, 3, 0, 3))), model.conv1(model.pad1(x)))
    with pytest.raises(ValueError, match="224×224"):
        model(torch.randn(1, 3, 227, 227))


def test_cudaconvnet_two_towers_equal_grouped_model():
    torch.manual_seed(2)
    grouped = models.create("alexnet_cudaconvnet", num_classes=10).eval()
    placed = models.TwoTowerAlexNet(grouped, ("cpu", "cpu")).eval()
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        torch.testing.assert_close(placed(x), grouped(x), rtol=1e-4, atol=1e-5)


def test_cudaconvnet_config_round_trips_with_per_layer_norm_positions():
    config = models.create("alexnet_cudaconvnet").config
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.norm_positions()[0] == "before_relu"
    with pytest.raises(ValueError, match="norm_position='sideways'"):
        models.AlexNetConfig(norm_position=("sideways",) * 5)


def test_cudaconvnet_preset():
    config = resolve("cudaconvnet", {}, [])
    assert config.model.name == "alexnet_cudaconvnet" and (config.batch_size, config.epochs) == (128, 90)
    o = config.optim
    assert (o.lr, o.momentum, o.weight_decay, o.bias_decay, o.bias_lr_mult) == (0.02, 0.9, 5e-4, False, 2.0)
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    assert (pipe.crop, pipe.lighting, pipe.flip) == (224, 0.1, True)


# -- the CIFAR-10 nets of §3 ---------------------------------------------------------------------

def test_conv_local_nets_follow_their_cfg_files():
    net11 = models.create("cifar_conv_local")
    got = shapes(net11)
    assert got["pool1"] == (64, 12, 12) and got["pool2"] == (64, 6, 6)  # 24 → 12 → 6 by the ceil rule
    assert got["local3"] == (64, 6, 6) and got["local4"] == (32, 6, 6)
    assert [n for n in net11.order if "neuron" not in n] == ["conv1", "pool1", "rnorm1", "conv2", "rnorm2", "pool2", "local3", "local4"]
    assert isinstance(net11.rnorm1, LocalResponseNorm) and (net11.rnorm1.size, net11.rnorm1.k) == (9, 1.0)
    assert net11.rnorm1.alpha_per_term == pytest.approx(0.001 / 9)
    net13 = models.create("cifar_conv_local", lrn=False)
    assert not any(isinstance(m, LocalResponseNorm) for m in net13.modules()) and net13.local3.out_channels == 32
    assert models.create("cifar_conv_local", lrn=False, local3=64).local3.out_channels == 64
    assert net11.local3.weight.std().item() == pytest.approx(0.04, rel=0.05)
    assert net11.conv1.weight.std().item() == pytest.approx(1e-4, rel=0.05)


def test_18pct_and_80sec_nets():
    net = models.create("cifar_18pct")
    got = shapes(net)
    assert [got[n][1] for n in ("pool1", "pool2", "pool3")] == [16, 8, 4]
    assert isinstance(net.rnorm1, SameMapResponseNorm) and (net.rnorm1.size, net.rnorm1.scale) == (3, 5e-5)
    assert isinstance(net.pool2, torch.nn.AvgPool2d) and net.order[:3] == ["conv1", "pool1", "pool1_neuron"]
    assert sum(p.numel() for p in net.parameters()) == (2432 + 25_632 + 51_264 + 64 * 16 * 10 + 10)
    fast = models.create("cifar_80sec")
    assert fast.fc64.out_features == 64 and not any(isinstance(m, SameMapResponseNorm) for m in fast.modules())
    tanh = models.create("cifar_18pct", activation="tanh")
    assert isinstance(tanh.conv2_neuron, torch.nn.Tanh)


def test_ceil_mode_average_pooling_divides_by_the_pixels_inside():
    """cuda-convnet's AvgPooler divides by the clipped window, and so does PyTorch's ceil_mode."""
    x = torch.ones(1, 1, 4, 4)
    out = torch.nn.AvgPool2d(3, 2, ceil_mode=True)(x)
    assert out.shape[-1] == ceil_output_size(4, 3, 2, 0) == 2 and torch.all(out == 1)


def test_cifar_nets_train_on_cifar10_files_in_the_real_format(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    cifar_folder(root, np.random.default_rng(5))
    data = open_dataset(root)
    images = torch.from_numpy(data.splits["train"].images[:8]).permute(0, 3, 1, 2).float() / 255
    labels = torch.as_tensor(data.splits["train"].labels[:8])
    for name, side in (("cifar_conv_local", 24), ("cifar_18pct", 32)):
        model = models.create(name)
        x = images[:, :, :side, :side]
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_cifar_presets_follow_the_layer_params_files():
    config = resolve("cifar_conv_local", {}, [])
    o = config.optim
    assert (o.lr, o.momentum, o.bias_lr_mult, o.bias_decay, o.weight_decay) == (0.001, 0.9, 2.0, False, 0.004)
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    assert (pipe.resize, pipe.crop, pipe.flip, pipe.lighting) == (32, 24, True, 0.0)  # translations + reflections
    assert config.eval_views == 10
    model = models.create(config.model.name, **config.model.options)
    assert model.input_size == pipe.crop
    config18 = resolve("cifar_18pct", {}, [])
    pipe18 = pipeline(config18.data.pipeline, **config18.data.pipeline_options)
    assert models.create(config18.model.name).input_size == pipe18.crop == 32
    # "reduce all learning rates by factor of 10 after 120 epochs. Then another factor of 10 after 10 more"
    assert (config18.schedule.kind, config18.schedule.milestones, config18.epochs) == ("multistep", [120, 130], 140)
    assert (config.schedule.kind, config.schedule.milestones, config.epochs) == ("multistep", [500, 510], 520)


def test_the_lrn_and_relu_tanh_studies_are_section_3s_comparisons_on_the_cifar_net(tmp_path):
    """`alexnet ablate --preset cifar_conv_local --study lrn`: the 11pct file against the 13pct file."""
    runs = plan(AblationOptions(preset="cifar_conv_local", study="lrn", out=tmp_path, seeds=1))
    check_models(runs)
    nets = {r.variant.name: models.create(r.config.model.name, **r.config.model.options) for r in runs}
    assert nets["baseline"].local3.out_channels == 64 and hasattr(nets["baseline"], "rnorm1")
    assert nets["no-lrn"].local3.out_channels == 32 and not hasattr(nets["no-lrn"], "rnorm1")
    tanh = plan(AblationOptions(preset="cifar_conv_local", study="relu-tanh", out=tmp_path, seeds=1))[1]
    assert isinstance(models.create(tanh.config.model.name, **tanh.config.model.options).local4_neuron, torch.nn.Tanh)
