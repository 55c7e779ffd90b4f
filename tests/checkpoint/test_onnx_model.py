"""An exported .onnx as a model: the metadata round trip, the session as a model, and the files
that are not what eval and predict need, each one line naming the file."""

import re

import numpy as np
import pytest
import torch
from helpers import save_small_checkpoint

from alexnet import checkpoint, cli
from alexnet.checkpoint.onnx_model import OnnxMetadata, stamp
from alexnet.errors import AlexNetError
from alexnet.inference.features import file_sha256

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture
def exported(tmp_path):
    """(checkpoint path, its fp32 .onnx written by alexnet export)."""
    path = save_small_checkpoint(tmp_path / "small.pt", CLASSES)
    out = tmp_path / "small.onnx"
    assert cli.main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(out)]) == 0
    return path, out


def test_metadata_round_trip_keeps_every_field_and_the_statistics_exactly(exported):
    path, out = exported
    ckpt, meta = checkpoint.load(path), checkpoint.read_onnx_metadata(out)
    assert (meta.model, meta.model_options, meta.classes) == (ckpt.model, ckpt.model_options, ckpt.classes)
    assert (meta.input_size, meta.channels) == (32, 3)
    assert meta.source_sha256 == file_sha256(path)
    assert meta.quantization == {"mode": "none"} and meta.calibration == {} and meta.describe() == "ONNX fp32"
    assert meta.preprocess["pipeline"] == ckpt.preprocess["pipeline"]
    for key, tensor in ckpt.preprocess["stats"].items():
        got = meta.preprocess["stats"][key]
        assert (torch.equal(got, tensor) and got.dtype == tensor.dtype) if isinstance(tensor, torch.Tensor) else got == tensor
    assert meta.provenance == ckpt.provenance
    keys = {p.key for p in onnx.load(str(out)).metadata_props}
    assert {"alexnet.classes", "alexnet.preprocess", "alexnet.source_sha256", "alexnet.quantization"} <= keys


def test_the_session_is_the_model_evaluation_calls(exported):
    path, out = exported
    meta, model = checkpoint.load_onnx(out)
    torch_model = checkpoint.restore_model(checkpoint.load(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), torch_model(x).numpy(), rtol=0, atol=1e-4)
    assert model.eval() is model and model.to("cpu") is model and meta.num_classes == 10


def rewrite(src, dst, **props):
    """``src`` with some ``alexnet.`` entries replaced, saved as ``dst``."""
    proto = onnx.load(str(src))
    for entry in proto.metadata_props:
        if entry.key[len("alexnet."):] in props:
            entry.value = props[entry.key[len("alexnet."):]]
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("props, says", [
    ({"classes": '["a", "b", "c"]'}, r"disagree with its metadata \(\[batch, 3, 32, 32\] and \[batch, 3\]\)"),
    ({"source_sha256": "xyz"}, "source_sha256='xyz' is not a sha256"),
    ({"format_version": "99"}, "metadata version 99 is newer than this package reads"),
    ({"quantization": '{"mode": "int4"}'}, "quantization mode 'int4' is not one of none, static, dynamic"),
    ({"classes": "[not json"}, r"field alexnet.classes is not valid \(JSONDecodeError"),
    ({"input_size": "-1"}, "alexnet.input_size='-1' is not a positive whole number"),
    ({"preprocess": '{"pipeline": {"normalize": "zca"}}'}, "unusable preprocessing"),
])
def test_wrong_metadata_is_one_line_naming_the_field(exported, tmp_path, props, says):
    bad = rewrite(exported[1], tmp_path / "bad.onnx", **props)
    with pytest.raises(AlexNetError, match=says) as info:
        checkpoint.read_onnx_metadata(bad)
    assert str(info.value).startswith(str(bad)) and "\n" not in str(info.value)


def test_files_that_are_not_our_onnx_are_one_line_errors_naming_the_file(exported, tmp_path, capsys):
    from alexnet.tools.interop.export import export_onnx

    _, good = exported
    plain = tmp_path / "plain.onnx"  # an ONNX model, but without our metadata
    export_onnx(checkpoint.restore_model(checkpoint.load(exported[0])), plain)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    renamed = tmp_path / "photo.onnx"
    renamed.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)  # a JPEG's start
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    proto = onnx.load(str(good))  # our metadata, a graph ONNX Runtime refuses
    next(n for n in proto.graph.node if n.op_type == "Conv").op_type = "Bogus"
    refused = tmp_path / "refused.onnx"
    onnx.save(proto, str(refused))
    cases = [(plain, "an ONNX model without alexnet's metadata"), (truncated, "not an ONNX model, or a truncated one"),
             (renamed, "not an ONNX model"), (text, "not an ONNX model"), (tmp_path / "missing.onnx", "no such file"),
             (tmp_path / "empty.onnx", "not an ONNX model"), (refused, r"ONNX Runtime cannot load it \(\[ONNXRuntimeError\]")]
    (tmp_path / "empty.onnx").write_bytes(b"")
    for path, says in cases:
        for argv in (["eval", "--checkpoint", str(path), "--data", "digits", "--device", "cpu"],
                     ["predict", "--checkpoint", str(path), str(path)]):
            assert cli.main(argv) == 2, argv
            err = capsys.readouterr().err
            assert re.match(f"alexnet: error: {re.escape(str(path))}: {says}", err) and err.count("\n") == 1, err


def test_stamp_replaces_our_entries_and_keeps_others(exported):
    _, out = exported
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "author", "someone"
    meta = checkpoint.read_onnx_metadata(out)
    stamp(proto, OnnxMetadata(**{**meta.__dict__, "classes": list("abcdefghij")}))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["author"] == "someone" and props["alexnet.classes"] == '["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]'
    assert sum(k == "alexnet.classes" for k in (p.key for p in proto.metadata_props)) == 1


def test_a_checkpoint_command_given_an_onnx_file_says_which_commands_take_it(exported):
    with pytest.raises(AlexNetError, match="alexnet eval and predict run it when its name ends in .onnx"):
        checkpoint.load(exported[1])
