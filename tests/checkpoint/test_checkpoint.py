"""Checkpoints: round trip, weights_only safety, atomic writes, one-line errors."""

import os
import pickle

import numpy as np
import pytest
import torch
from helpers import save_plain_checkpoint

from alexnet import checkpoint, models
from alexnet.errors import AlexNetError
from alexnet.inference.samples import trained_on

CLASSES = [f"class{i}" for i in range(10)]


def small_checkpoint(**changes):
    model = models.create("alexnet_small", num_classes=10, width=0.25)
    ckpt = checkpoint.from_model(
        model, CLASSES, model_options={"width": 0.25},
        preprocess={"pipeline": {"name": "small", "crop": 32}, "stats": {"channel_mean": torch.tensor([1.0, 2.0, 3.0])}},
        provenance=checkpoint.collect_provenance(recipe="test", config={"lr": 0.01}),
    )
    for k, v in changes.items():
        setattr(ckpt, k, v)
    return model, ckpt


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, ckpt = small_checkpoint()
    path = tmp_path / "c.pt"
    checkpoint.save(path, ckpt)
    loaded = checkpoint.load(path)
    assert loaded.model == "alexnet_small"
    assert loaded.model_options == {"width": 0.25, "num_classes": 10}
    assert loaded.classes == CLASSES and loaded.input_size == 32
    assert loaded.preprocess["pipeline"] == {"name": "small", "crop": 32}
    assert loaded.provenance["recipe"] == "test" and loaded.provenance["torch_version"] == torch.__version__
    rebuilt = checkpoint.restore_model(loaded)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert not rebuilt.training


def test_file_is_plain_weights_only_with_a_format_version(tmp_path):
    _, ckpt = small_checkpoint()
    path = tmp_path / "c.pt"
    checkpoint.save(path, ckpt)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "alexnet-checkpoint"
    assert raw["format_version"] == checkpoint.FORMAT_VERSION


def test_train_state_with_optimizer_and_rng_round_trips(tmp_path):
    model, ckpt = small_checkpoint()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 30)
    import random

    ckpt.train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 3, "step": 120,
                        "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    path = tmp_path / "c.pt"
    checkpoint.save(path, ckpt)
    ts = checkpoint.load(path).train_state
    opt2 = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt2.load_state_dict(ts["optimizer"])
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(opt2.state_dict()["state"][0]["momentum_buffer"], buf)
    assert ts["epoch"] == 3 and torch.equal(ts["torch_rng"], torch.get_rng_state())


def test_save_refuses_values_weights_only_cannot_load(tmp_path):
    _, ckpt = small_checkpoint()
    ckpt.provenance["mean"] = np.zeros(3)
    path = tmp_path / "c.pt"
    with pytest.raises(AlexNetError, match=r"provenance\.mean is a numpy\.ndarray"):
        checkpoint.save(path, ckpt)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_save_is_atomic_and_can_refuse_to_overwrite(tmp_path):
    _, ckpt = small_checkpoint()
    path = tmp_path / "c.pt"
    checkpoint.save(path, ckpt)
    checkpoint.save(path, ckpt)  # the training loop rewrites its own checkpoint
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary files left behind
    before = path.read_bytes()
    with pytest.raises(AlexNetError, match="already exists"):
        checkpoint.save(path, ckpt, overwrite=False)
    assert path.read_bytes() == before


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("form", ["torch.save", "pickle2", "pickle4"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, form):
    marker = tmp_path / "PWNED"
    payload = {"format": "alexnet-checkpoint", "format_version": 1, "model": "alexnet", "evil": RunsCode(str(marker))}
    path = tmp_path / "evil.pt"
    if form == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=int(form[-1]))
    with pytest.raises(AlexNetError, match="refused to load") as info:
        checkpoint.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    # the marker really would be created by an unsafe load: the test can fail
    if form == "torch.save":
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path):
    _, ckpt = small_checkpoint()
    good = tmp_path / "good.pt"
    checkpoint.save(good, ckpt)
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], "truncated or corrupt"),
        "empty.pt": (b"", "truncated or corrupt"),
        "text.pt": (b"hello, not a checkpoint\n", "not a checkpoint"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save(models.create("alexnet_small", width=0.25).state_dict(), tmp_path / "state.pt")
    cases["state.pt"] = (None, "not an alexnet checkpoint")
    for name, (_, message) in cases.items():
        with pytest.raises(AlexNetError, match=message) as info:
            checkpoint.load(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AlexNetError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


def test_a_checkpoint_cut_anywhere_is_named_truncated(tmp_path):
    """A copy cut short fails in torch's zip reader as a RuntimeError, an EOFError or, at some lengths, an
    unnamed OSError (EINVAL: a seek before the start), which was an error without the file's name."""
    _, ckpt = small_checkpoint()
    checkpoint.save(tmp_path / "good.pt", ckpt)
    data = (tmp_path / "good.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    for n in range(64, len(data), len(data) // 97):  # past the zip signature (a shorter file is sniffed as text)
        cut.write_bytes(data[:n])
        with pytest.raises(AlexNetError, match=rf"^{cut}: truncated or corrupt checkpoint \("):
            checkpoint.load(cut)


@pytest.mark.parametrize(("content", "says"), [
    (b"\xff\xd8\xff\xe0" + b"\0" * 20, "a JPEG image, not a checkpoint; to classify it: alexnet predict"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "a PNG image"),
    (b"notes about my run\n", "a text file, not a checkpoint"),
    (b'name: "AlexNet"\nlayer {\n  name: "conv1"\n}\n', "a Caffe prototxt"),
    (bytes(range(7, 200)), "neither a torch file nor safetensors"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'" + b" " * 60 + b"\n", "a NumPy array (.npy, what alexnet features writes)"),
    # pickle.dump's protocol 4+ opens with FRAME, which torch's reader stops at: said to "run code" before
    (pickle.dumps({"x": 1}, protocol=4), "not a checkpoint this package loads (its pickle uses opcode FRAME, of pickle "
                                         "protocol 4 or later, which torch's weights-only reader does not read"),
])
def test_files_of_the_wrong_kind_say_what_they_are(tmp_path, content, says):
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(AlexNetError, match="") as info:
        checkpoint.load(path)
    assert says in str(info.value) and "pickle opcode" not in str(info.value)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + b"\0" * 30)
    with pytest.raises(AlexNetError, match="an ONNX model"):
        checkpoint.load(onnx)
    onnx.write_text("my notes\n")  # named .onnx, but judged by what it holds
    with pytest.raises(AlexNetError, match="a text file, not a checkpoint"):
        checkpoint.load(onnx)
    with pytest.raises(AlexNetError, match="not an ONNX model, or a truncated one"):
        trained_on(onnx)  # eval or predict without --data: said "records no data set; pass --data" first
    torch.save({"w": torch.zeros(2)}, tmp_path / "p4.pt", pickle_protocol=4)  # a torch archive of protocol 4: not "code"
    with pytest.raises(AlexNetError, match=r"p4.pt: not a checkpoint this package loads \(its pickle uses opcode FRAME"):
        checkpoint.load(tmp_path / "p4.pt")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "state.pth")
    with pytest.raises(AlexNetError, match="a bare state dict .* alexnet import torchvision"):
        checkpoint.load(tmp_path / "state.pth")


def test_a_torchscript_export_and_other_files_are_named_by_import_and_load(tmp_path):
    """What info says of a wrong file, import torchvision says too (a PNG was 'refused to load: … pickle
    opcode 80', as if it ran code); a TorchScript archive is named, not torch's weights_only paragraph."""
    from alexnet.tools.interop.torchvision import import_torchvision

    torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)).save(str(tmp_path / "m.ts"))
    (tmp_path / "png.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "a folder").mkdir()
    with pytest.raises(AlexNetError, match=r"m.ts: a TorchScript archive \(what alexnet export --format torchscript writes\), not a checkpoint"):
        checkpoint.load(tmp_path / "m.ts")
    for name, says in (("m.ts", "a TorchScript archive"), ("png.pt", "a PNG image, not torchvision weights"), ("a folder", "not a file")):
        with pytest.raises(AlexNetError, match=f"^{tmp_path / name}: {says}"):
            import_torchvision(tmp_path / name)


def test_non_finite_weights_are_refused_at_load(tmp_path):
    path = save_plain_checkpoint(tmp_path, poison="fc6.weight")
    with pytest.raises(AlexNetError, match=r"tensor 'fc6.weight' holds NaN or infinite values"):
        checkpoint.restore_model(checkpoint.load(path), source=str(path))


def test_newer_format_version_is_refused(tmp_path):
    _, ckpt = small_checkpoint()
    payload = ckpt.to_payload()
    payload["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "new.pt")
    with pytest.raises(AlexNetError, match="newer"):
        checkpoint.load(tmp_path / "new.pt")


def test_restore_model_names_a_mismatched_tensor(tmp_path):
    _, ckpt = small_checkpoint()
    ckpt.state_dict["fc8.weight"] = torch.zeros(5, ckpt.state_dict["fc8.weight"].shape[1])
    with pytest.raises(AlexNetError, match=r"'fc8.weight' has shape \(5, 128\), expected \(10, 128\)"):
        checkpoint.restore_model(ckpt)
    _, ckpt = small_checkpoint()
    del ckpt.state_dict["conv3.bias"]
    with pytest.raises(AlexNetError, match="conv3.bias"):
        checkpoint.restore_model(ckpt)


def test_class_names_must_match_num_classes(tmp_path):
    _, ckpt = small_checkpoint()
    ckpt.classes = CLASSES[:9]
    with pytest.raises(AlexNetError, match="9 class names"):
        checkpoint.save(tmp_path / "c.pt", ckpt)


def test_format_1_checkpoints_of_the_paper_net_keep_inverted_dropout(tmp_path):
    """Format 1 had inverted dropout in ``alexnet``; such a checkpoint must rebuild the net it was trained as."""
    model = models.create("alexnet", num_classes=10, dropout_scaling="inverted").eval()
    ckpt = checkpoint.from_model(model, CLASSES)
    payload = ckpt.to_payload()
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    old = checkpoint.load(tmp_path / "v1.pt")
    assert old.model_options["dropout_scaling"] == "inverted" and old.format_version == 1
    rebuilt = checkpoint.restore_model(old)
    x = torch.randn(1, 3, 227, 227)
    torch.testing.assert_close(rebuilt(x), model(x))
    checkpoint.save(tmp_path / "v2.pt", checkpoint.from_model(models.create("alexnet", num_classes=10), CLASSES))
    assert "dropout_scaling" not in checkpoint.load(tmp_path / "v2.pt").model_options  # the default: the paper's


@pytest.mark.parametrize("change, says", [
    ({"input_size": "big"}, "its input_size is str 'big', not int"),
    ({"classes": "0123"}, "its classes is str '0123', not list or tuple"),
    ({"model_options": None}, "its model_options is NoneType 'None', not dict"),
    ({"preprocess": {"pipeline": "paper"}}, "its preprocess.pipeline is str, not a table of values"),
])
def test_a_checkpoint_of_fields_of_the_wrong_kind_is_named_at_load(tmp_path, change, says):
    """Hand-edited or foreign checkpoints: info printed four lines and then an internal AttributeError."""
    _, ckpt = small_checkpoint()
    checkpoint.save(tmp_path / "good.pt", ckpt)
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    torch.save({**payload, **change}, tmp_path / "edited.pt")
    with pytest.raises(AlexNetError) as info:
        checkpoint.load(tmp_path / "edited.pt")
    assert str(info.value) == f"{tmp_path / 'edited.pt'}: {says}"

