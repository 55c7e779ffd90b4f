"""alexnet explore: Grad-CAM and occlusion find the one region a model looks at; the feature bank;
every endpoint of the server with Starlette's TestClient, bad uploads and path traversal."""

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from alexnet import checkpoint, models
from alexnet.data import Preprocess, compute_stats, open_dataset, pipeline
from alexnet.data.transforms import Pipeline
from alexnet.errors import AlexNetError
from alexnet.inference.features import file_sha256
from alexnet.tools.explore import activations, neighbours, why
from alexnet.training.run_folder import RunFolder

pytest.importorskip("starlette", reason="the [explore] extra (starlette) is not installed")
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2")
from starlette.testclient import TestClient

from alexnet.tools.explore.app import create_app
from alexnet.tools.explore.session import ExploreConfig, ImageRef, Session

DIGITS = [str(d) for d in range(10)]


# -- the analyses --------------------------------------------------------------------------------
class LooksAtOneCorner(nn.Module):
    """Sees only the top-left 12×12 of its 32×32 input (the rest is multiplied by 0), then a conv,
    its ReLU, a global mean and a linear layer whose class 0 rises with the conv's response."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :12, :12] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight.fill_(0.05)
            self.fc.weight.copy_(torch.tensor([[1.0] * 4, [0.0] * 4, [-1.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x * self.mask)).mean(dim=(2, 3)))


def test_grad_cam_and_occlusion_peak_where_the_model_looks():
    model = LooksAtOneCorner().eval()
    preprocess = Preprocess(Pipeline("t", resize=32, crop=32, channels=3, normalize="unit", flip=False, lighting=0.0), None)
    image = torch.full((1, 32, 32, 3), 255, dtype=torch.uint8)  # white: a grey square lowers the conv's response
    x = preprocess.centre_crop(image)
    assert why.cam_layer(model, x) == "relu"
    cam = why.grad_cam(model, x, 0, "relu")
    assert cam.shape == (32, 32) and cam.max() == pytest.approx(1.0)
    r, c = np.unravel_index(cam.argmax(), cam.shape)
    assert r < 12 and c < 12
    assert cam[16:, :].max() < 1e-6 and cam[:, 16:].max() < 1e-6  # nothing where it does not look
    occ = why.occlusion(model, preprocess, image, 0, patch=4, stride=2)
    assert occ.drop.shape == (32, 32) and occ.positions == 15 * 15
    r, c = np.unravel_index(occ.drop.argmax(), occ.drop.shape)
    assert r < 12 and c < 12 and occ.drop.max() > 0.001
    assert np.abs(occ.drop[16:, 16:]).max() < 1e-6  # occluding the rest changes nothing
    assert occ.lowest < occ.probability


def test_occlusion_grid_reaches_the_edge():
    assert why.occlusion_grid(24, 3, 2)[-1] == 21
    assert why.occlusion_grid(10, 4, 3) == [0, 3, 6]
    with pytest.raises(ValueError, match="occlusion square"):
        why.occlusion(LooksAtOneCorner(), Preprocess(Pipeline("t", 32, 32, normalize="unit", lighting=0.0), None),
                      torch.zeros(1, 32, 32, 3, dtype=torch.uint8), 0, patch=40, stride=1)


def test_layer_outputs_of_the_paper_net_have_the_paper_shapes():
    model = models.create("alexnet").eval()
    layers = {layer.name: layer for layer in activations.layer_outputs(model, torch.zeros(1, 3, 227, 227))}
    assert activations.shape_text(layers["conv1"].output) == "55×55×96"
    assert activations.shape_text(layers["pool5"].output) == "6×6×256"
    assert activations.shape_text(layers["fc7"].output) == "4096"
    assert "drop6" not in layers
    parts = activations.tower_parts(layers["conv2"].output, 2, is_head=False)
    assert [tuple(p.shape) for p in parts] == [(128, 27, 27), (128, 27, 27)]
    assert len(activations.tower_parts(layers["fc8"].output, 2, is_head=True)) == 1


def write_features(folder, name, codes, split, layer="features"):
    """The three files ``alexnet features`` writes (NAME.npy, NAME.csv ``row,path,label,class``, NAME.json)."""
    labels = open_dataset("digits").splits[split].labels
    np.save(folder / f"{name}.npy", codes)
    (folder / f"{name}.csv").write_text("row,path,label,class\n" + "".join(f"{i},,{labels[i]},{labels[i]}\n" for i in range(len(codes))))
    (folder / f"{name}.json").write_text(json.dumps({"split": split, "layer": layer, "shape": list(codes.shape), "rows": len(codes)}))
    return folder / f"{name}.npy"


def test_feature_bank_as_alexnet_features_writes_it(tmp_path, digits_checkpoint):
    test = open_dataset("digits").splits["test"]
    session = Session(ExploreConfig(digits_checkpoint, data="digits", bank_limit=5))
    codes = session.codes(torch.from_numpy(test.images)).numpy().astype(np.float32)
    path = write_features(tmp_path, "test-fc7", codes, "test")
    assert neighbours.bank_record(path)["split"] == "test"
    bank_session = Session(ExploreConfig(digits_checkpoint, data="digits", features=path))
    assert bank_session.bank.split == "test" and len(bank_session.bank.codes) == len(test)
    with TestClient(create_app(bank_session)) as c:
        answer = c.get("/api/neighbours?split=test&index=11&k=3").json()
    assert answer["split"] == "test" and answer["neighbours"][0]["index"] == 11  # itself, at distance 0
    assert answer["neighbours"][0]["distance"] == pytest.approx(0.0, abs=1e-3)
    pool5 = write_features(tmp_path, "pool5", codes, "test", layer="pool5")
    with pytest.raises(AlexNetError, match="compares fc7"):
        Session(ExploreConfig(digits_checkpoint, data="digits", features=pool5))
    # a record naming its checkpoint: the explored file must be that one (the same architecture's other
    # weights give codes of the same shape, and neighbours that mean nothing)
    record = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**record, "checkpoint": "other.pt", "checkpoint_sha256": "0" * 64}))
    with pytest.raises(AlexNetError, match=r"not the checkpoint .*test-fc7.npy was made with \(other.pt\)"):
        Session(ExploreConfig(digits_checkpoint, data="digits", features=path))
    path.with_suffix(".json").write_text(json.dumps({**record, "checkpoint_sha256": file_sha256(digits_checkpoint)}))
    assert Session(ExploreConfig(digits_checkpoint, data="digits", features=path)).bank.split == "test"
    path.with_suffix(".json").write_text(json.dumps({**record, "data": "fashion-mnist"}))  # it said "a row is outside …"
    with pytest.raises(AlexNetError, match=r"test-fc7.npy: a bank of fashion-mnist \[test\], but explore shows digits; "
                                           r"pass --data fashion-mnist"):
        Session(ExploreConfig(digits_checkpoint, data="digits", features=path))
    other = write_features(tmp_path, "other", codes[:3], "test")
    (tmp_path / "other.json").write_text(json.dumps({"split": "extra", "layer": "fc7"}))
    with pytest.raises(AlexNetError, match="'extra' split"):
        Session(ExploreConfig(digits_checkpoint, data="digits", features=other))


def test_feature_bank_from_npy_and_csv(tmp_path):
    train = open_dataset("digits").splits["train"]
    codes = np.random.default_rng(0).normal(size=(len(train), 8)).astype(np.float32)
    np.save(tmp_path / "bank.npy", codes)
    bank = neighbours.read_bank(tmp_path / "bank.npy", train, 8)
    index, distance = bank.nearest(codes[17], 3)
    assert index[0] == 17 and distance[0] == pytest.approx(0.0, abs=1e-5)
    brute = np.argsort(np.linalg.norm(codes - codes[17], axis=1), kind="stable")[:3]
    assert list(index) == list(brute)
    # a CSV index beside it maps rows to positions in the split
    np.save(tmp_path / "part.npy", codes[[5, 9]])
    (tmp_path / "part.csv").write_text("index,label\n5,0\n9,1\n")
    index, _ = neighbours.read_bank(tmp_path / "part.npy", train, 8).nearest(codes[9], 1)
    assert list(index) == [9]
    with pytest.raises(AlexNetError, match="dimensions"):
        neighbours.read_bank(tmp_path / "bank.npy", train, 16)
    assert neighbours.bank_record(tmp_path / "bank.npy") == {}  # no record beside it: the train split
    with pytest.raises(AlexNetError, match="rows but the train split"):
        np.save(tmp_path / "short.npy", codes[:10])
        neighbours.read_bank(tmp_path / "short.npy", train, 8)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AlexNetError, match="numbers only"):  # never unpickled
        neighbours.read_bank(tmp_path / "objects.npy", train, 8)
    (tmp_path / "damaged.npy").write_bytes(b"\x93NUMPY not really")
    with pytest.raises(AlexNetError, match="not a float32"):
        neighbours.read_bank(tmp_path / "damaged.npy", train, 8)
    (tmp_path / "picture.npy").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    with pytest.raises(AlexNetError, match="not a .npy file"):
        neighbours.read_bank(tmp_path / "picture.npy", train, 8)
    with pytest.raises(AlexNetError, match="cannot read"):
        neighbours.read_bank(tmp_path / "missing.npy", train, 8)


# -- the server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """An untrained alexnet_small for the digits, saved as training saves one (records its data)."""
    torch.manual_seed(0)
    train = open_dataset("digits").splits["train"]
    preprocess = Preprocess(pipeline("small", resize=28, crop=24, channels=1, flip=False, lighting=0.0), compute_stats(train.images))
    options = {"in_channels": 1, "width": 0.25, "input_size": 24}
    model = models.create("alexnet_small", num_classes=10, **options)
    ck = checkpoint.from_model(model, DIGITS, model_options=options, preprocess=preprocess.to_state(),
                               provenance=checkpoint.collect_provenance("digits", {"data": {"spec": "digits"}}))
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    checkpoint.save(path, ck)
    return path


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = RunFolder(tmp_path_factory.mktemp("run"))
    run.start()
    run.write_config({"preset": "digits", "epochs": 2, "data": {"spec": "digits"}})
    for epoch, loss in ((1, 2.2), (2, 1.9)):
        run.append_metrics({"epoch": epoch, "train_loss": loss, "val_loss": loss + 0.1, "val_top1_error": loss / 4})
    return run.root


@pytest.fixture(scope="module")
def client(digits_checkpoint, run_folder):
    session = Session(ExploreConfig(digits_checkpoint, run=run_folder, bank_limit=300, eval_limit=100))
    with TestClient(create_app(session), raise_server_exceptions=False) as c:
        yield c


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png() -> bytes:
    image = np.zeros((40, 40), np.uint8)
    image[8:32, 18:22] = 255  # a "1"
    return png_bytes(image)


def test_page_and_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("explore.js", "explore.css"):
        assert f"/static/{name}" in page.text
        assert client.get(f"/static/{name}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert "https://" not in client.get("/static/explore.js").text


@pytest.mark.parametrize("path", [
    "/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml", "/static/%2e%2e%2fpyproject.toml",
    "/static//etc/passwd", "/static/%2Fetc%2Fpasswd", "/static/..%5c..%5cpyproject.toml",
    "/api/data/test/..%2f..%2fetc%2fpasswd", "/api/data/../../etc/passwd", "/api/data/%2e%2e/0",
    "/api/data//etc/passwd/0", "/etc/passwd", "/api/data/test/-1", "/api/data/nosuch/0", "/api/data/test/99999",
])
def test_traversal_and_unknown_paths_are_refused(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert "root:" not in response.text and "[project]" not in response.text


def test_info_status_and_data_images(client):
    info = client.get("/api/info").json()
    assert info["classes"] == 10 and info["towers"] == 2 and info["cam_layer"] == "relu5"
    assert info["splits"]["test"] > 0 and "300 training images" in info["bank"]
    assert client.get("/api/status").json() == {"running": None, "waiting": 0}
    image = client.get("/api/data/test/0")
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (28, 28)


def test_upload_classify_layers_why_neighbours(client):
    token = client.post("/api/upload", files={"file": ("one.png", digit_png(), "image/png")}).json()["image"]
    answer = client.get(f"/api/classify?image={token}").json()
    probs = [t["probability"] for t in answer["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and answer["truth"] is None
    assert answer["crop"].startswith("data:image/png;base64,") and answer["crop_size"] == 24
    ten = client.get(f"/api/classify?image={token}&views=10").json()
    assert len(ten["view_images"]) == 10 and ten["view_images"][5]["name"] == "reflected top-left"
    layers = client.get(f"/api/layers?image={token}").json()
    by_name = {layer["name"]: layer for layer in layers["layers"]}
    assert by_name["conv1"]["shape"] == "24×24×16" and len(by_name["conv1"]["towers"]) == 2
    assert by_name["conv1"]["towers"][0]["count"] == 8 and len(by_name["fc8"]["towers"]) == 1
    explained = client.get(f"/api/why?image={token}&class=3").json()
    assert explained["class"] == 3 and explained["layer"] == "relu5" and explained["positions"] == 144
    assert explained["gradcam"].startswith("data:image/png") and explained["occlusion"].startswith("data:image/png")
    coarse = client.get(f"/api/why?image={token}&detail=coarse").json()
    assert coarse["stride"] == coarse["patch"] == 3 and coarse["positions"] == 8 * 8
    assert client.get(f"/api/why?image={token}&detail=fast").status_code == 400
    near = client.get("/api/neighbours?split=test&index=4&k=3").json()["neighbours"]
    assert len(near) == 3 and [n["distance"] for n in near] == sorted(n["distance"] for n in near)
    assert all(0 <= n["index"] < 300 for n in near)


def test_data_set_image_classify_knows_its_label(client):
    answer = client.get("/api/classify?split=test&index=7").json()
    labels = open_dataset("digits").splits["test"].labels
    assert answer["truth"]["index"] == int(labels[7])


def test_architecture_is_the_checkpoints_summary_drawn(client):
    import xml.etree.ElementTree as ET

    r = client.get("/api/architecture")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    drawn = [g for g in ET.fromstring(r.text).iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "layer"]
    assert [g.get("data-name") for g in drawn][:3] == ["conv1", "relu1", "norm1"] and drawn[-1].get("data-name") == "fc8"
    assert {g.get("data-towers") for g in drawn[:-1]} == {"2"} and drawn[-1].get("data-shape") == "10"
    assert b"<script" not in r.content


def test_arithmetic_of_a_unit_through_the_api(client):
    conv = client.get("/api/arithmetic?split=test&index=3&layer=conv2&unit=20,4,5").json()
    assert conv["kind"] == "conv" and conv["tower"] == 1 and conv["channels"] == [8, 16]  # conv2 reads its tower's 8 maps
    total = sum(np.sum(np.array(w) * np.array(k)) for w, k in zip(conv["window"], conv["kernel"], strict=True)) + conv["bias"]
    assert total == pytest.approx(conv["output"], rel=1e-4, abs=1e-4)
    out = client.get("/api/arithmetic?split=test&index=3&layer=softmax").json()
    assert sum(out["probabilities"]) == pytest.approx(1.0) and len(out["logits"]) == 10
    for query, words in (("layer=conv9&unit=0,0,0", "unknown layer 'conv9'"), ("layer=conv2&unit=99,0,0", "is outside conv2"),
                         ("layer=conv2&unit=a,b", "channel,row,column"), ("layer=conv2", "unit='': give the unit as"),
                         ("layer=conv2&unit=%D9%A3,0,0", "unit='٣,0,0': give the unit")):
        r = client.get(f"/api/arithmetic?split=test&index=3&{query}")
        assert r.status_code == 400 and words in r.json()["error"], r.text


def test_a_run_in_progress_is_followed_its_weights_reloaded_when_its_checkpoint_changes(tmp_path, digits_checkpoint,
                                                                                      run_folder):
    import shutil
    import time

    run = RunFolder(shutil.copytree(run_folder, tmp_path / "run"))
    ckpt = shutil.copy(digits_checkpoint, tmp_path / "last.pt")
    session = Session(ExploreConfig(ckpt, run=run.root, bank_limit=50, eval_limit=20))
    with TestClient(create_app(session), raise_server_exceptions=False) as c:
        first = c.get("/api/run/live").json()
        assert first == {"live": None, "epochs_done": 2, "finished": False, "stale": False, "weights": None, "reloaded": False,
                         "weights_error": None}
        before = c.get("/api/classify?split=test&index=0").json()
        run.write_live({"state": "training", "epoch": 3, "epochs": 5, "batch": 7, "per_epoch": 19, "time": time.time()})
        run.append_metrics({"epoch": 3, "train_loss": 1.5, "val_loss": 1.6, "val_top1_error": 0.3})
        changed = checkpoint.load(ckpt)
        changed.state_dict = {k: v * 1.5 if v.is_floating_point() else v for k, v in changed.state_dict.items()}
        changed.train_state = {"epoch": 3}
        checkpoint.save(ckpt, changed)
        live = c.get("/api/run/live").json()
        assert live["live"]["batch"] == 7 and live["epochs_done"] == 3 and live["reloaded"] and live["weights"] == 3
        after = c.get("/api/classify?split=test&index=0").json()
        assert after != before  # the model's weights are the new checkpoint's
        assert c.get("/api/run/live").json()["reloaded"] is False  # unchanged file: not loaded again
        other = checkpoint.from_model(models.create("alexnet_small", num_classes=5, width=0.25), list("abcde"),
                                      model_options={"width": 0.25}, preprocess=changed.preprocess)
        restats = checkpoint.load(ckpt)  # the same net and classes, another training set's mean
        restats.preprocess["stats"]["channel_mean"] = restats.preprocess["stats"]["channel_mean"] + 1
        good = Path(ckpt).read_bytes()
        for content, says in ((other, "' has shape ("), (restats, "now holds another model, classes or preprocessing"),
                              (good[:len(good) // 2], "truncated or corrupt checkpoint")):
            Path(ckpt).write_bytes(content) if isinstance(content, bytes) else checkpoint.save(ckpt, content)
            refused = c.get("/api/run/live")  # a file the explorer cannot follow: the weights it had, and why
            assert refused.status_code == 200 and says in refused.json()["weights_error"] and not refused.json()["reloaded"]
            assert "keeps the weights it had" in refused.json()["weights_error"] and refused.json()["weights"] == 3
            assert c.get("/api/classify?split=test&index=0").json() == after
        Path(ckpt).write_bytes(good)
        assert c.get("/api/run/live").json()["weights_error"] is None
        run.write_live({"state": "training", "epoch": 3, "epochs": 5, "time": time.time() - 120})
        assert c.get("/api/run/live").json()["stale"] is True  # no news for two minutes
        run.write_report_json({"final": {}})
        end = c.get("/api/run/live").json()
        assert end["finished"] is True and end["stale"] is False


def test_what_a_unit_sees_through_the_api(client):
    from alexnet.tools.explore import units

    layers = {layer["name"]: layer for layer in client.get("/api/unit/layers").json()["layers"]}
    assert layers["conv2"]["channels"] == 32 and layers["pool5"]["field"] == 51 and "fc6" not in layers
    top = client.get("/api/unit/top?layer=conv2&channel=20&split=test").json()
    assert top["split"] == "test" and top["images"] == 100 and top["unit"] == "conv2 channel 20" and top["field"] == 15
    values = [p["value"] for p in top["patches"]]
    assert len(values) == 9 and values == sorted(values, reverse=True)
    model = models.create("alexnet_small", num_classes=10, in_channels=1, width=0.25, input_size=24)
    steps = units.chain(model, torch.zeros(1, 1, 24, 24), "conv2")[0]
    for p in top["patches"]:
        assert p["box"] == list(units.receptive_field(steps, *p["at"]))
        side = Image.open(io.BytesIO(base64.b64decode(p["png"].split(",")[1]))).size
        assert side[0] % (p["box"][3] - p["box"][1]) == 0 and side[1] % (p["box"][2] - p["box"][0]) == 0  # the box, enlarged
    assert client.get("/api/unit/top?layer=conv2&channel=20").json()["patches"] == top["patches"]  # test is the default
    klass = client.get("/api/unit/top?class=4").json()
    assert klass["unit"] == "class 4 (4)" and all(p["box"] == [0, 0, 24, 24] and p["at"] is None for p in klass["patches"])
    picture = client.get("/api/unit/visualise?layer=relu5&channel=5&steps=32").json()
    assert picture["png"].startswith("data:image/png") and picture["steps"] == 32 and picture["end"] > picture["start"]
    assert client.get("/api/unit/visualise?class=2&steps=8").json()["unit"] == "class 2 (2)"


@pytest.mark.parametrize("query, words", [
    ("top?layer=conv9&channel=0", "unknown map layer 'conv9'"), ("top?layer=fc6&channel=0", "fc6 is not a map layer"),
    ("top?layer=conv2&channel=99", "channel 99 is outside conv2's 0–31"), ("top?layer=conv2&channel=x", "channel='x' must be a whole number ≥ 0"),
    ("top?layer=conv2", "name a unit"), ("top?class=10", "class 10 is outside"), ("top?class=1&layer=conv2&channel=0", "not both"),
    ("visualise?layer=relu7&channel=0", "relu7 is not a map layer"),
    ("visualise?layer=conv1&channel=0&steps=9999", "steps='9999' must be a whole number in 1–512"),
    ("visualise?layer=conv1&channel=-1", "channel='-1' must be a whole number ≥ 0"), ("top?class=1_0", "class='1_0' must be a whole number ≥ 0"),
    ("top?class=%D9%A3", "class='٣' must be a whole number ≥ 0"), (f"top?class={'9' * 5000}", f"class='{'9' * 40}'… must be a whole number ≥ 0"),
])
def test_a_bad_unit_is_a_400_with_one_line(client, query, words):
    r = client.get(f"/api/unit/{query}")
    assert r.status_code == 400 and words in r.json()["error"] and "\n" not in r.json()["error"], r.text
    assert client.get("/api/unit/top?layer=conv2&channel=0&split=nosuch").status_code == 404


def test_filters_run_and_confusion(client):
    filters = client.get("/api/filters").json()
    assert filters["shape"] == "5×5×1" and [t["count"] for t in filters["towers"]] == [8, 8]
    run = client.get("/api/run").json()
    assert run["epochs"] == 2 and run["config"]["preset"] == "digits" and run["curves"].startswith("data:image/png")
    confusion = client.get("/api/confusion").json()
    matrix = np.array(confusion["matrix"])
    assert confusion["split"] == "test" and confusion["images"] == 100 and matrix.sum() == 100
    t, p = np.unravel_index(matrix.argmax(), matrix.shape)
    cell = client.get(f"/api/confusion/cell?true={t}&predicted={p}").json()
    assert cell["count"] == matrix[t, p] and len(cell["indices"]) == min(48, matrix[t, p])
    labels = open_dataset("digits").splits["test"].labels
    assert all(int(labels[i]) == t for i in cell["indices"])


@pytest.mark.parametrize("name, data, message", [
    ("notes.png", b"this is text", "not an image"),
    ("empty.png", b"", "empty file"),
    ("cut.png", digit_png()[:60], "truncated|corrupt|cannot decode"),
])
def test_bad_uploads_get_a_message_not_a_500(client, name, data, message):
    response = client.post("/api/upload", files={"file": (name, data, "image/png")})
    assert response.status_code == 400
    error = response.json()["error"]
    assert name in error and re.search(message, error)


def test_upload_limits(client, digits_checkpoint):
    assert client.post("/api/upload", data={"other": "x"}).status_code == 400  # no file field
    too_big = b"\0" * (20 * 1024 * 1024 + 70 * 1024)
    response = client.post("/api/upload", files={"file": ("big.png", too_big, "image/png")})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    small = Session(ExploreConfig(digits_checkpoint, data="digits", bank_limit=10, max_pixels=100, max_upload=1000))
    with TestClient(create_app(small)) as c:
        response = c.post("/api/upload", files={"file": ("wide.png", digit_png(), "image/png")})
        assert response.status_code == 400 and "decompression bomb" in response.json()["error"]
        # a file over its own limit, in a form within the declared length's slack: 413, as serve answers it
        response = c.post("/api/upload", files={"file": ("long.png", b"\0" * 1001, "image/png")})
        assert (response.status_code, response.json()["error"]) == (413, "long.png: over the limit of 1,000 bytes for one image")


@pytest.mark.parametrize("query, status", [
    ("", 400), ("image=unknown", 404), ("split=test&index=abc", 400), ("split=test&index=100000", 404),
    ("split=nosuch&index=0", 404), ("split=test&index=0&views=3", 400),
])
def test_bad_queries(client, query, status):
    response = client.get(f"/api/classify?{query}")
    assert response.status_code == status and json.loads(response.text)["error"]


def test_bad_class_and_cell(client):
    assert client.get("/api/why?split=test&index=0&class=10").status_code == 404
    assert client.get("/api/confusion/cell?true=0&predicted=99").status_code == 404
    assert client.get("/api/upload").status_code == 405


# -- one model call at a time; the command -------------------------------------------------------
def test_gate_runs_one_call_at_a_time_and_counts_the_queue():
    import asyncio
    import threading
    import time

    from alexnet.tools.explore.app import Gate

    gate, inside, overlaps, seen_waiting = Gate(), [], [], []

    def work(i):
        inside.append(i)
        overlaps.append(len(inside) > 1)
        seen_waiting.append(gate.waiting)
        time.sleep(0.05)
        inside.remove(i)
        return i, threading.current_thread().name

    async def main():
        return await asyncio.gather(*(gate.run(f"job {i}", work, i) for i in range(4)))

    results = asyncio.run(main())
    assert [r[0] for r in results] == [0, 1, 2, 3] and not any(overlaps)
    assert seen_waiting[0] == 3 and seen_waiting[-1] == 0  # the first ran while three queued
    assert gate.running is None and gate.waiting == 0 and not gate.lock.locked()


def test_cli_missing_extra_names_the_pip_command(monkeypatch, capsys):
    import importlib.util

    from alexnet import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert cli.main(["explore", "--checkpoint", "x.pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alexnet: error: alexnet explore needs uvicorn: pip install 'alexnet[explore]'"


def test_cli_prints_url_warns_off_loopback_and_refuses_a_busy_port(monkeypatch, capsys, digits_checkpoint):
    import socket

    import uvicorn

    from alexnet import cli

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname()))
    assert cli.main(["explore", "--checkpoint", str(digits_checkpoint), "--port", "0", "--device", "cpu", "--bank-limit", "20"]) == 0
    out = capsys.readouterr()
    assert f"http://127.0.0.1:{served[0][1]}/" in out.out and "warning" not in out.err
    assert cli.main(["explore", "--checkpoint", str(digits_checkpoint), "--host", "0.0.0.0", "--port", "0", "--device", "cpu",
                     "--bank-limit", "20"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["explore", "--checkpoint", str(digits_checkpoint), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert cli.main(["explore", "--checkpoint", "missing.pt", "--port", "0"]) == 2
    assert "missing.pt" in capsys.readouterr().err


@pytest.mark.parametrize("name, pipe", [
    ("lenet", Pipeline("t", resize=32, crop=32, channels=1, normalize="unit", flip=False, lighting=0.0)),
    ("googlenet_d2l", Pipeline("t", resize=96, crop=96, channels=1, normalize="unit", flip=False, lighting=0.0)),
])
def test_other_networks_of_the_registry(tmp_path, name, pipe):
    """The explorer asks only the model contract: a tanh LeNet and an Inception net work too."""
    torch.manual_seed(0)
    model = models.create(name, num_classes=10)
    path = tmp_path / f"{name}.pt"
    checkpoint.save(path, checkpoint.from_model(model, DIGITS, preprocess=Preprocess(pipe, None).to_state()))
    session = Session(ExploreConfig(path, data="digits", bank_limit=40, eval_limit=20))
    with TestClient(create_app(session)) as c:
        token = c.post("/api/upload", files={"file": ("one.png", digit_png(), "image/png")}).json()["image"]
        assert len(c.get(f"/api/classify?image={token}").json()["top"]) == 5
        layers = c.get(f"/api/layers?image={token}").json()
        assert layers["towers"] == 1 and all(len(layer["towers"]) == 1 for layer in layers["layers"])
        half = pipe.crop // 2
        explained = c.get(f"/api/why?image={token}&patch={half}&stride={half}").json()
        assert explained["positions"] == 4 and explained["layer"] == session.cam_layer
        assert len(c.get(f"/api/neighbours?image={token}&k=2").json()["neighbours"]) == 2
        assert c.get("/api/filters").status_code == 200


def test_decode_bytes_is_decode_image(tmp_path):
    from alexnet.data.images import decode_bytes, decode_image

    for name, save in (("a.png", lambda im, p: im.save(p)), ("a.jpg", lambda im, p: im.save(p, quality=90))):
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
        save(picture, tmp_path / name)
        np.testing.assert_array_equal(decode_bytes((tmp_path / name).read_bytes(), name), decode_image(tmp_path / name))
    with pytest.raises(AlexNetError, match="^upload.png: not an image"):
        decode_bytes(b"text", "upload.png")


def test_loopback_app_refuses_other_host_headers(digits_checkpoint):
    from alexnet.tools.listen import LOOPBACK_HOSTS

    session = Session(ExploreConfig(digits_checkpoint, data="digits", bank_limit=10))
    app = create_app(session, LOOPBACK_HOSTS)
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/status").status_code == 200
    assert TestClient(app, base_url="http://localhost:8000").get("/").status_code == 200
    assert TestClient(app, base_url="http://rebound.example:8000").get("/api/info").status_code == 400


def test_an_upload_from_another_sites_page_is_refused(digits_checkpoint):
    """Issue 25, item 10: a page of another site could post a multipart upload to 127.0.0.1 (the browser
    sends the Host it posts to, so the Host check passes); its Origin, else its Referer, names the site."""
    from alexnet.tools.listen import LOOPBACK_HOSTS

    session = Session(ExploreConfig(digits_checkpoint, data="digits", bank_limit=10))
    c = TestClient(create_app(session, LOOPBACK_HOSTS), base_url="http://127.0.0.1:8000")
    upload = {"files": {"file": ("one.png", digit_png(), "image/png")}}
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9000"},
                    {"Referer": "https://evil.example/page.html"}, {"Origin": "https://evil.example", "Referer": "http://127.0.0.1:8000/"}):
        response = c.post("/api/upload", headers=headers, **upload)
        assert response.status_code == 403, headers
        error = response.json()["error"]
        assert "is not this server (http://127.0.0.1:8000); it takes uploads only from its own page" in error and "\n" not in error
    assert not session.uploads  # nothing was decoded
    for headers in ({"Origin": "http://127.0.0.1:8000"}, {"Referer": "http://127.0.0.1:8000/"}, {}):  # its page; curl
        assert c.post("/api/upload", headers=headers, **upload).status_code == 200, headers
    assert c.get("/api/status", headers={"Origin": "https://evil.example"}).status_code == 200  # reads change nothing


def test_a_get_made_by_another_sites_page_is_refused_by_its_fetch_metadata(digits_checkpoint):
    """An <img src> on another site's page pointed at /api/why would cost a forward pass per pixel: the
    browser's Sec-Fetch-Site says who made it. A link followed to the page, our own page, curl: answered."""
    session = Session(ExploreConfig(digits_checkpoint, data="digits", bank_limit=10))
    c = TestClient(create_app(session), base_url="http://127.0.0.1:8000")
    why = "/api/why?split=test&index=0&patch=4&stride=4"
    for site in ("cross-site", "same-site"):
        r = c.get(why, headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"})
        assert r.status_code == 403 and r.json()["error"].startswith(f"a request by a page of another site (Sec-Fetch-Site: '{site}')")
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert c.get("/", headers=link).status_code == 200
    for headers in ({"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, {}):
        assert c.get("/api/status", headers=headers).status_code == 200


def test_a_bank_written_by_alexnet_features(tmp_path, digits_checkpoint, capsys):
    """End to end with the real writer: the bank's neighbours are those the explorer computes itself."""
    from alexnet import cli

    out = tmp_path / "train-fc7.npy"
    assert cli.main(["features", "--checkpoint", str(digits_checkpoint), "--data", "digits", "--split", "train",
                     "--out", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    from_file = Session(ExploreConfig(digits_checkpoint, data="digits", features=out))
    computed = Session(ExploreConfig(digits_checkpoint, data="digits", bank_limit=0))
    assert from_file.bank.split == "train" and len(from_file.bank.codes) == len(computed.bank.codes)
    ref = ImageRef(split="test", index=21)
    a, b = from_file.neighbours(ref, 5), computed.neighbours(ref, 5)
    assert [n["index"] for n in a["neighbours"]] == [n["index"] for n in b["neighbours"]]
    np.testing.assert_allclose([n["distance"] for n in a["neighbours"]], [n["distance"] for n in b["neighbours"]], rtol=1e-4)
