"""d2l's chapter on the real Fashion-MNIST: the presets say what d2l's files say, the numbers are
train_ch6's, and d2l's LeNet reaches d2l's range in its 10 epochs (Debian's dataset-fashion-mnist)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import cli, models
from alexnet.data import open_dataset
from alexnet.data.fitted import prefit
from alexnet.data.imageset import ImageSet
from alexnet.errors import AlexNetError
from alexnet.reporting.d2l import train_ch6_line, train_ch6_numbers
from alexnet.training.config import resolve
from alexnet.training.loop import RunOptions, train


def _fashion_mnist():
    try:
        return open_dataset("fashion-mnist")
    except AlexNetError as e:
        pytest.skip(f"the real Fashion-MNIST is not installed ({e})")


# preset: (model, lr, batch, resize), from d2l-ai/d2l-zh v2.0.0 and d2l-ai/d2l-en v0.17's chapter files
CHAPTER = {
    "d2l_lenet": ("lenet_d2l", 0.9, 256, 28), "d2l": ("alexnet_d2l", 0.01, 128, 224),
    "d2l_vgg": ("vgg11_d2l", 0.05, 128, 224), "d2l_nin": ("nin_d2l", 0.1, 128, 224),
    "d2l_googlenet": ("googlenet_d2l", 0.1, 128, 96), "d2l_bn_lenet": ("lenet_bn_d2l", 1.0, 256, 28),
    "d2l_resnet": ("resnet18_d2l", 0.05, 256, 96), "d2l_densenet": ("densenet_d2l", 0.1, 256, 96),
}


@pytest.mark.parametrize("preset", CHAPTER)
def test_each_preset_is_train_ch6_with_the_chapters_values(preset):
    c = resolve(preset, {}, [])
    model, lr, batch, resize = CHAPTER[preset]
    assert (c.model.name, c.optim.lr, c.batch_size, c.epochs) == (model, lr, batch, 10)
    assert (c.optim.momentum, c.optim.weight_decay, c.schedule.kind, c.label_smoothing) == (0.0, 0.0, "constant", 0.0)
    assert c.data.spec == "fashion-mnist" and c.data.val_fraction == 0 and not c.data.drop_last  # all 60,000, 235 steps
    assert c.data.pipeline == "d2l" and c.data.pipeline_options == {"resize": resize, "crop": resize}
    net = models.create(model)
    assert net.input_size == resize and net.in_channels == 1


def test_bn_lenet_is_d2ls_concise_form():
    net = models.create("lenet_bn_d2l")
    assert sum(p.numel() for p in net.parameters()) == 44_878  # conv1 unpadded: fc3 takes 16·4·4 = 256
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert [m.num_features for m in norms] == [6, 16, 120, 84]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models.create("lenet_d2l").modules())


def test_train_ch6_numbers_are_the_last_epochs_running_means_and_the_final_test_accuracy():
    history = [{"train_loss": 0.9, "train_top1_error": 0.4}, {"train_loss": 0.4691, "train_top1_error": 0.177}]
    numbers = train_ch6_numbers(history, {"test_1view": {"top1_accuracy": 0.7789}})
    assert train_ch6_line(numbers) == "loss 0.469, train acc 0.823, test acc 0.779"
    assert train_ch6_numbers(history, {"val_1view": {"top1_accuracy": 0.5}}) is None


@pytest.mark.parametrize("size", [224, 96])
def test_the_resize_is_torchvisions_resize_on_the_pil_image_to_within_rounding(size):
    from torchvision import transforms

    test = _fashion_mnist().split("test")
    sample = ImageSet(test.labels[:64], test.classes, images=np.asarray(test.images[:64]))
    ours = prefit(sample, size, 1).images[..., 0].astype(int)
    theirs = np.stack([np.asarray(transforms.Resize(size)(Image.fromarray(im[..., 0]))) for im in sample.images])
    diff = np.abs(ours - theirs.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.2, (diff.max(), diff.mean())


@pytest.mark.slow
def test_d2l_lenet_reaches_d2ls_range_in_its_ten_epochs(tmp_path, capsys):
    _fashion_mnist()
    assert cli.main(["train", "--preset", "d2l_lenet", "--data", "fashion-mnist", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    report = json.loads(Path(tmp_path / "run" / "report.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert report["steps"] == 10 * 235 and report["final"]["test_1view"]["images"] == 10_000
    numbers = train_ch6_numbers([h for h in history if "train_loss" in h], report["final"])
    assert numbers["test_acc"] >= 0.75, numbers  # d2l's build printed 0.779 (docs/REPRODUCTION.md)
    assert f"as d2l's train_ch6 prints it: {train_ch6_line(numbers)}" in out
    assert all("test_top1_error" in h for h in history) and "test top-1 err" in out  # train_ch6's per-epoch test accuracy
    assert history[-1]["test_top1_error"] == pytest.approx(report["final"]["test_1view"]["top1_error"])  # the same net, the same images


def test_test_each_epoch_records_the_test_split_and_never_chooses_by_it(tmp_path):
    """d2l's presets evaluate the test images after every epoch, as train_ch6 does, for the curves; best.pt
    and the schedule still go by val (here digits' held-out tenth), never by test."""
    from alexnet.reporting.figures import curves_figure

    config = resolve("digits", {"epochs": 3, "device": "cpu"}, ["model.options.width=0.25", "test_each_epoch=true"])
    result = train(config, RunOptions(out=tmp_path / "r", progress_bar=False))
    history = result.history
    assert all({"test_loss", "test_top1_error", "test_top5_error"} <= set(h) for h in history)
    assert history[-1]["test_top1_error"] == pytest.approx(result.report["final"]["test_1view"]["top1_error"])
    best = min(range(3), key=lambda i: (history[i]["val_top1_error"], i))
    state = torch.load(tmp_path / "r" / "checkpoints" / "best.pt", weights_only=True)["train_state"]
    assert (state["epoch"], state["best"]) == (best + 1, history[best]["val_top1_error"])
    colours = {line.get_label(): line.get_color() for ax in curves_figure(history).axes for line in ax.get_lines()}
    assert colours["test"] == colours["test top-1"] != colours["val"] == colours["val top-1"]  # a split, one colour in both panels
    plain = train(resolve("digits", {"epochs": 3, "device": "cpu"}, ["model.options.width=0.25"]),
                  RunOptions(out=tmp_path / "p", progress_bar=False))
    assert "test_loss" not in plain.history[0]  # off by default: one more pass an epoch
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in history]  # testing draws nothing: the same training


@pytest.mark.parametrize("drop_last", [True, False])
def test_a_kept_partial_batch_is_trained_on(tmp_path, drop_last):
    config = resolve("digits", {"epochs": 1, "device": "cpu", "batch_size": 100},
                     ["model.options.width=0.25", f"data.drop_last={str(drop_last).lower()}"])
    result = train(config, RunOptions(out=tmp_path / "r", progress_bar=False))
    n = result.report["train_images"]  # the digits' training images after the 10 % val split
    assert result.steps == (n // 100 if drop_last else -(-n // 100)) and n % 100 != 0
