"""The checks with a device branch, each run on every device there is: ``cpu`` always, ``cuda`` where present.

The body is the same on both, so a test whose API has drifted fails in the ordinary CPU suite
instead of skipping on every machine without a GPU (issue 22). Each compares a device's result with
a plain float64 or fp32 CPU reference: the fused LRN against the formula's autograd, the training
step in fp32 and bf16 against a textbook SGD step, the two-tower placement against the grouped
model, batches moved to the device, and the batched JPEG decode (nvJPEG on CUDA, torchvision's
libjpeg-turbo on the CPU) against the CPU workers' libjpeg-turbo. The device check
(benchmarks/gpu_check.py) runs this file with ``-k cuda``: no test name here may contain "cuda" or
"cpu" other than through its device parameter.
"""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import train_step

from alexnet import models
from alexnet.data import ImageSet, iter_batches, open_dataset
from alexnet.data.prepare import PrepareConfig, prepare
from alexnet.models.lrn import local_response_norm, plain_local_response_norm

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_lrn_forward_and_backward_match_the_formula_in_float64(device, channels_last):
    x = torch.randn(4, 96, 27, 27, dtype=torch.float64) * 3
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xd = x.to(device).contiguous(memory_format=fmt).detach().requires_grad_()
    xr = x.clone().requires_grad_()
    yd, yr = local_response_norm(xd, 5, 1e-4 / 5, 0.75, 2.0, 2), plain_local_response_norm(xr, 5, 1e-4 / 5, 0.75, 2.0, 2)
    assert yd.device.type == device
    assert _rel(yd, yr) < 1e-12
    g = torch.randn_like(yr)
    yd.backward(g.to(device))
    yr.backward(g)
    assert _rel(xd.grad, xr.grad) < 1e-12


@functools.cache
def plain_step_run() -> tuple[dict, torch.Tensor, torch.Tensor, list[float]]:
    """The paper's net without dropout (so no step draws masks), one batch, and the losses of three textbook
    steps in fp32 on the CPU (contiguous layout, unfused SGD): the initial weights, the batch, the losses."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 227, 227, generator=g), torch.randint(0, 10, (2,), generator=g)
    torch.manual_seed(0)
    model = models.create("alexnet", num_classes=10, dropout=0.0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return initial, x, y, losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fast_step_losses_follow_the_plain_step(device, precision):
    """``alexnet train``'s step (channels_last, fused SGD, autocast) on ``device`` against :func:`plain_step_run`."""
    initial, x, y, want = plain_step_run()
    model = models.create("alexnet", num_classes=10, dropout=0.0)
    model.load_state_dict(initial)
    step = train_step(model, device, precision)
    got = [step(x, y)[1].item() for _ in range(3)]
    assert next(model.parameters()).device.type == device
    assert all(np.isfinite(got))
    assert got == pytest.approx(want, rel=1e-3 if precision == "fp32" else 3e-2)  # fp32: TF32 convolutions on CUDA


@pytest.mark.parametrize("device", DEVICES)
def test_two_towers_on_one_device_equal_the_grouped_model(device):
    torch.manual_seed(0)
    grouped = models.create("alexnet", num_classes=10).eval()
    placed = models.TwoTowerAlexNet(grouped, (device, device)).eval()
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        expected = grouped.double()(x.double())
        grouped.float()
        assert _rel(placed(x.to(device)), expected) < 1e-3  # TF32 convolutions on CUDA
        assert _rel(placed(x.to(device)), grouped.to(device)(x.to(device))) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_batches_arrive_equal_and_on_the_device(device):
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    data = ImageSet(labels=np.arange(10) % 3, classes=["a", "b", "c"], images=images)
    got = [(x, y) for x, y in iter_batches(data, 4, size=8, device=device, shuffle=True, seed=1)]
    want = list(iter_batches(data, 4, size=8, shuffle=True, seed=1, prefetch=0))
    assert len(got) == len(want) == 3
    for (x, y), (ex, ey) in zip(got, want):
        assert x.device.type == y.device.type == device
        torch.testing.assert_close(x.cpu(), ex)
        torch.testing.assert_close(y.cpu(), ey)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_decode_of_a_jpeg_store_equals_the_workers_decode(device, tmp_path):
    """``decode="device"``: one batched ``decode_jpeg`` on the device (nvJPEG on CUDA) against the workers' path."""
    from alexnet.tools.bench.photos import make_photo_folder

    photos, store = make_photo_folder(tmp_path / "photos", 24), tmp_path / "jpeg"
    prepare(PrepareConfig(source=str(photos.parent), out=str(store), size=64, workers=0, progress=False, encoding="jpeg"))
    train = open_dataset(store).split("train")
    reference = torch.cat([x for x, _ in iter_batches(train, 8, size=64, decode="cpu")])
    batches = [(x, y) for x, y in iter_batches(train, 8, size=64, device=device, decode="device")]
    assert all(x.device.type == device and x.dtype == torch.uint8 for x, _ in batches)
    decoded = torch.cat([x for x, _ in batches]).cpu()
    assert decoded.shape == reference.shape == (24, 64, 64, 3)
    diff = (decoded.int() - reference.int()).abs()
    assert diff.float().mean() < 0.5 and diff.max() <= 8  # the IDCTs may differ by a level here and there
