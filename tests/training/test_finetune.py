"""Fine-tuning: ``alexnet train --init CHECKPOINT [--freeze WHAT]`` (alexnet.training.finetune).

The evidence is measured on real data: alexnet_small pretrained on the digits 0–4, then trained on the
digits 5–9 with its features frozen, against the same budget from scratch; and torchvision-format
weights (random, saved as torchvision saves them) imported and fine-tuned on photographs.
"""

import json

import numpy as np
import pytest
import torch
from helpers import StopAfter
from PIL import Image

from alexnet import checkpoint, cli
from alexnet.data import open_dataset
from alexnet.errors import AlexNetError
from alexnet.tools.bench.photos import make_photo_folder
from alexnet.training.config import resolve
from alexnet.training.loop import RunOptions, train


def digits_folder(root, classes, train_every=1):
    """The embedded digits of ``classes`` as an image folder (PNG files), train/val/test as shipped
    (every ``train_every``-th training image: a small target task, as fine-tuning's usually are)."""
    digits = open_dataset("digits")
    for split, images in digits.splits.items():
        chosen = np.flatnonzero(np.isin(images.labels, classes))
        for i in chosen[::train_every] if split == "train" else chosen:
            folder = root / split / str(images.labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images.images[i][..., 0]).save(folder / f"{i:04d}.png")
    return root


def run(tmp_path, name, data, epochs, extra=(), init=None, freeze=None):
    flags = {"epochs": epochs, "device": "cpu", "seed": 0, "data.spec": str(data), "finetune.init": init, "finetune.freeze": freeze}
    config = resolve("digits", flags, ["model.options.width=0.5", "data.workers=0", *extra])
    return train(config, RunOptions(out=tmp_path / name, progress_bar=False)).report


def test_features_learnt_on_0_to_4_transfer_to_5_to_9(tmp_path):
    """Measured (seed 0, docs/TRANSFER.md): on a third of the 5–9 training images, 3 epochs at batch 16,
    the frozen 0–4 features reach a far lower test error than the whole network from scratch."""
    first, second = digits_folder(tmp_path / "d04", [0, 1, 2, 3, 4]), digits_folder(tmp_path / "d59", [5, 6, 7, 8, 9], 3)
    run(tmp_path, "pre", first, 8)
    pretrained = tmp_path / "pre" / "checkpoints" / "best.pt"
    tuned = run(tmp_path, "tuned", second, 3, ["batch_size=16"], init=str(pretrained), freeze="features")
    scratch = run(tmp_path, "scratch", second, 3, ["batch_size=16"])
    err_tuned, err_scratch = (r["final"]["test_1view"]["top1_error"] for r in (tuned, scratch))
    rows = json.loads((tmp_path / "tuned" / "init.json").read_text())
    status = {r["tensor"]: (r["status"], r["frozen"]) for r in rows}
    assert status["conv1.weight"] == ("loaded", True) and status["fc6.weight"] == ("loaded", False)
    assert status["fc8.weight"][0] == "re-initialised"  # five classes there and here, but other ones
    print(f"\n5-9 test top-1 error after 3 epochs: frozen 0-4 features {err_tuned:.4f}, from scratch {err_scratch:.4f}")
    assert err_tuned < err_scratch - 0.30, (err_tuned, err_scratch)  # measured: 0.263 against 0.799
    before, after = checkpoint.load(pretrained).state_dict, checkpoint.load(tmp_path / "tuned" / "checkpoints" / "last.pt").state_dict
    for key in ("conv1.weight", "conv3.bias", "conv5.weight"):
        assert torch.equal(before[key], after[key]), key  # frozen: bit-identical
    assert not torch.equal(before["fc6.weight"], after["fc6.weight"])


@pytest.fixture
def torchvision_import(tmp_path):
    """Random weights saved as torchvision saves alexnet's (its state dict), imported with `alexnet import`."""
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet-random.pth")
    assert cli.main(["import", "torchvision", str(tmp_path / "alexnet-random.pth"), "--out", str(tmp_path / "owt.pt")]) == 0
    return tmp_path / "owt.pt"


def photos(root):
    make_photo_folder(root, 12, classes=3, size=(120, 90))
    make_photo_folder(root / "_val", 6, classes=3, size=(120, 90), seed=1)
    (root / "_val" / "train").rename(root / "val")
    return root


def test_a_torchvision_import_fine_tunes_on_photographs_with_a_new_class_count(tmp_path, torchvision_import, capsys):
    data, out = photos(tmp_path / "photos"), tmp_path / "run"
    args = ["train", "--preset", "finetune", "--init", str(torchvision_import), "--data", str(data), "--freeze", "features",
            "--out", str(out), "--device", "cpu", "--set", "batch_size=4", "--set", "max_steps=2", "--set", "data.workers=0"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "fc8.weight" in printed and "re-initialised" in printed and "frozen" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == "alexnet_owt" and config["finetune"]["init"] == str(torchvision_import)
    imported, tuned = checkpoint.load(torchvision_import), checkpoint.load(out / "checkpoints" / "last.pt")
    assert tuned.classes == ["class_0", "class_1", "class_2"] and tuned.state_dict["fc8.weight"].shape == (3, 4096)
    for key in [k for k in imported.state_dict if k.startswith("conv")]:
        assert torch.equal(imported.state_dict[key], tuned.state_dict[key]), key
    assert not torch.equal(imported.state_dict["fc7.weight"], tuned.state_dict["fc7.weight"])
    mean = torch.as_tensor(tuned.preprocess["stats"]["channel_mean"])  # ImageNet's, kept from the import
    torch.testing.assert_close(mean, torch.as_tensor(imported.preprocess["stats"]["channel_mean"]))


def test_fine_tuning_resumes_without_its_init_file_and_refuses_misuse(tmp_path, torchvision_import, capsys):
    data, out = photos(tmp_path / "photos"), tmp_path / "run"
    config = resolve("finetune", {"device": "cpu", "data.spec": str(data), "finetune.init": str(torchvision_import),
                                  "checkpoint_every": 1, "epochs": 1}, ["batch_size=4", "data.workers=0"])
    train(config, RunOptions(out=out, progress_bar=False, callbacks=[StopAfter(1)]))
    torchvision_import.unlink()  # a resume reads last.pt, never --init again
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert checkpoint.load(out / "checkpoints" / "last.pt").train_state["epoch"] == 1
    capsys.readouterr()
    assert cli.main(["train", "--preset", "finetune", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "pass --init CHECKPOINT" in capsys.readouterr().err
    run(tmp_path, "small", "digits", 1, extra=["max_steps=1"])
    with pytest.raises(AlexNetError, match="--freeze 'conv9': not a layer of alexnet_small; give none, features or one of conv1"):
        run(tmp_path, "bad", "digits", 1, init=str(tmp_path / "small" / "checkpoints" / "last.pt"), freeze="conv9")
    with pytest.raises(AlexNetError, match=r"--freeze fc8: freezes every parameter of alexnet_small \(fc8 is its last layer\), "
                                           "which leaves nothing to train"):  # issue 25, item 7: torch's "empty parameter list"
        run(tmp_path, "bad", "digits", 1, init=str(tmp_path / "small" / "checkpoints" / "last.pt"), freeze="fc8")
    assert not (tmp_path / "bad").exists()


def test_model_options_with_init_apply_or_are_refused_by_name(tmp_path, capsys):
    """Issue 25, item 4: --set model.options.dropout=0.0 with --init was dropped without a word."""
    run(tmp_path, "small", "digits", 1, extra=["max_steps=1"])
    init = str(tmp_path / "small" / "checkpoints" / "last.pt")
    run(tmp_path, "tuned", "digits", 1, extra=["max_steps=1", "model.options.dropout=0.0"], init=init)
    options = json.loads((tmp_path / "tuned" / "config.json").read_text())["model"]["options"]
    assert options["dropout"] == 0.0 and options["width"] == 0.5  # the option given, on the checkpoint's own
    for item, tensor in (("width=0.25", "conv1.weight"), ("input_size=32", "fc6.weight")):
        with pytest.raises(AlexNetError, match=rf"--set model.options.{item}: --init .*last.pt's {tensor} is \(.*with --init "
                                               r"the checkpoint's architecture is kept"):
            run(tmp_path, "refused", "digits", 1, extra=[f"model.options.{item}"], init=init)
    with pytest.raises(AlexNetError, match=r"pipeline crops 20; set data.pipeline_options.crop=24 \(--init's checkpoint fixes"):
        run(tmp_path, "refused", "digits", 1, extra=["data.pipeline_options.crop=20"], init=init)
    assert not (tmp_path / "refused").exists()
