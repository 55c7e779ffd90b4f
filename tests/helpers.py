"""Helpers shared by the tests in every folder (``pythonpath = ["tests"]`` in pyproject.toml makes this
``import helpers``); the fixtures stay in conftest.py."""

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.training.config import resolve
from alexnet.training.loop import Callback

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A quarter-width alexnet_small on the embedded digits, no worker processes: seconds an epoch on the CPU.
TINY = ["model.options.width=0.25", "data.workers=0"]


def tiny_config(**flags):
    """The digits preset at TINY's size for one epoch on the CPU; ``flags`` as the command line's (``max_steps=2``)."""
    return resolve("digits", {"epochs": 1, "device": "cpu", **flags}, TINY)


def image_folder(root, bad=False):
    """An image folder in ImageNet layout: train/ and val/, classes cat and dog, three 40×30 JPEGs each;
    ``bad``: and val/cat/broken.jpg, which is not an image."""
    for split in ("train", "val"):
        for c, colour in (("cat", 40), ("dog", 200)):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (colour, i * 20, 90)).save(root / split / c / f"{i}.jpg")
    if bad:
        (root / "val" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def save_plain_checkpoint(folder, name="m.pt", poison=None):
    """A quarter-width alexnet_small of 10 classes, with no pipeline or statistics, saved as ``folder/name``;
    ``poison``: the name of a tensor saved as all NaN."""
    from alexnet import checkpoint, models

    model = models.create("alexnet_small", num_classes=10, width=0.25)
    ck = checkpoint.from_model(model, [str(i) for i in range(10)], model_options={"width": 0.25})
    if poison:
        ck.state_dict[poison] = torch.full_like(ck.state_dict[poison], float("nan"))
    checkpoint.save(folder / name, ck)
    return folder / name


class StopAfter(Callback):
    """Stop the run as if killed right after a checkpoint at step ``steps`` (the resume tests)."""

    def __init__(self, steps):
        self.stop_at = steps


class Records(Callback):
    """Keep every finished epoch's metrics record."""

    def __init__(self):
        self.records = []

    def on_epoch(self, record):
        self.records.append(record)


def save_small_checkpoint(path, classes):
    """A quarter-width alexnet_small for ``classes`` with the small pipeline and statistics of random images, saved."""
    import numpy as np

    from alexnet import checkpoint, models
    from alexnet.data.stats import compute_stats
    from alexnet.data.transforms import Preprocess, pipeline

    torch.manual_seed(0)
    model = models.create("alexnet_small", num_classes=len(classes), width=0.25)
    images = np.random.default_rng(0).integers(0, 256, (8, 36, 36, 3), dtype=np.uint8)
    ckpt = checkpoint.from_model(model, list(classes), model_options={"width": 0.25},
                                 preprocess=Preprocess(pipeline("small"), compute_stats(images)).to_state())
    checkpoint.save(path, ckpt)
    return path


DRY_RUN: dict = {}  # the gpu_check dry run started by conftest.py (root, log, proc)


def start_dry_run() -> dict:
    import subprocess
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="alexnet-gpu-check-"))
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(root / "console.txt", "w")
    script = Path(SRC).parent / "benchmarks" / "gpu_check.py"
    DRY_RUN.update(root=root, log=log, proc=subprocess.Popen(
        [sys.executable, str(script), "--out", str(root / "out"), "--work", str(root / "work"), "--cpu-dry-run"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(SRC).parent))
    return DRY_RUN


def train_step(model, device: str = "cpu", precision: str = "fp32"):
    """The step ``alexnet train`` runs, for ``model`` on ``device`` at §5's SGD with lr 0.01: every test
    that takes a training step calls the step's builder here, so a change of its signature is one line."""
    from alexnet.training.config import OptimConfig, TrainConfig
    from alexnet.training.step import make_train_step

    config = TrainConfig(precision=precision, optim=OptimConfig(lr=0.01))
    return make_train_step(model, config, config.runtime_settings(device))


def py2_pickle(obj) -> bytes:
    """What Python 2's cPickle.dump(obj, f, 2) writes (the real CIFAR-10 files): str as BINSTRING,
    numpy arrays through numpy.core.multiarray._reconstruct, no memo."""
    def enc(x):
        if isinstance(x, bytes):
            return (b"U" + bytes([len(x)]) if len(x) < 256 else b"T" + struct.pack("<i", len(x))) + x
        if isinstance(x, bool):
            return b"\x88" if x else b"\x89"
        if isinstance(x, int):
            return b"K" + bytes([x]) if 0 <= x < 256 else b"J" + struct.pack("<i", x)
        if x is None:
            return b"N"
        if isinstance(x, tuple):
            return b"(" + b"".join(map(enc, x)) + b"t"
        if isinstance(x, list):
            return b"](" + b"".join(map(enc, x)) + b"e"
        if isinstance(x, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in x.items()) + b"u"
        if isinstance(x, np.ndarray):
            assert x.dtype == np.uint8
            dtype = b"cnumpy\ndtype\n" + enc((b"u1", 0, 1)) + b"R" + enc((3, b"|", None, None, None, -1, -1, 0)) + b"b"
            return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + enc((0,)) + enc(b"b")
                    + b"\x87R(" + enc(1) + enc(x.shape) + dtype + enc(False) + enc(x.tobytes()) + b"tb")
        raise TypeError(type(x))
    return b"\x80\x02" + enc(obj) + b"."


def cifar_batch(rng, n, name):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return {b"batch_label": name, b"labels": labels, b"data": data,
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def cifar_folder(root, rng):
    root.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = cifar_batch(rng, 4, name.encode())
        (root / name).write_bytes(py2_pickle(batches[name]))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (root / "batches.meta").write_bytes(py2_pickle({b"num_cases_per_batch": 10000, b"label_names": names,
                                                    b"num_vis": 3072}))
    return batches


def serving_models(root):
    """What the serve tests serve: a quarter-width alexnet_small trained 2 epochs on the digits, as
    ``root/digits.pt`` and exported to ``root/repo/onnx/{1,3}/model.onnx`` (Triton's layout, two
    versions), and 12 test digits written as PNG files under ``root/images``. Returns (checkpoint,
    repository, image paths)."""
    import io
    import shutil

    from alexnet import cli
    from alexnet.data import open_dataset
    from alexnet.training.loop import RunOptions, train

    train(tiny_config(epochs=2), RunOptions(out=root / "run", progress_bar=False))
    ckpt = root / "digits.pt"
    shutil.copy(root / "run" / "checkpoints" / "last.pt", ckpt)
    for version in ("1", "3"):
        (root / "repo" / "onnx" / version).mkdir(parents=True)
    assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(root / "repo" / "onnx" / "1" / "model.onnx")]) == 0
    shutil.copy(root / "repo" / "onnx" / "1" / "model.onnx", root / "repo" / "onnx" / "3" / "model.onnx")
    test = open_dataset("digits").splits["test"]
    (root / "images").mkdir()
    paths = []
    for i in range(12):
        buffer = io.BytesIO()
        Image.fromarray(test.load(i)[..., 0]).save(buffer, format="PNG")
        paths.append(root / "images" / f"{i}.png")
        paths[-1].write_bytes(buffer.getvalue())
    return ckpt, root / "repo", paths


def predicted(model, paths, capsys) -> np.ndarray:
    """``alexnet predict --json`` of the files: probabilities [N, K] in class order (K = 10)."""
    from alexnet import cli

    assert cli.main(["predict", "--checkpoint", str(model), *map(str, paths), "--topk", "10", "--json", "--device", "cpu"]) == 0
    rows = np.zeros((len(paths), 10))
    for row, result in zip(rows, json.loads(capsys.readouterr().out)):
        for p in result["predictions"]:
            row[p["index"]] = p["probability"]
    return rows
