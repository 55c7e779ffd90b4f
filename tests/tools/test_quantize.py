"""int8 export (ONNX Runtime's quantizer) of a small trained digits model, measured by ``alexnet eval``
and ``predict`` through the same code as its checkpoint; the export flags' wrong combinations."""

import json
import re

import pytest
import torch
from helpers import tiny_config
from PIL import Image

from alexnet import checkpoint, cli
from alexnet.data import open_dataset
from alexnet.data.loader import iter_batches
from alexnet.data.transforms import Preprocess
from alexnet.inference.evaluate import batch_probabilities
from alexnet.inference.features import file_sha256
from alexnet.tools.interop import quantize
from alexnet.training.loop import RunOptions, train

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FORMS = {"fp32": [], "static": ["--quantize", "int8", "--calibrate", "digits", "--images", "128"],
         "dynamic": ["--quantize", "int8", "--mode", "dynamic"]}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(checkpoint, {form: .onnx}) for a quarter-width alexnet_small trained 8 epochs on digits (seconds)."""
    root = tmp_path_factory.mktemp("int8")
    train(tiny_config(epochs=8), RunOptions(out=root / "run", progress_bar=False))
    ckpt = root / "run" / "checkpoints" / "last.pt"
    files = {}
    for form, flags in FORMS.items():
        files[form] = root / f"{form}.onnx"
        assert cli.main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(files[form]), *flags]) == 0
    return ckpt, files


def top1(path, capsys) -> float:
    assert cli.main(["eval", "--checkpoint", str(path), "--data", "digits", "--split", "test", "--device", "cpu", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["top1_accuracy"]


def test_int8_accuracy_on_digits_is_measured_by_eval_like_the_checkpoints(digits, capsys):
    ckpt, files = digits
    images = len(open_dataset("digits").splits["test"])
    reference = top1(ckpt, capsys)
    assert reference > 0.8  # a model that learned, so the comparison means something
    got = {form: top1(path, capsys) for form, path in files.items()}
    assert abs(got["fp32"] - reference) <= 1 / images + 1e-9
    for form in ("static", "dynamic"):
        assert abs(got[form] - reference) <= 0.03, (form, got, reference)


def test_the_quantized_graphs_are_int8_and_say_how_they_were_made(digits):
    ckpt, files = digits
    ops = {form: {n.op_type for n in onnx.load(str(path)).graph.node} for form, path in files.items()}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["static"] and "MatMulInteger" in ops["dynamic"]
    assert not ops["fp32"] & {"QuantizeLinear", "MatMulInteger"}
    static, dynamic = (checkpoint.read_onnx_metadata(files[f]) for f in ("static", "dynamic"))
    assert static.quantization["format"] == "QDQ" and static.quantization["calibrate_method"] == "MinMax"
    assert static.calibration["data"] == "digits" and static.calibration["split"] == "train"
    assert static.calibration["images"] == 128 and static.describe() == "ONNX int8 static, calibrated on 128 images of digits [train]"
    assert dynamic.mode == "dynamic" and dynamic.calibration == {} and dynamic.quantization["op_types"] == ["MatMul", "Gemm"]
    source = checkpoint.load(ckpt)
    for meta in (static, dynamic):
        assert meta.source_sha256 == file_sha256(ckpt) and meta.classes == source.classes
        assert meta.preprocess["pipeline"] == source.preprocess["pipeline"] and (meta.channels, meta.input_size) == (1, 24)


def test_predict_from_the_onnx_files_matches_the_checkpoints_top1(digits, tmp_path, capsys):
    ckpt, files = digits
    test = open_dataset("digits").splits["test"]
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(test.load(i)[..., 0]).save(paths[-1])

    def predict(model):
        assert cli.main(["predict", "--checkpoint", str(model), *paths, "--device", "cpu", "--json"]) == 0
        return [r["predictions"] for r in json.loads(capsys.readouterr().out)]

    want = predict(ckpt)
    for form, path in files.items():
        got = predict(path)
        for w, g in zip(want, got):
            if form == "fp32":
                assert g[0]["label"] == w[0]["label"] and g[0]["probability"] == pytest.approx(w[0]["probability"], abs=1e-4)
            elif w[0]["probability"] > 0.8:  # int8 may move a close call; a clear one stays
                assert g[0]["label"] == w[0]["label"], (form, w, g)


def test_calibration_images_go_through_the_checkpoints_own_centre_crop(digits):
    ckpt, _ = digits
    preprocess = Preprocess.from_state(checkpoint.load(ckpt).preprocess)
    images, description = quantize.calibration_set(quantize.Quantization("static", "digits", "train", 20))
    reader = quantize.CalibrationImages(images, preprocess, batch_size=8)
    from onnxruntime.quantization import CalibrationDataReader

    assert isinstance(reader, CalibrationDataReader)
    batches = list(iter(reader.get_next, None))
    assert [b["images"].shape for b in batches] == [(8, 1, 24, 24), (8, 1, 24, 24), (4, 1, 24, 24)]
    x, _ = next(iter_batches(images, 8, size=preprocess.pipeline.resize, device="cpu", pad=False))
    model = checkpoint.restore_model(checkpoint.load(ckpt))
    with torch.no_grad():  # the reader feeds the model exactly what alexnet eval feeds it
        fed = torch.softmax(model(torch.from_numpy(batches[0]["images"])), 1)
    torch.testing.assert_close(fed, batch_probabilities(model, preprocess, x, 1), rtol=0, atol=1e-6)
    assert description == {"data": "digits", "split": "train", "images": 20, "of": 1259, "selection": "random sample, seed 0",
                           "preprocessing": "the checkpoint's centre crop (eval, 1 view)"}
    assert len(set(images.labels.tolist())) > 5  # a sample across the classes, not the first class's images


@pytest.mark.parametrize("flags, says", [
    (["--format", "torchscript", "--quantize", "int8", "--calibrate", "digits"], "--quantize int8 needs --format onnx"),
    (["--format", "onnx", "--quantize", "int8"], r"--quantize int8 \(--mode static\) needs --calibrate DATA"),
    (["--format", "onnx", "--quantize", "int8", "--calibrate", "digits", "--images", "0"], "--images 0: must be at least 1"),
    (["--format", "onnx", "--quantize", "int8", "--calibrate", "digits", "--split", "trian"],
     r"digits: no 'trian' split \(did you mean 'train'\? has train, val, test\)"),
    (["--format", "onnx", "--quantize", "int8", "--calibrate", "digts"],  # it said "--data takes", a flag export lacks
     r"digts: no such folder \(did you mean 'digits'\? a data set is 'digits', 'fashion-mnist', or a path"),
    (["--format", "onnx", "--mode", "dynamic"], "--mode applies only to int8 quantization"),
    (["--format", "onnx", "--calibrate", "digits"], "--calibrate applies only to int8 quantization"),
    (["--format", "onnx", "--quantize", "int8", "--mode", "dynamic", "--calibrate", "digits", "--images", "9"],
     "--mode dynamic quantizes the weights only and needs no calibration data; leave out --calibrate, --images"),
])
def test_wrong_flag_combinations_are_one_line_errors_and_write_nothing(digits, tmp_path, capsys, flags, says):
    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", str(digits[0]), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet: error: ") and err.count("\n") == 1 and re.search(says, err), err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_export_refuses_to_overwrite_without_force(digits, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    argv = ["export", "--checkpoint", str(digits[0]), "--format", "onnx", "--out", str(out), *FORMS["dynamic"]]
    assert cli.main(argv) == 2
    assert "already exists; choose another --out or pass --force" in capsys.readouterr().err and out.read_text() == "keep me"
    assert cli.main([*argv, "--force"]) == 0
    assert checkpoint.read_onnx_metadata(out).mode == "dynamic"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left beside it
