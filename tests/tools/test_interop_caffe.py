"""Caffe import: files written here with caffe.proto's field numbers (a small protobuf writer:
NetParameter layer=100 / layers=2; LayerParameter name=1 type=2 blobs=7; V1LayerParameter name=4
type=5 blobs=6; BlobProto num..width=1..4, data=5 (packed float), shape=7 (BlobShape dim=1))."""

import numpy as np
import pytest
import torch

from alexnet import checkpoint, cli, models
from alexnet.errors import AlexNetError
from alexnet.tools.interop import caffe


# -- the writer ---------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def field(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def blob(array: np.ndarray, legacy: bool = False) -> bytes:
    array = np.asarray(array, dtype="<f4")
    if legacy:  # num, channels, height, width, padded with leading 1s as old Caffe wrote them
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(key(i, 0) + varint(d) for i, d in enumerate(dims, start=1))
    else:
        head = field(7, field(1, b"".join(varint(d) for d in array.shape)))
    return head + field(5, array.tobytes())


def layer_v2(name: str, kind: str, blobs=(), bottom="", top="") -> bytes:
    out = field(1, name.encode()) + field(2, kind.encode())
    if bottom:
        out += field(3, bottom.encode())
    if top:
        out += field(4, top.encode())
    return out + b"".join(field(7, b) for b in blobs)


V1 = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14, "Dropout": 6, "SoftmaxWithLoss": 21}


def layer_v1(name: str, kind: str, blobs=(), bottom="", top="") -> bytes:
    out = b""
    if bottom:
        out += field(2, bottom.encode())
    if top:
        out += field(3, top.encode())
    out += field(4, name.encode()) + key(5, 0) + varint(V1[kind])
    return out + b"".join(field(6, b) for b in blobs)


def caffemodel(state: dict, *, v1: bool = False) -> bytes:
    """A NetParameter holding ``state`` (our keys: conv1.weight …) as Caffe layers, in Caffe's order,
    with the weightless layers around them. ``v1`` writes the V1 ``layers`` with legacy 4-d shapes."""
    make, number = (layer_v1, 2) if v1 else (layer_v2, 100)
    names = sorted({k.rsplit(".", 1)[0] for k in state}, key=lambda n: (n.startswith("fc"), int(n[-1])))
    parts = [field(1, b"AlexNet"), field(number, make("data", "Data", top="data"))]
    previous = "data"
    for name in names:
        kind = "Convolution" if name.startswith("conv") else "InnerProduct"
        blobs = [blob(state[f"{name}.weight"].numpy(), legacy=v1), blob(state[f"{name}.bias"].numpy(), legacy=v1)]
        parts.append(field(number, make(name, kind, blobs, bottom=previous, top=name)))
        parts.append(field(number, make(f"relu{name[-1]}", "ReLU", bottom=name, top=name)))
        previous = name
    parts.append(field(number, make("loss", "SoftmaxWithLoss", bottom=previous, top="loss")))
    return b"".join(parts)


def mean_binaryproto(mean_bgr_chw: np.ndarray, legacy: bool = True) -> bytes:
    return blob(np.asarray(mean_bgr_chw)[None], legacy=legacy)


# -- the tests ----------------------------------------------------------------------------------
def small_caffe_net():
    """A bvlc-shaped net at small scale (two towers, LRN k=1), the 'Caffe network' of the tests."""
    return models.create("alexnet_small", num_classes=10, width=0.25, init="kaiming").eval()


@pytest.mark.parametrize("v1", [False, True], ids=["V2 layer", "V1 layers"])
def test_imported_weights_compute_what_caffe_computes(v1):
    net = small_caffe_net()
    state = net.state_dict()
    layers = caffe.parse_net(memoryview(caffemodel(state, v1=v1)))
    assert [l.name for l in layers if l.blobs] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert {l.type for l in layers if l.blobs} == {"Convolution", "InnerProduct"}
    imported = small_caffe_net()
    imported.load_state_dict(caffe.caffe_state_dict(layers, imported.state_dict(), "test"))

    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (4, 3, 32, 32), generator=g).float()
    mean_rgb = torch.rand(3, 32, 32, generator=g) * 255
    with torch.no_grad():
        caffe_out = net(rgb.flip(1) - mean_rgb.flip(0))  # Caffe: BGR pixels minus the BGR mean
        ours = imported(rgb - mean_rgb)  # ours: RGB pixels minus the RGB mean
    torch.testing.assert_close(ours, caffe_out, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(imported.conv1.weight, state["conv1.weight"].flip(1))
    torch.testing.assert_close(imported.fc6.weight, state["fc6.weight"])


def test_mean_binaryproto_becomes_rgb_hwc(tmp_path):
    bgr = np.stack([np.full((6, 5), 104.0), np.full((6, 5), 117.0), np.arange(30.0).reshape(6, 5)])
    for legacy in (True, False):
        path = tmp_path / f"mean{legacy}.binaryproto"
        path.write_bytes(mean_binaryproto(bgr, legacy=legacy))
        mean = caffe.read_mean(path)
        assert mean.shape == (6, 5, 3) and mean.dtype == np.float32
        np.testing.assert_array_equal(mean[..., 0], bgr[2])  # R was Caffe's third channel
        np.testing.assert_array_equal(mean[..., 2], 104.0)


def test_mismatches_name_the_tensor_and_both_shapes():
    net = small_caffe_net()
    expected = net.state_dict()
    wrong = dict(expected)
    wrong["fc8.weight"] = torch.zeros(7, expected["fc8.weight"].shape[1])
    layers = caffe.parse_net(memoryview(caffemodel(wrong)))
    with pytest.raises(AlexNetError, match=r"m.caffemodel: tensor 'fc8.weight' has shape \(7, 128\), expected \(10, 128\)"):
        caffe.caffe_state_dict(layers, expected, "m.caffemodel")
    missing = {k: v for k, v in expected.items() if not k.startswith("conv3")}
    layers = caffe.parse_net(memoryview(caffemodel(missing)))
    with pytest.raises(AlexNetError, match=r"'conv3.weight' \(48, 32, 3, 3\) is missing"):
        caffe.caffe_state_dict(layers, expected, "m.caffemodel")
    extra = dict(expected, **{"fc9.weight": torch.zeros(3, 3), "fc9.bias": torch.zeros(3)})
    layers = caffe.parse_net(memoryview(caffemodel(extra)))
    with pytest.raises(AlexNetError, match="unexpected tensors fc9.bias, fc9.weight"):
        caffe.caffe_state_dict(layers, expected, "m.caffemodel")


def test_files_that_are_not_caffe_models_are_one_line_errors(tmp_path):
    cases = {
        "text.caffemodel": b"name: 'AlexNet'  # a prototxt, not the binary weights\n",
        "empty.caffemodel": b"",
        "truncated.caffemodel": caffemodel(small_caffe_net().state_dict())[:5000],
        "noweights.caffemodel": field(1, b"AlexNet") + field(100, layer_v2("data", "Data")),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AlexNetError) as info:
            caffe.read_caffemodel(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message, message
    with pytest.raises(AlexNetError, match="no such caffemodel"):
        caffe.read_caffemodel(tmp_path / "missing.caffemodel")


@pytest.mark.parametrize("arch,v1", [("alexnet", True)])  # the real bvlc_alexnet file is V1
def test_import_command_writes_a_full_size_checkpoint(tmp_path, arch, v1, capsys):
    """The real sizes (60,965,224 parameters), through ``alexnet import caffe``."""
    registry = caffe.ARCHS[arch]
    torch.manual_seed(3)
    net = models.create(registry).eval()
    model_path = tmp_path / f"{arch}.caffemodel"
    model_path.write_bytes(caffemodel(net.state_dict(), v1=v1))
    mean_bgr = np.stack([np.full((256, 256), 104.0), np.full((256, 256), 117.0), np.full((256, 256), 123.0)])
    mean_path = tmp_path / "mean.binaryproto"
    mean_path.write_bytes(mean_binaryproto(mean_bgr))
    out = tmp_path / "imported.pt"
    assert cli.main(["import", "caffe", str(model_path), "--mean", str(mean_path), "--arch", arch, "--out", str(out)]) == 0
    ckpt = checkpoint.load(out)
    assert ckpt.model == registry and len(ckpt.classes) == 1000 and ckpt.input_size == 227
    assert ckpt.preprocess["pipeline"]["normalize"] == "mean_image" and ckpt.preprocess["pipeline"]["crop"] == 227
    mean = ckpt.preprocess["stats"]["mean_image"]
    assert tuple(mean.shape) == (256, 256, 3) and mean[0, 0].tolist() == [123.0, 117.0, 104.0]
    torch.testing.assert_close(ckpt.state_dict["conv1.weight"], net.state_dict()["conv1.weight"].flip(1))
    torch.testing.assert_close(ckpt.state_dict["fc8.bias"], net.state_dict()["fc8.bias"])
    # refuses to overwrite
    assert cli.main(["import", "caffe", str(model_path), "--arch", arch, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


# -- the architecture from the file's layer order -----------------------------------------------
def caffemodel_with_order(state: dict, arch: str, *, v1: bool = False) -> bytes:
    """A full-layer NetParameter as Caffe writes one: every layer, weightless ones included, in the
    order of bvlc_alexnet's (conv relu norm pool) or CaffeNet's (conv relu pool norm) train_val."""
    make, number = (layer_v1, 2) if v1 else (layer_v2, 100)
    parts = [field(1, b"AlexNet"), field(number, make("data", "Data", top="data"))]
    for i in range(1, 6):
        name = f"conv{i}"
        blobs = [blob(state[f"{name}.weight"].numpy(), legacy=v1), blob(state[f"{name}.bias"].numpy(), legacy=v1)]
        parts.append(field(number, make(name, "Convolution", blobs)))
        parts.append(field(number, make(f"relu{i}", "ReLU")))
        stage = {1: ("norm", "pool"), 2: ("norm", "pool"), 5: ("pool",)}.get(i, ())
        if arch == "caffenet":
            stage = tuple(reversed(stage))
        for kind in stage:
            parts.append(field(number, make(f"{kind}{i}", "LRN" if kind == "norm" else "Pooling")))
    for name in ("fc6", "fc7", "fc8"):
        blobs = [blob(state[f"{name}.weight"].numpy(), legacy=v1), blob(state[f"{name}.bias"].numpy(), legacy=v1)]
        parts.append(field(number, make(name, "InnerProduct", blobs)))
    return b"".join(parts)


@pytest.mark.parametrize("v1", [False, True], ids=["V2 layer", "V1 layers"])
def test_architecture_is_read_from_the_layer_order_and_a_contradiction_refused(tmp_path, v1, capsys):
    state = small_caffe_net().state_dict()
    for arch, other in (("alexnet", "caffenet"), ("caffenet", "alexnet")):
        path = tmp_path / f"{arch}{int(v1)}.caffemodel"
        path.write_bytes(caffemodel_with_order(state, arch, v1=v1))
        layers = caffe.read_caffemodel(path)
        assert caffe.detect_arch(layers) == arch
        assert caffe.resolve_arch(layers, None, str(path)) == caffe.resolve_arch(layers, arch, str(path)) == arch
        with pytest.raises(AlexNetError) as info:
            caffe.resolve_arch(layers, other, str(path))
        message = str(info.value)
        assert path.name in message and f"not --arch {other}" in message and f"--arch {arch}" in message and "\n" not in message
        # through the command: refused before anything is written
        out = tmp_path / f"{arch}{int(v1)}-as-{other}.pt"
        assert cli.main(["import", "caffe", str(path), "--arch", other, "--out", str(out)]) == 2
        assert f"its layers are {arch}'s" in capsys.readouterr().err and not out.exists()


def test_a_file_without_lrn_or_pooling_layers_needs_arch():
    layers = caffe.parse_net(memoryview(caffemodel(small_caffe_net().state_dict())))  # conv/fc and ReLUs only
    assert caffe.detect_arch(layers) is None
    assert caffe.resolve_arch(layers, "caffenet", "m.caffemodel") == "caffenet"
    with pytest.raises(AlexNetError, match="m.caffemodel: its layers do not show .*give --arch alexnet or --arch caffenet"):
        caffe.resolve_arch(layers, None, "m.caffemodel")


def test_a_deploy_prototxt_given_as_weights_is_named(tmp_path):
    text = b'# the deploy net\nname: "AlexNet"\nlayer {\n  name: "data"\n  type: "Input"\n  top: "data"\n}\n'
    for name in ("deploy.prototxt", "bvlc_alexnet.caffemodel"):
        (tmp_path / name).write_bytes(text)
        with pytest.raises(AlexNetError) as info:
            caffe.read_caffemodel(tmp_path / name)
        message = str(info.value)
        assert name in message and "text prototxt" in message and "give the .caffemodel file" in message
        assert "wire type" not in message
    binary = tmp_path / "bvlc_alexnet.caffemodel"
    binary.write_bytes(caffemodel_with_order(small_caffe_net().state_dict(), "alexnet"))
    assert caffe.read_caffemodel(binary)  # a binary caffemodel is not taken for a prototxt: its layers are read
