"""Evaluation: top-k over views and ensembles, per-class accuracy, checkpoints on ImageSets."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_config

from alexnet import checkpoint, cli, models
from alexnet.data import open_dataset
from alexnet.data.imageset import ImageSet
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import Preprocess, pipeline
from alexnet.errors import AlexNetError
from alexnet.inference import evaluate, samples
from alexnet.inference.features import Extractor, FeatureConfig
from alexnet.reporting import figures as visualize
from alexnet.training.loop import RunOptions, train

CLASSES = [f"c{i}" for i in range(6)]


def test_views_average_softmax_outputs_not_logits():
    # view 1 is very sure of class 0, view 2 prefers class 1: the averaged softmax picks class 0,
    # averaged logits would pick class 1 (§4.1 averages the softmax outputs).
    logits = torch.tensor([[[4.0, 0.0, 0.0], [-4.0, 1.0, 0.0]]])
    probs = evaluate.view_probabilities(logits)
    expected = (torch.softmax(logits[0, 0], 0) + torch.softmax(logits[0, 1], 0)) / 2
    torch.testing.assert_close(probs[0], expected)
    assert probs.sum().item() == pytest.approx(1.0)
    assert probs.argmax().item() == 0 and logits.mean(1).argmax().item() == 1


def test_topk_errors_per_class_and_confusion():
    probs = torch.tensor([
        [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],  # label 0: top-1 right
        [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],  # label 1: top-1 wrong, top-5 right
        [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],  # label 5: wrong even at top-5
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # label 3: right
    ])
    labels = torch.tensor([0, 1, 5, 3])
    r = evaluate.score(probs, labels, CLASSES, views=10, checkpoints=["a.pt"])
    assert r.top1_error == pytest.approx(0.5) and r.top5_error == pytest.approx(0.25)
    assert r.top1_accuracy == pytest.approx(0.5) and r.images == 4 and r.views == 10
    assert r.per_class_accuracy == [1.0, 0.0, None, 1.0, None, 0.0]
    assert r.per_class_images == [1, 1, 0, 1, 0, 1]
    assert r.confusion[1, 0] == 1 and r.confusion[5, 0] == 1 and r.confusion[3, 3] == 1 and r.confusion.sum() == 4
    d = r.to_dict()
    for key in ("top1_error", "top5_error", "top1_accuracy", "top5_accuracy", "images", "views", "checkpoints"):
        assert key in d
    json.dumps(d)


def test_top5_with_fewer_than_five_classes_counts_every_image():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    r = evaluate.score(probs, torch.tensor([1, 1]), ["a", "b"])
    assert r.top1_error == 1.0 and r.top5_error == 0.0


def test_ensemble_averages_members():
    a = torch.tensor([[0.6, 0.4], [0.1, 0.9]])
    b = torch.tensor([[0.2, 0.8], [0.3, 0.7]])
    torch.testing.assert_close(evaluate.ensemble_probabilities([a, b]), torch.tensor([[0.4, 0.6], [0.2, 0.8]]))
    with pytest.raises(ValueError):
        evaluate.ensemble_probabilities([a, b[:1]])


# -- checkpoints on an ImageSet ------------------------------------------------------------------
@pytest.fixture(scope="module")
def imageset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 36, 36, 3), dtype=np.uint8)
    return ImageSet(labels=np.arange(20, dtype=np.int64) % 6, classes=CLASSES, images=images)


def make_checkpoint(path, imageset, seed, classes=CLASSES):
    torch.manual_seed(seed)
    model = models.create("alexnet_small", num_classes=len(classes), width=0.25).eval()
    preprocess = Preprocess(pipeline("small"), compute_stats(imageset.images))
    ckpt = checkpoint.from_model(model, classes, model_options={"width": 0.25}, preprocess=preprocess.to_state())
    checkpoint.save(path, ckpt)
    return model, preprocess


def reference_probabilities(model, preprocess, images, views):
    with torch.no_grad():
        x = preprocess.views(torch.from_numpy(images), views)
        logits = model(x.flatten(0, 1)).reshape(len(images), views, -1)
    return torch.softmax(logits, -1).mean(1)


@pytest.mark.parametrize("views", [1, 10])
def test_checkpoint_probabilities_follow_the_checkpoints_preprocessing(tmp_path, imageset, views):
    model, preprocess = make_checkpoint(tmp_path / "a.pt", imageset, 0)
    config = evaluate.EvalConfig(views=views, batch_size=7)
    got = evaluate.checkpoint_probabilities(tmp_path / "a.pt", imageset, config)
    torch.testing.assert_close(got, reference_probabilities(model, preprocess, imageset.images, views))


def test_ensemble_of_checkpoints_is_the_mean_of_their_probabilities(tmp_path, imageset):
    members = [make_checkpoint(tmp_path / f"{s}.pt", imageset, s) for s in (0, 1)]
    paths = [tmp_path / f"{s}.pt" for s in (0, 1)]
    report = evaluate.evaluate_checkpoints(paths, imageset, evaluate.EvalConfig(views=10, batch_size=10))
    mean = torch.stack([reference_probabilities(m, p, imageset.images, 10) for m, p in members]).mean(0)
    expected = evaluate.score(mean, torch.from_numpy(imageset.labels), CLASSES, views=10)
    assert report.top1_error == pytest.approx(expected.top1_error)
    assert report.top5_error == pytest.approx(expected.top5_error)
    assert report.checkpoints == [str(p) for p in paths] and report.images == 20 and report.views == 10
    np.testing.assert_array_equal(report.confusion, expected.confusion)


def test_inference_gives_the_model_back_in_the_mode_it_found_it(imageset):
    """Issue 22, defect 2: an evaluation inside a training epoch must not train the rest of it without dropout."""
    torch.manual_seed(0)
    model = models.create("alexnet_small", num_classes=len(CLASSES), width=0.25)
    preprocess = Preprocess(pipeline("small"), compute_stats(imageset.images))
    images = torch.from_numpy(imageset.images[:4])
    expected = reference_probabilities(model.eval(), preprocess, imageset.images[:4], 1)
    model.train()
    model.conv1.eval()  # a mixed model (layers frozen in eval mode) stays mixed
    got = evaluate.batch_probabilities(model, preprocess, images)
    torch.testing.assert_close(got, expected)  # dropout was off during the call
    assert model.training and not model.conv1.training
    assert all(m.training for name, m in model.named_modules() if not name.startswith("conv1"))
    with evaluate.evaluating(model):
        assert not any(m.training for m in model.modules())
    assert model.training and not model.conv1.training
    fc7 = Extractor.of_model(model, preprocess, FeatureConfig())  # the fc7 path (Fig. 4, explore, alexnet features)
    torch.testing.assert_close(fc7(images), fc7(images))  # dropout off: the same codes twice
    assert model.training and not model.conv1.training


def test_figures_and_the_report_show_test_else_val(imageset):
    empty = ImageSet(labels=np.zeros(0, np.int64), classes=CLASSES, images=np.zeros((0, 36, 36, 3), np.uint8))
    assert evaluate.shown_split(imageset, imageset) == "test"
    assert evaluate.shown_split(empty, imageset) == "val" and evaluate.shown_split(None, imageset) == "val"
    assert evaluate.shown_split(empty, None) is None
    splits = {"train": imageset, "test": empty, "val": imageset}
    assert samples.pick_split(splits, None, "d")[0] == "val"  # the same rule, through the figures' split picker
    assert samples.pick_split(splits, "train", "d")[0] == "train"
    with pytest.raises(AlexNetError, match="d: no test split"):
        samples.pick_split(splits, "test", "d")
    with pytest.raises(AlexNetError, match="d: no test or val split"):
        samples.pick_split({"train": imageset}, None, "d")


def test_classes_that_differ_from_the_data_are_one_line_errors(tmp_path, imageset):
    make_checkpoint(tmp_path / "ten.pt", imageset, 0, classes=[f"c{i}" for i in range(10)])
    with pytest.raises(AlexNetError, match="ten.pt: checkpoint has 10 classes but the data has 6"):
        evaluate.evaluate_checkpoints([tmp_path / "ten.pt"], imageset, evaluate.EvalConfig())
    renamed = ["c0", "c1", "cat", "c3", "c4", "c5"]
    make_checkpoint(tmp_path / "renamed.pt", imageset, 0, classes=renamed)
    with pytest.raises(AlexNetError, match="class 2 is 'cat' in the checkpoint but 'c2' in the data"):
        evaluate.evaluate_checkpoints([tmp_path / "renamed.pt"], imageset, evaluate.EvalConfig())


def test_confusion_plot_is_a_png(tmp_path, imageset):
    probs = torch.softmax(torch.randn(20, 6), 1)
    report = evaluate.score(probs, torch.from_numpy(imageset.labels), CLASSES)
    out = tmp_path / "cm.png"
    visualize.save_confusion_plot(report, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


def test_eval_command_on_the_digits_data(tmp_path, capsys, monkeypatch):
    from alexnet.data import open_dataset

    dataset = open_dataset("digits")
    split = "val" if "val" in dataset.splits else "test"
    images = dataset.splits[split]
    torch.manual_seed(0)
    model = models.create("alexnet_small", num_classes=len(dataset.classes), in_channels=images.channels, width=0.25)
    stats = dataset.stats or compute_stats(np.asarray(dataset.splits["train"].images))
    preprocess = Preprocess(pipeline("small", channels=images.channels), stats)
    ckpt = checkpoint.from_model(model, dataset.classes, model_options={"width": 0.25, "in_channels": images.channels},
                                 preprocess=preprocess.to_state())
    checkpoint.save(tmp_path / "d.pt", ckpt)
    argv = ["eval", "--checkpoint", str(tmp_path / "d.pt"), str(tmp_path / "d.pt"), "--data", "digits",
            "--split", split, "--json", "--plots", str(tmp_path / "plots"), "--device", "cpu"]
    applied = []  # the process settings, the tuned allocator among them (3× the 10-view images/s on the AVX2 EPYC)
    monkeypatch.setattr("alexnet.cli.evaluate.apply_process_settings", applied.append)
    assert cli.main(argv) == 0
    assert [s.device for s in applied] == ["cpu"]
    d = json.loads(capsys.readouterr().out)
    assert d["images"] == len(images) and d["views"] == 1 and len(d["checkpoints"]) == 2
    assert math.isclose(d["top1_error"] + d["top1_accuracy"], 1.0) and 0 <= d["top5_error"] <= d["top1_error"]
    assert (tmp_path / "plots" / "confusion_matrix.png").exists()
    one = ["eval", "--checkpoint", str(tmp_path / "d.pt"), "--data", "digits", "--json", "--device", "cpu"]
    assert cli.main(one + ["--split", "train"]) == 0  # the training split too, e.g. for its error without augmentation
    assert json.loads(capsys.readouterr().out)["images"] == len(dataset.splits["train"])
    assert cli.main(one) == 0 and json.loads(capsys.readouterr().out)["images"] == len(dataset.splits["val"])  # the default


def test_ten_views_of_a_model_trained_without_reflections_warn(tmp_path, caplog):
    from alexnet.inference.evaluate import EvalConfig, evaluate_checkpoints

    out = tmp_path / "run"
    train(tiny_config(max_steps=2), RunOptions(out=out, progress_bar=False))
    test = open_dataset("digits").splits["test"]
    evaluate_checkpoints([out / "checkpoints" / "last.pt"], test, EvalConfig(views=1))
    assert "trained without reflections" not in caplog.text
    evaluate_checkpoints([out / "checkpoints" / "last.pt"], test, EvalConfig(views=10))
    assert caplog.text.count("trained without reflections") == 1
