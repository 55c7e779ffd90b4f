"""Figures: Fig. 3 mosaics per tower, Fig. 4 predictions and fc7 neighbours, the CLI's PNGs."""

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import checkpoint, models
from alexnet.cli import main
from alexnet.data import Preprocess, compute_stats, open_dataset, pipeline
from alexnet.inference import samples
from alexnet.inference.features import Extractor, FeatureConfig
from alexnet.inference.neighbours import nearest_images
from alexnet.reporting import figures as visualize

DIGITS = [str(d) for d in range(10)]


def digits_preprocess() -> Preprocess:
    train = open_dataset("digits").splits["train"]
    return Preprocess(pipeline("small", resize=28, crop=24, channels=1, flip=False, lighting=0.0), compute_stats(train.images))


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """An untrained alexnet_small for digits saved as a real checkpoint (what training writes)."""
    torch.manual_seed(0)
    options = {"in_channels": 1, "width": 0.25, "input_size": 24}
    model = models.create("alexnet_small", num_classes=10, **options)
    ck = checkpoint.from_model(model, DIGITS, model_options=options, preprocess=digits_preprocess().to_state(),
                               provenance=checkpoint.collect_provenance("digits", {"data": {"spec": "digits"}}))
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    checkpoint.save(path, ck)
    return path


# -- Fig. 3 ---------------------------------------------------------------------------------------
def test_paper_net_has_48_kernels_per_tower_in_two_blocks():
    weight, towers = visualize.conv1_kernels(models.create("alexnet"))
    assert towers == 2 and tuple(weight.shape) == (96, 3, 11, 11)
    mosaics = visualize.filter_mosaics(weight, towers)
    assert len(mosaics) == 2
    for mosaic in mosaics:  # 48 kernels: 3 rows of 16, 11×11 patches, 1-pixel gaps
        assert mosaic.shape == (3 * 12 - 1, 16 * 12 - 1, 3)
    # tower 2's first patch is kernel 48, min-max scaled on its own
    k = weight[48].permute(1, 2, 0)
    expected = ((k - k.min()) / (k.max() - k.min())).numpy()
    np.testing.assert_allclose(mosaics[1][:11, :11], expected, atol=1e-6)
    assert mosaics[0].min() == 0.0 and mosaics[0].max() == 1.0


def test_one_tower_and_grey_kernels():
    model = models.create("alexnet_small", num_classes=10, in_channels=1, width=0.25, towers=1)
    weight, towers = visualize.conv1_kernels(model)
    assert towers == 1 and weight.shape[1] == 1
    (mosaic,) = visualize.filter_mosaics(weight, towers, columns=4)
    n = weight.shape[0]
    assert mosaic.shape == (-(-n // 4) * 6 - 1, 4 * 6 - 1, 3)
    assert np.allclose(mosaic[:5, :5, 0], mosaic[:5, :5, 2])  # grey shown as grey
    fig = visualize.filters_figure(model)
    assert len(fig.axes) == 1
    assert len(visualize.filters_figure(models.create("alexnet_small", width=0.25)).axes) == 2
    assert visualize.conv1_kernels(models.create("alexnet_owt"))[1] == 1


# -- Fig. 4 ---------------------------------------------------------------------------------------
def test_streamed_neighbours_are_the_brute_force_nearest():
    torch.manual_seed(0)
    model = models.create("alexnet_small", num_classes=10, in_channels=1, width=0.25, input_size=24).eval()
    pre = digits_preprocess()
    splits = open_dataset("digits").splits
    train, test = splits["train"], splits["test"]
    queries = samples.image_batch(test, np.array([0, 5, 17]), 28)
    fc7 = Extractor.of_model(model, pre, FeatureConfig())  # the one fc7 path: what alexnet features stores
    found = nearest_images(fc7, queries, train, 4, batch_size=97, limit=500)
    codes = fc7(torch.from_numpy(train.images[:500])).double()
    d = torch.cdist(fc7(queries).double(), codes)
    expected = d.topk(4, largest=False)
    np.testing.assert_array_equal(found.rows, expected.indices.numpy())
    np.testing.assert_allclose(found.distances, expected.values.numpy(), rtol=1e-9)
    assert found.rows.max() < 500


def test_predictions_figure_marks_the_true_label_red():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    fig = visualize.predictions_figure(images, probs, np.array([2, 1, 0]), ["a", "b", "c"], columns=2)
    assert len(fig.axes) == 6  # picture + bars per image
    bars = fig.axes[1].patches  # image 0: top-3 are b, c, a; truth c is the second bar
    colours = [tuple(round(v, 3) for v in b.get_facecolor()[:3]) for b in bars]
    assert colours[1] != colours[0] and colours[0] == colours[2]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["b", "c", "a"]


# -- the CLI ---------------------------------------------------------------------------------------
def png_size(path):
    with Image.open(path) as im:
        im.load()
        return im.size


def test_cli_figures_write_pngs_that_decode(digits_checkpoint, tmp_path, capsys):
    ck = str(digits_checkpoint)
    assert main(["visualize", "filters", ck, "--out", str(tmp_path / "f.png")]) == 0
    assert main(["visualize", "neighbors", ck, "--data", "digits", "--queries", "3", "-k", "4", "--out",
                 str(tmp_path / "n.png")]) == 0
    assert main(["visualize", "predictions", ck, "--images", "4", "--out", str(tmp_path / "p.png")]) == 0
    assert main(["visualize", "confusion", ck, "--device", "auto", "--out", str(tmp_path / "c.png")]) == 0  # as every command
    sizes = {name: png_size(tmp_path / f"{name}.png") for name in "fnpc"}
    assert all(w > 200 and h > 100 for w, h in sizes.values())
    # neighbours: 3 query rows of 1 + 4 images, so wider than tall; predictions: 4 images in one row
    assert sizes["n"][0] > sizes["n"][1] and sizes["p"][0] > sizes["p"][1]
    assert "3 test images" in capsys.readouterr().out
    # more neighbours than the images searched: refused (it drew a 200,000-px-wide figure and said "6 nearest")
    assert main(["visualize", "neighbors", ck, "--train-limit", "5", "-k", "6", "--out", str(tmp_path / "k.png")]) == 2
    assert capsys.readouterr().err.strip() == "alexnet: error: --neighbors 6: more than the 5 training images searched"
    assert main(["visualize", "neighbors", ck, "--queries", "1000000", "--train-limit", "50", "-k", "2", "--out",
                 str(tmp_path / "q.png")]) == 0
    assert "359 test images and their 2 nearest training images (of the first 50)" in capsys.readouterr().out


def test_cli_refuses_to_overwrite_and_names_bad_checkpoints(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "f.png"
    out.write_bytes(b"mine")
    assert main(["visualize", "filters", str(digits_checkpoint), "--out", str(out)]) == 2
    assert out.read_bytes() == b"mine" and "already exists" in capsys.readouterr().err
    assert main(["visualize", "filters", str(digits_checkpoint), "--out", str(out), "--force"]) == 0
    assert png_size(out)[0] > 0
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["visualize", "filters", str(bad), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and len(err.strip().splitlines()) == 1
    assert main(["visualize", "confusion", str(digits_checkpoint), "--device", "gpu", "--out", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip() == "alexnet: error: --device 'gpu': not a device (use auto, cpu, cuda, cuda:N or mps)"
    assert not (tmp_path / "c.png").exists()


def test_eval_and_features_default_to_the_data_the_checkpoint_was_trained_on(digits_checkpoint, tmp_path, capsys, monkeypatch):
    """As visualize does: a d2l learner's `alexnet eval --checkpoint runs/lenet/checkpoints/best.pt` needs no --data."""
    assert main(["eval", "--checkpoint", str(digits_checkpoint), "--split", "test", "--json"]) == 0
    assert '"data": "digits"' in capsys.readouterr().out
    assert main(["features", "--checkpoint", str(digits_checkpoint), "--split", "val", "--out", str(tmp_path / "f.npy")]) == 0
    assert " on digits [val]: " in capsys.readouterr().out
    moved = checkpoint.load(digits_checkpoint)  # trained on a folder named relative to another working directory
    moved.provenance = checkpoint.collect_provenance("small", {"data": {"spec": "photos"}})
    checkpoint.save(tmp_path / "moved.pt", moved)
    monkeypatch.chdir(tmp_path)
    for argv in (["eval", "--checkpoint", "moved.pt"], ["features", "--checkpoint", "moved.pt", "--out", "g.npy"],
                 ["visualize", "confusion", "moved.pt", "--out", "c.png"]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == f"alexnet: error: moved.pt was trained on 'photos', which is not there from {tmp_path}; pass --data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "f.json", "f.npy", "moved.pt"]
