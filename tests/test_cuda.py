"""The correctness checks with a CUDA branch: skipped without a GPU, run by ``pytest -k cuda`` in the device check.

Each compares the CUDA result with the CPU's (in float64 where it can): the fused LRN, the fast
training step in fp32 and bf16, the two-tower placement with both towers on ``cuda:0``, batches
moved to the GPU, and nvJPEG's decode of a JPEG store against libjpeg-turbo's.
"""

import numpy as np
import pytest
import torch

from alexnet import models, runtime
from alexnet.data import ImageSet, iter_batches, open_dataset
from alexnet.data.prepare import PrepareConfig, prepare
from alexnet.models.layers import local_response_norm
from alexnet.tools.bench.step import train_step

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


@cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_fused_lrn_forward_and_backward_match_the_cpu_in_float64(channels_last):
    x = torch.randn(4, 96, 27, 27, dtype=torch.float64) * 3
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xh = x.contiguous(memory_format=fmt).clone().requires_grad_()
    xc = x.to("cuda").contiguous(memory_format=fmt).detach().requires_grad_()
    yc, yh = local_response_norm(xc, 5, 1e-4 / 5, 0.75, 2.0, 2), local_response_norm(xh, 5, 1e-4 / 5, 0.75, 2.0, 2)
    assert _rel(yc, yh) < 1e-12
    g = torch.randn_like(yh)
    yc.backward(g.to("cuda"))
    yh.backward(g)
    assert _rel(xc.grad, xh.grad) < 1e-12


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_fast_step_losses_follow_the_cpu(precision):
    def losses(device: str, precision: str) -> list[float]:
        torch.manual_seed(0)
        model = models.create("alexnet", num_classes=10)
        step = train_step(model, runtime.RuntimeSettings(device=device, precision=precision))  # as alexnet train runs it
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 3, 227, 227, generator=g), torch.randint(0, 10, (8,), generator=g)
        return [float(step(x.to(device), y.to(device))[1]) for _ in range(3)]

    cpu, gpu = losses("cpu", "fp32"), losses("cuda", precision)
    assert all(np.isfinite(gpu))
    assert gpu == pytest.approx(cpu, rel=1e-3 if precision == "fp32" else 3e-2)  # fp32: TF32 convolutions


@cuda
def test_cuda_two_towers_on_one_device_equal_the_grouped_model():
    torch.manual_seed(0)
    grouped = models.create("alexnet").eval()
    placed = models.TwoTowerAlexNet(grouped, ("cuda:0", "cuda:0")).eval()
    x = torch.randn(8, 3, 227, 227)
    with torch.no_grad():
        expected = grouped.double()(x.double())
        grouped.float()
        assert _rel(placed(x.to("cuda:0")), expected) < 1e-3  # TF32 convolutions on both
        assert _rel(placed(x.to("cuda:0")), grouped.to("cuda:0")(x.to("cuda:0"))) < 1e-5


@cuda
def test_cuda_batches_arrive_equal_and_on_the_device():
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    data = ImageSet(labels=np.arange(10) % 3, classes=["a", "b", "c"], images=images)
    got = [(x, y) for x, y in iter_batches(data, 4, size=8, device="cuda", shuffle=True, seed=1)]
    want = list(iter_batches(data, 4, size=8, shuffle=True, seed=1))
    for (x, y), (ex, ey) in zip(got, want):
        assert x.is_cuda and y.is_cuda
        torch.testing.assert_close(x.cpu(), ex)
        torch.testing.assert_close(y.cpu(), ey)


@cuda
def test_cuda_nvjpeg_decodes_a_jpeg_store_as_libjpeg_turbo_does(tmp_path):
    from alexnet.tools.bench.photos import make_photo_folder

    photos, store = make_photo_folder(tmp_path / "photos", 24), tmp_path / "jpeg"
    prepare(PrepareConfig(source=str(photos.parent), out=str(store), size=64, workers=0, progress=False, encoding="jpeg"))
    train = open_dataset(store).split("train")
    cpu = torch.cat([x for x, _ in iter_batches(train, 8, size=64, decode="cpu")])
    batches = [(x, y) for x, y in iter_batches(train, 8, size=64, device="cuda")]  # nvJPEG, batched
    assert all(x.is_cuda and x.dtype == torch.uint8 for x, _ in batches)
    gpu = torch.cat([x for x, _ in batches]).cpu()
    assert gpu.shape == cpu.shape == (24, 64, 64, 3)
    diff = (gpu.int() - cpu.int()).abs()
    assert diff.float().mean() < 0.5 and diff.max() <= 8  # the IDCTs may differ by a level here and there
