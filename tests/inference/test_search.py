"""alexnet search: exact neighbours equal brute force, FAISS's equal exact, and the command end to end."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import checkpoint, cli, models
from alexnet.data import open_dataset
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import Preprocess, downsample, pipeline
from alexnet.errors import AlexNetError
from alexnet.inference.features import FeatureConfig, extract
from alexnet.inference.neighbours import nearest
from alexnet.inference.search import faiss_search, search


def brute_force(bank, queries, k, metric):
    b, q = bank.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = 1.0 - q @ b.T
    else:
        d = np.sqrt(((q[:, None, :] - b[None]) ** 2).sum(-1))
    rows = np.argsort(d, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(d, rows, 1)


@pytest.fixture(scope="module")
def vectors():
    g = np.random.default_rng(0)
    return g.standard_normal((3000, 48)).astype(np.float32), g.standard_normal((15, 48)).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_equals_brute_force(vectors, metric):
    bank, queries = vectors
    rows, distances = brute_force(bank, queries, 6, metric)
    found = nearest(bank, queries, 6, metric, chunk=700)  # several chunks: the running top-k
    assert np.array_equal(found.rows, rows)
    np.testing.assert_allclose(found.distances, distances, atol=1e-4)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_equals_exact(vectors, metric):
    pytest.importorskip("faiss")
    bank, queries = vectors
    exact = nearest(bank, queries, 8, metric)
    fast = faiss_search(bank, queries, 8, metric, chunk=1000)
    assert np.array_equal(fast.rows, exact.rows)
    np.testing.assert_allclose(fast.distances, exact.distances, atol=1e-4)


def test_a_k_over_the_banks_rows_and_bad_values_are_refused(vectors):
    """Issue 25, item 6: k = 10 among 4 rows gave 4 neighbours without a word."""
    bank, queries = vectors
    assert search(bank[:4], queries, 4, engine="exact").rows.shape == (15, 4)
    with pytest.raises(AlexNetError, match="--k 10 is more than the 4 rows of the bank; give --k 4 or less"):
        search(bank[:4], queries, 10, engine="exact")
    with pytest.raises(AlexNetError, match="--metric"):
        search(bank, queries, 3, metric="manhattan")
    with pytest.raises(AlexNetError, match="columns"):
        search(bank, queries[:, :10], 3)


@pytest.fixture(scope="module")
def digits_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    torch.manual_seed(0)
    train = open_dataset("digits").splits["train"]
    model = models.create("alexnet_small", num_classes=10, in_channels=1, input_size=24, width=0.25)
    pre = Preprocess(pipeline("small", resize=28, crop=24, channels=1, flip=False, lighting=0.0), compute_stats(train.images))
    ckpt = root / "digits.pt"
    checkpoint.save(ckpt, checkpoint.from_model(model, [str(d) for d in range(10)], preprocess=pre.to_state(),
                                                model_options={"in_channels": 1, "input_size": 24, "width": 0.25}))
    extract(ckpt, "digits", "train", root / "bank.npy", FeatureConfig(batch_size=256))
    test = open_dataset("digits").splits["test"]
    queries = []
    for i in range(3):
        Image.fromarray(test.images[i][..., 0]).save(root / f"q{i}.png")
        queries.append(root / f"q{i}.png")
    return root, ckpt, queries, model.eval(), pre, test.images[:3]


def test_search_command_matches_brute_force_and_draws_the_grid(digits_bank, capsys):
    root, ckpt, queries, model, pre, images = digits_bank
    grid = root / "grid.png"
    args = ["search", "--features", str(root / "bank.npy"), "--checkpoint", str(ckpt), *map(str, queries), "--k", "4"]
    assert cli.main(args + ["--json", "--grid", str(grid)]) == 0
    results = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([downsample(img, 28) for img in images]))
        q = model.forward_features(pre.centre_crop(x)).numpy()
    rows, distances = brute_force(np.load(root / "bank.npy"), q, 4, "euclidean")
    assert [[n["row"] for n in r["neighbours"]] for r in results] == rows.tolist()
    np.testing.assert_allclose([[n["distance"] for n in r["neighbours"]] for r in results], distances, rtol=1e-4, atol=1e-4)
    labels = open_dataset("digits").splits["train"].labels
    assert all(n["label"] == labels[n["row"]] for r in results for n in r["neighbours"])
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.width > image.height  # 3 rows of 1 + 4 pictures

    assert cli.main(args + ["--grid", str(grid)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(args + ["--grid", str(root / "grid.jpg")]) == 2  # checked before the search, as every --out
    assert "--grid" in capsys.readouterr().err and not (root / "grid.jpg").exists()
    if importlib.util.find_spec("faiss") is not None:
        assert cli.main(args[:2] + [str(root / "bank.npy"), *map(str, queries), "--k", "4", "--engine", "faiss", "--json"]) == 0
        assert [[n["row"] for n in r["neighbours"]] for r in json.loads(capsys.readouterr().out)] == rows.tolist()


def test_search_refuses_another_checkpoint_and_bad_queries(digits_bank, tmp_path, capsys):
    root, ckpt, queries, *_ = digits_bank
    other = tmp_path / "other.pt"
    c = checkpoint.load(ckpt)
    c.state_dict = {k: v + 1 for k, v in c.state_dict.items()}
    checkpoint.save(other, c)
    assert cli.main(["search", "--features", str(root / "bank.npy"), "--checkpoint", str(other), str(queries[0])]) == 2
    assert "not the checkpoint" in capsys.readouterr().err
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert cli.main(["search", "--features", str(root / "bank.npy"), str(text)]) == 2
    assert "not an image" in capsys.readouterr().err
    assert cli.main(["search", "--features", str(tmp_path / "none.npy"), str(queries[0])]) == 2
    assert "no such features file" in capsys.readouterr().err
