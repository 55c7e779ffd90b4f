"""The family's presets on the embedded digits, GoogLeNet's auxiliary losses in training, and the
norm study (LRN, batch normalization, none)."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import checkpoint, models
from alexnet.data.transforms import pipeline
from alexnet.models.base import classification_loss
from alexnet.models.googlenet import AUX_LOSS_WEIGHT, GoogLeNetOutputs
from alexnet.tools.ablate import AblationOptions, plan, run_all
from alexnet.training.config import preset_names, resolve
from alexnet.training.loop import RunOptions, train

# preset -> the registered model it trains
FAMILY = {"lenet": "lenet", "vgg": "vgg11_d2l", "nin": "nin_d2l", "googlenet": "googlenet_d2l", "alexnet_bn": "alexnet_small"}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_family_preset_builds_a_model_that_fits_its_pipeline(name):
    assert name in preset_names()
    config = resolve(name, {}, [])
    assert config.model.name == FAMILY[name] and config.data.spec == "digits"
    pipe = pipeline(config.data.pipeline, **config.data.pipeline_options)
    # digits are grey, and a mirrored 2 is no 2: one channel, no reflections, no PCA lighting
    assert (pipe.channels, pipe.flip, pipe.lighting) == (1, False, 0.0) and pipe.crop < pipe.resize
    model = models.create(config.model.name, num_classes=10, **config.model.options)
    assert (model.input_size, model.in_channels) == (pipe.crop, pipe.channels)  # what train.py checks
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, pipe.crop, pipe.crop))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_the_batch_norm_preset_is_digits_with_one_change():
    digits, bn = resolve("digits", {}, []).to_dict(), resolve("alexnet_bn", {}, []).to_dict()
    assert bn["model"]["options"] == {**digits["model"]["options"], "lrn": False, "batch_norm": True}
    for key in ("data", "optim", "schedule", "epochs", "batch_size"):
        assert bn[key] == digits[key], key
    model = models.create("alexnet_small", **bn["model"]["options"])
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5


def test_cheapest_family_preset_trains(tmp_path):
    config = resolve("lenet", {"epochs": 1, "device": "cpu"}, ["max_steps=3", "data.workers=0"])
    report = train(config, RunOptions(out=tmp_path / "run", progress_bar=False)).report
    assert report["model"] == "lenet" and report["steps"] == 3 and report["parameters"] == 61_706
    assert report["final"]["test_1view"]["images"] == 359
    model = checkpoint.restore_model(checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt"))
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_training_loss_adds_the_auxiliary_losses():
    torch.manual_seed(0)
    y = torch.tensor([0, 3, 9, 1])
    main, aux2, aux1 = torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10)
    net = models.create("googlenet_d2l", aux_logits=True)  # the loss is the model's (models.base.ConfiguredNet.loss)
    logits, loss = net.loss(GoogLeNetOutputs(main, aux2, aux1), y)
    expected = F.cross_entropy(main, y) + AUX_LOSS_WEIGHT * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
    assert logits is main and torch.allclose(loss, expected)
    assert torch.allclose(net.loss(main, y)[1], F.cross_entropy(main, y))
    assert torch.allclose(classification_loss(main, y)[1], F.cross_entropy(main, y))


def test_googlenet_with_auxiliary_heads_trains(tmp_path):
    config = resolve("googlenet", {"epochs": 1, "device": "cpu"}, ["max_steps=2", "data.workers=0", "model.options.aux_logits=true"])
    report = train(config, RunOptions(out=tmp_path / "run", progress_bar=False)).report
    assert report["steps"] == 2 and report["model_options"]["aux_logits"] is True
    ck = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert any(key.startswith("aux1.") for key in ck.state_dict)  # the heads were trained and saved


def test_norm_study_plans_lrn_batch_norm_and_none(tmp_path):
    opts = AblationOptions(preset="digits", study="norm", out=tmp_path, seeds=2, flags={"epochs": 1, "device": "cpu"})
    runs = plan(opts)
    arms = {r.variant.name: r.config.model.options for r in runs}
    assert list(arms) == ["baseline", "batch-norm", "no-lrn"]
    assert [(o.get("lrn", True), o.get("batch_norm", False)) for o in arms.values()] == [(True, False), (False, True), (False, False)]
    assert len({r.folder for r in runs}) == 6 and all(r.same_as is None for r in runs)
    # with --study all the norm study's "none" arm is the lrn study's no-lrn run: trained once
    everything = plan(AblationOptions(preset="digits", study="all", out=tmp_path, seeds=1, flags={"epochs": 1}))
    assert {r.folder for r in everything if r.variant.name == "no-lrn"} == {tmp_path / "no-lrn" / "seed0"}


def test_norm_study_trains_and_tabulates(tmp_path):
    opts = AblationOptions(preset="digits", study="norm", out=tmp_path, seeds=1, flags={"epochs": 1, "device": "cpu"},
                           overrides=["model.options.width=0.25", "max_steps=2", "data.workers=0"])
    table = run_all(opts)
    rows = table["studies"]["norm"]
    assert [r["variant"] for r in rows] == ["baseline", "batch-norm", "no-lrn"]
    assert all(r["top1_error"]["n"] == 1 and 0 <= r["top1_error"]["mean"] <= 1 for r in rows)
    bn_config = json.loads((tmp_path / "batch-norm" / "seed0" / "config.json").read_text())
    assert bn_config["model"]["options"]["batch_norm"] is True and bn_config["model"]["options"]["lrn"] is False
    assert "| batch-norm (batch normalization instead of LRN) |" in (tmp_path / "ablation.md").read_text()
