"""alexnet info, and safe loading through the commands: nothing in a loaded file ever runs."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import checkpoint, cli, models
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import Preprocess, pipeline


class CreatesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would call open(marker, "w"), creating the file
        return (open, (self.marker, "w"))


@pytest.fixture
def good(tmp_path):
    model = models.create("alexnet_small", num_classes=3, width=0.25)
    images = np.random.default_rng(0).integers(0, 256, (4, 36, 36, 3), dtype=np.uint8)
    ckpt = checkpoint.from_model(model, ["red", "green", "blue"], model_options={"width": 0.25},
                                 preprocess=Preprocess(pipeline("small"), compute_stats(images)).to_state(),
                                 provenance=checkpoint.collect_provenance(recipe="unit-test"))
    ckpt.train_state = {"epoch": 4, "step": 99, "optimizer": {"state": {}, "param_groups": []}}
    path = tmp_path / "good.pt"
    checkpoint.save(path, ckpt)
    return path


def test_info_prints_what_the_checkpoint_carries(good, capsys):
    assert cli.main(["info", str(good)]) == 0
    out = capsys.readouterr().out
    for text in ("alexnet_small", "width=0.25", "3: red, green, blue", "32×32", "normalize=channel", "unit-test",
                 torch.__version__, "epoch=4"):
        assert text in out, text
    assert cli.main(["info", str(good), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format_version"] == checkpoint.FORMAT_VERSION and d["classes"] == ["red", "green", "blue"]
    assert d["preprocess"]["stats"]["mean_image"] == "tensor [36, 36, 3] float32"
    assert d["parameters"] == sum(v.numel() for v in checkpoint.load(good).state_dict.values())


def test_info_reports_the_files_format_version(tmp_path, good, capsys):
    payload = checkpoint.load(good).to_payload()
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    assert cli.main(["info", str(tmp_path / "v1.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 1
    assert cli.main(["info", str(good)]) == 0
    assert f"(format {checkpoint.FORMAT_VERSION})" in capsys.readouterr().out


def test_info_one_line_errors(tmp_path, good, capsys):
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.pt").write_text("hello")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "state.pt")
    for name, reason in (("cut.pt", "truncated"), ("notes.pt", "not a checkpoint"), ("state.pt", "not an alexnet checkpoint"),
                         ("missing.pt", "no such checkpoint")):
        assert cli.main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"alexnet: error: {tmp_path / name}") and reason in err and err.count("\n") == 1, err
    assert cli.main(["explore", "--checkpoint", str(tmp_path / "missing.pt"), "--port", "0"]) == 2
    printed = capsys.readouterr()  # no "loading …" line before it
    assert printed.err == f"alexnet: error: --checkpoint {tmp_path / 'missing.pt'}: no such file\n" and printed.out == ""


def test_commands_refuse_a_checkpoint_that_would_run_code(tmp_path, run_cli, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    payload = {"format": "alexnet-checkpoint", "format_version": 1, "model": "alexnet_small", "x": CreatesMarker(str(marker))}
    torch.save(payload, evil)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(payload, f, protocol=2)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    in_process = [
        ["info", str(evil)],
        ["export", "--checkpoint", str(evil), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        ["predict", "--checkpoint", str(evil), str(tmp_path / "a.png")],
    ]
    for argv in in_process:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused to load" in err and "evil.pt" in err, err
        assert not marker.exists()
    assert not (tmp_path / "m.onnx").exists()
    # and end to end, as a user runs it
    result = run_cli("predict", "--checkpoint", tmp_path / "evil.pkl", tmp_path / "a.png")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused to load" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not marker.exists()
