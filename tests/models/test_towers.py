"""§3.2's two-device placement trains: the same losses as the grouped model, a checkpoint that loads on one device.

Both "devices" are the CPU here: the placement's code paths (two towers, the cross-tower exchange,
the state dict merged and split again, the step that moves nothing) run the same on two GPUs.
"""

import copy

import pytest
import torch

from alexnet import checkpoint, models, runtime
from alexnet.errors import AlexNetError
from alexnet.training.config import OptimConfig, TrainConfig, resolve
from alexnet.training.loop import RunOptions, train
from alexnet.training.run_folder import RunFolder
from alexnet.training.step import make_train_step

CPU2 = ("cpu", "cpu")


def test_placed_alexnet_trains_as_the_grouped_model():
    """alexnet_small: the paper's design (groups 2 in conv2, conv4, conv5; each tower's own LRN) at 32 px."""
    torch.manual_seed(0)
    grouped = models.create("alexnet_small", num_classes=4, dropout=0.0)  # dropout off: the towers draw their own masks
    placed = models.TwoTowerAlexNet(copy.deepcopy(grouped), CPU2)
    assert placed.name == "alexnet_small" and placed.placement == (torch.device("cpu"),) * 2
    config = TrainConfig(optim=OptimConfig(lr=0.01))
    settings = config.runtime_settings("cpu")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)
    ours, theirs = make_train_step(placed, config, settings), make_train_step(grouped, config, settings)
    losses = [(ours(x, y)[1].item(), theirs(x, y)[1].item()) for _ in range(2)]
    assert all(a == pytest.approx(b, rel=1e-4) for a, b in losses) and losses[0][0] != losses[1][0]
    state = placed.state_dict()
    assert list(state) == list(grouped.state_dict())  # the grouped model's names and shapes
    for key, value in grouped.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_train_with_devices_writes_a_checkpoint_of_the_one_device_model(tmp_path):
    overrides = ["model.options.width=0.25", "data.workers=0", "max_steps=2", 'model.options.devices=["cpu", "cpu"]']
    config = resolve("digits", {"device": "cpu", "epochs": 1}, overrides)
    train(config, RunOptions(out=tmp_path / "run", progress_bar=False))
    ck = checkpoint.load(RunFolder(tmp_path / "run", write=False).last)
    assert ck.model == "alexnet_small" and "devices" not in ck.model_options
    model = checkpoint.restore_model(ck)
    assert type(model) is models.AlexNet
    placed = models.create("alexnet_small", **ck.model_options, devices=CPU2).eval()
    placed.load_state_dict(ck.state_dict)  # and back: the placement splits the grouped tensors again
    x = torch.randn(3, model.in_channels, model.input_size, model.input_size)
    with torch.no_grad():
        torch.testing.assert_close(placed(x), model(x), rtol=1e-4, atol=1e-5)


def test_placement_refuses_another_device_and_torchrun():
    placed = models.create("alexnet_small", width=0.25, devices=CPU2)
    with pytest.raises(AlexNetError, match="places itself on cpu, cpu; set device=cpu"):
        runtime.place(placed, runtime.RuntimeSettings(device="meta"))
    config = TrainConfig()
    with pytest.raises(AlexNetError, match="under torchrun leave it out"):
        make_train_step(placed, config, config.runtime_settings("cpu"), distributed=True)
    wrong = {**placed.state_dict(), "conv2.weight": torch.zeros(3, 3, 5, 5)}
    with pytest.raises(RuntimeError, match="conv2.weight"):
        placed.load_state_dict(wrong)
