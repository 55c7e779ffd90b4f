"""The registry is the test matrix (as timm's tests/models/test_models.py): every name in ``models.names()`` is
summarised, saved and rebuilt from its checkpoint and trained one step, so a model is tested by being
registered. The exports (ONNX run in onnxruntime, TorchScript, safetensors) walk one name per model
module and form (:data:`EXPORTED`, the smallest): exporting every name costs minutes of CPU (DenseNet-121's
TorchScript trace alone 10 s, each VGG's files half a gigabyte), and the names of one module share its
layers and their export.

Each model is built once for this file (a module-scoped fixture: pytest runs all of one model's tests
before the next is built) at 10 classes, with the smallest input and width its options allow. The
four 130 M-parameter VGGs are marked ``slow`` (their exports write half a gigabyte each):
``pytest -m "not slow"`` leaves them out; ``make test`` runs them.
"""

import itertools
import json
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import torch
from helpers import train_step

from alexnet import checkpoint, cli, models

CLASSES = [f"c{i}" for i in range(10)]
# the smallest honest input or width where a model has the option (the downsampling still leaves a map)
SMALL = {"alexnet_small": {"width": 0.25}, "resnet18": {"input_size": 32}, "resnet34": {"input_size": 32},
         "resnet50": {"input_size": 32}, "densenet121": {"input_size": 32}, "nin_d2l": {"input_size": 96},
         "vgg11_d2l": {"input_size": 32}, "resnet18_d2l": {"input_size": 32}, "densenet_d2l": {"input_size": 32},
         "googlenet_d2l": {"input_size": 32}, **{f"vgg{d}": {"input_size": 32} for d in (11, 13, 16, 19)}}
SLOW = {"vgg11", "vgg13", "vgg16", "vgg19"}
EXPORTED = ["alexnet_small", "lenet", "lenet_d2l", "vgg11_d2l", "nin_d2l", "googlenet_d2l", "resnet18_d2l",
            "densenet_d2l", "cifar_conv_local", "cifar_18pct", "cifar_80sec"]  # one per module of models/ and form (cudaconvnet.py: the cifar nets)


class Registered(NamedTuple):
    name: str
    model: torch.nn.Module  # eval mode, the weights saved at ``path``
    path: object  # its checkpoint
    x: torch.Tensor  # a batch of its input shape


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in models.names()])
def registered(request, tmp_path_factory) -> Registered:
    name, options = request.param, SMALL.get(request.param, {})
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, **options).eval()
    path = tmp_path_factory.mktemp(name) / "c.pt"
    checkpoint.save(path, checkpoint.from_model(model, CLASSES, model_options=options))
    batch = 1 if name in SLOW else 2  # VGG: 130 M parameters, most of them fc6's
    x = torch.randn(batch, model.in_channels, model.input_size, model.input_size, generator=torch.Generator().manual_seed(1))
    return Registered(name, model, path, x)


def rebuilt(r: Registered) -> torch.nn.Module:
    return checkpoint.restore_model(checkpoint.load(r.path))


def test_summary_counts_every_parameter(registered, capsys):
    """``alexnet summary`` (shapes on the meta device, no weights) counts what the real model holds."""
    count = sum(p.numel() for p in registered.model.parameters())
    with torch.device("meta"):
        s = models.summarize(models.create(registered.name, num_classes=10, **SMALL.get(registered.name, {})))
    assert s.total_params == sum(layer.params for layer in s.layers) == count
    assert s.total_macs > 0
    assert cli.main(["summary", registered.name, "--num-classes", "10", "--json"]) == 0  # the command, at the model's own size
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == registered.name
    assert data["total_params"] == sum(layer["params"] for layer in data["layers"])
    if registered.name not in SMALL:
        assert data["total_params"] == count


def test_checkpoint_round_trip_gives_the_same_model(registered):
    """Built on the meta device with the checkpoint's own tensors: every tensor real (none left on
    meta), the same outputs as the model that was saved, parameters still trainable."""
    model = rebuilt(registered)
    assert not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    x = registered.x[:1]
    with torch.no_grad():
        torch.testing.assert_close(model(x), registered.model(x), rtol=0, atol=0)


def test_one_training_step(registered):
    """``alexnet train``'s step: finite logits of the right shape, finite gradients, weights that moved."""
    model = rebuilt(registered).train()
    before = [p.detach().clone() for p in model.parameters()]
    batch = len(registered.x)
    logits, loss = train_step(model)(registered.x, torch.arange(batch))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def export(r: Registered, fmt: str, tmp_path) -> str:
    out = tmp_path / f"m.{fmt}"
    assert cli.main(["export", "--checkpoint", str(r.path), "--format", fmt, "--out", str(out)]) == 0
    return str(out)


@pytest.mark.parametrize("registered", EXPORTED, indirect=True)
def test_onnx_export_runs_in_onnxruntime(registered, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the exported graph itself, sooner
    session = ort.InferenceSession(export(registered, "onnx", tmp_path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": registered.x.numpy()})
    with torch.no_grad():
        want = registered.model(registered.x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("registered", EXPORTED, indirect=True)
def test_torchscript_export_gives_the_same_outputs(registered, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        scripted = torch.jit.load(export(registered, "torchscript", tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(scripted(registered.x), registered.model(registered.x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("registered", EXPORTED, indirect=True)
def test_safetensors_export_loads_as_the_same_checkpoint(registered, tmp_path):
    loaded = checkpoint.load(export(registered, "safetensors", tmp_path))
    assert loaded.model == registered.name and loaded.classes == CLASSES
    original = registered.model.state_dict()
    assert loaded.state_dict.keys() == original.keys()
    assert all(torch.equal(loaded.state_dict[k], original[k]) for k in original)  # every tensor bit for bit
    with torch.no_grad():  # the outputs to fp32 rounding: a copy's alignment may steer oneDNN to another summation order
        torch.testing.assert_close(checkpoint.restore_model(loaded)(registered.x), registered.model(registered.x),
                                   rtol=1e-5, atol=1e-6)
