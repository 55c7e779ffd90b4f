"""Export: ONNX (checked in onnxruntime), TorchScript, safetensors (read back as a checkpoint)."""

import warnings

import numpy as np
import pytest
import torch
from helpers import save_plain_checkpoint

from alexnet import checkpoint, cli, models
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import Preprocess, pipeline

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture
def small_ckpt(tmp_path):
    torch.manual_seed(0)
    model = models.create("alexnet_small", num_classes=10, width=0.25).eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 36, 36, 3), dtype=np.uint8)
    preprocess = Preprocess(pipeline("small"), compute_stats(images)).to_state()
    ckpt = checkpoint.from_model(model, CLASSES, model_options={"width": 0.25}, preprocess=preprocess,
                                 provenance=checkpoint.collect_provenance(recipe="test"))
    path = tmp_path / "small.pt"
    checkpoint.save(path, ckpt)
    return model, path


def test_onnx_matches_pytorch_in_onnxruntime_with_a_dynamic_batch(small_ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, path = small_ckpt
    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images"
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_torchscript_matches_pytorch(small_ckpt, tmp_path):
    model, path = small_ckpt
    out = tmp_path / "m.ts"
    assert cli.main(["export", "--checkpoint", str(path), "--format", "torchscript", "--out", str(out)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        scripted = torch.jit.load(str(out))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


def test_safetensors_round_trips_as_a_checkpoint(small_ckpt, tmp_path, capsys):
    model, path = small_ckpt
    out = tmp_path / "m.safetensors"
    assert cli.main(["export", "--checkpoint", str(path), "--format", "safetensors", "--out", str(out)]) == 0
    original, loaded = checkpoint.load(path), checkpoint.load(out)
    assert loaded.model == original.model and loaded.classes == CLASSES and loaded.input_size == 32
    assert loaded.model_options == original.model_options
    torch.testing.assert_close(loaded.preprocess["stats"]["mean_image"], original.preprocess["stats"]["mean_image"])
    assert loaded.preprocess["pipeline"] == original.preprocess["pipeline"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(checkpoint.restore_model(loaded)(x), model(x))
    assert cli.main(["info", str(out)]) == 0
    assert "alexnet_small" in capsys.readouterr().out


def test_export_refuses_to_overwrite(small_ckpt, tmp_path, capsys):
    _, path = small_ckpt
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    assert cli.main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert cli.main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(tmp_path / "a.pt")]) == 2
    assert capsys.readouterr().err == (f"alexnet: error: --out {tmp_path / 'a.pt'}: give an ONNX model a name ending in .onnx "
                                       "(eval, predict and serve run it by that)\n") and not (tmp_path / "a.pt").exists()


def test_export_without_onnx_names_the_extra(tmp_path, monkeypatch, capsys):
    import importlib.util

    path = save_plain_checkpoint(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert cli.main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'alexnet[onnx]'" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
