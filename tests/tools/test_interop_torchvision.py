"""torchvision import: an alexnet_owt checkpoint predicts what torchvision's model and transforms do."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from alexnet import checkpoint, cli
from alexnet.errors import AlexNetError
from alexnet.inference import evaluate
from alexnet.tools.interop.imagenet import imagenet_classes
from alexnet.tools.interop.torchvision import import_torchvision

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photographs of several shapes (portrait, landscape) saved as JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    torch.manual_seed(1)
    net = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path_factory.mktemp("tv") / "alexnet-owt.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_imported_checkpoint_predicts_as_torchvision(tmp_path, photos, torchvision_file):
    net, pth = torchvision_file
    out = tmp_path / "owt.pt"
    assert cli.main(["import", "torchvision", str(pth), "--out", str(out)]) == 0
    ckpt = checkpoint.load(out)
    assert ckpt.model == "alexnet_owt" and ckpt.input_size == 224
    assert ckpt.classes == imagenet_classes() and ckpt.classes[0] == "tench"
    assert ckpt.preprocess["pipeline"]["crop"] == 224 and ckpt.preprocess["pipeline"]["normalize"] == "channel"

    tv = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    with torch.no_grad():
        x = torch.stack([tv(Image.open(p).convert("RGB")) for p in photos])
        reference = torch.softmax(net(x), dim=1)

    results = evaluate.classify_images(photos, out, topk=5)
    for result, ref in zip(results, reference):
        assert result.error is None
        got = {p["index"]: p["probability"] for p in result.predictions}
        for index, probability in got.items():
            assert probability == pytest.approx(ref[index].item(), rel=1e-4, abs=1e-7)
        # the top-5 of torchvision holds the same classes, up to ties closer than float noise
        assert set(got) == set(ref.topk(5).indices.tolist()) or np.ptp(list(got.values())) < 1e-6

    # the inputs themselves agree pixel for pixel (up to float rounding of the normalisation)
    _, model, preprocess = evaluate.load_for_inference(out)
    from alexnet.data.transforms import downsample

    ours = torch.stack([preprocess.centre_crop(torch.from_numpy(np.array(downsample(np.array(Image.open(p).convert("RGB")), 256)))[None])[0]
                        for p in photos])
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(ours), net(x), rtol=1e-4, atol=1e-5)


def test_import_names_a_mismatched_or_missing_tensor(tmp_path, torchvision_file):
    base = torchvision_file[0].state_dict()
    path = tmp_path / "ten.pth"
    torch.save(dict(base, **{"classifier.6.weight": torch.zeros(10, 4096), "classifier.6.bias": torch.zeros(10)}), path)
    with pytest.raises(AlexNetError, match=r"ten.pth.*'fc8.weight' has shape \(10, 4096\), expected \(1000, 4096\)"):
        import_torchvision(path)
    torch.save({k: v for k, v in base.items() if k != "features.3.bias"}, path)
    with pytest.raises(AlexNetError, match=r"'conv2.bias' \(192,\) is missing"):
        import_torchvision(path)
    torch.save(dict(base, **{"features.12.weight": torch.zeros(3)}), path)
    with pytest.raises(AlexNetError, match="features.12.weight"):
        import_torchvision(path)


def test_legacy_serialization_and_wrapped_state_dicts_import(tmp_path, torchvision_file):
    """The published .pth predates torch's zip format; training scripts wrap and prefix the keys."""
    base = torchvision_file[0].state_dict()
    legacy = tmp_path / "legacy.pth"
    torch.save(base, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(import_torchvision(legacy).state_dict["fc8.weight"], base["classifier.6.weight"])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in base.items()}, "epoch": 90}, wrapped)
    assert torch.equal(import_torchvision(wrapped).state_dict["conv1.weight"], base["features.0.weight"])
