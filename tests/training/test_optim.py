"""The paper's update rule after a learning-rate drop, and cuda-convnet2's dexp schedule."""

import pytest
import torch

from alexnet.training.config import resolve
from alexnet.training.optim import Schedule, dexp, make_optimizer, set_lr


class Fixed:
    """A schedule that gives ε per step from a list."""

    def __init__(self, rates):
        self.rates = rates

    def lr(self, step, biases=False):
        return self.rates[step]


@pytest.mark.parametrize("fused", [False, True])
def test_paper_update_equals_section_5_after_a_drop(fused):
    """v ← m·v − wd·ε·w − ε·g; w ← w + v, by hand in float64, against our optimiser over a drop of 10×."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    w0 = [p.detach().clone() for p in model.parameters()]
    config = resolve("paper", {}, [])
    assert config.optim.update == "paper"
    optimizer = make_optimizer(model, config.optim, torch.device("cpu"), fused=fused)
    rates, m, wd = [0.01, 0.01, 0.01, 0.001, 0.001, 0.0001], config.optim.momentum, config.optim.weight_decay
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    w, v = [t.clone() for t in w0], [torch.zeros_like(t) for t in w0]
    for step, eps in enumerate(rates):
        set_lr(optimizer, Fixed(rates), step)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        w_param = [torch.nn.Parameter(t.clone()) for t in w]
        torch.nn.functional.mse_loss(torch.nn.functional.linear(x, *w_param), y).backward()
        for i, p in enumerate(w_param):
            v[i] = m * v[i] - wd * eps * w[i] - eps * p.grad
            w[i] = w[i] + v[i]
    for p, expected in zip(model.parameters(), w):
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)


def test_torchs_form_differs_after_a_drop_and_agrees_before():
    """The two forms are the same at a constant ε and differ after a drop: the option is not a no-op."""
    def final(update, rates):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2).double()
        config = resolve("paper", {}, [f'optim.update="{update}"'])
        optimizer = make_optimizer(model, config.optim, torch.device("cpu"), fused=False)
        x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
        for step in range(len(rates)):
            set_lr(optimizer, Fixed(rates), step)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        return model.weight.detach()

    flat = [0.01] * 4
    torch.testing.assert_close(final("paper", flat), final("torch", flat), rtol=1e-12, atol=1e-14)
    dropped = [0.01, 0.01, 0.001, 0.001]
    assert not torch.allclose(final("paper", dropped), final("torch", dropped), rtol=1e-9, atol=1e-12)


def test_dexp_matches_cuda_convnet2():
    """lr.cu: rates base·tgt^(−i/(n−1)) for i < n−1, then base/tgt, each for an equal share of the run."""
    assert [dexp(p, 250, 4) for p in (0.0, 0.25, 0.26, 0.5, 0.51, 0.75, 0.76, 1.0)] == pytest.approx(
        [1, 1, 250 ** (-1 / 3), 250 ** (-1 / 3), 250 ** (-2 / 3), 250 ** (-2 / 3), 1 / 250, 1 / 250])
    assert [dexp(p, 25, 2) for p in (0.5, 0.6)] == pytest.approx([1, 1 / 25])
    config = resolve("digits", {"epochs": 4}, ['schedule.kind="dexp"', "schedule.tgt_factor=250.0", "schedule.num_steps=4",
                                                "schedule.bias_tgt_factor=25.0", "schedule.bias_num_steps=2"])
    s = Schedule(config, steps_per_epoch=10)
    assert s.lr(0) == pytest.approx(config.optim.lr) and s.lr(39) == pytest.approx(config.optim.lr / 250)
    assert s.lr(19, biases=True) == pytest.approx(config.optim.lr) and s.lr(21, biases=True) == pytest.approx(config.optim.lr / 25)


def test_cuda_convnet_layer_params_become_per_layer_weight_decay():
    """layer-params-conv-local-11pct.cfg's wc per layer: conv1/conv2 0, local3/local4 0.004, fc10 0.01;
    biases get no decay and lr ×2 (epsB = 2·epsW), whatever the layer."""
    from alexnet import models
    from alexnet.training.optim import param_groups

    config = resolve("cifar_conv_local", {"data.spec": "digits"}, [])
    model = models.create("cifar_conv_local", num_classes=10)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: (g["weight_decay"], g["lr"]) for g in param_groups(model, config.optim) for p in g["params"]}
    assert decay["conv1.weight"] == decay["conv2.weight"] == (0.0, 0.001)
    assert decay["local3.weight"] == decay["local4.weight"] == (0.004, 0.001)
    assert decay["fc10.weight"] == (0.01, 0.001)
    assert {v for k, v in decay.items() if k.endswith("bias")} == {(0.0, 0.002)}
    fc10 = resolve("cifar_18pct", {"data.spec": "digits"}, [])
    model = models.create("cifar_18pct", num_classes=10)
    groups = param_groups(model, fc10.optim)
    assert sorted(g["weight_decay"] for g in groups if not g["biases"]) == [0.004, 1.0]


def test_layer_settings_match_nested_modules_and_refuse_unknown_names():
    from alexnet import models
    from alexnet.errors import AlexNetError
    from alexnet.training.optim import layer_settings

    model = models.create("alexnet", num_classes=10)
    conv1 = [n for n in layer_settings(model, {"conv1": {"lr_mult": 0.5}})]
    assert conv1 and all(n.rpartition(".")[0].endswith("conv1") for n in conv1)
    with pytest.raises(AlexNetError, match=r"optim.layers.fc99: unknown layer 'fc99'; valid: conv1, "):
        layer_settings(model, {"fc99": {"weight_decay": 0.0}})
    with pytest.raises(AlexNetError, match=r"optim.layers.fc_8: unknown layer 'fc_8' \(did you mean 'fc8'\?\); valid: conv1, "):
        layer_settings(model, {"fc_8": {"weight_decay": 0.0}})
    with pytest.raises(AlexNetError, match="unknown setting 'optim.layers.fc10.wc'; valid in optim.layers.fc10: lr_mult, weight_decay"):
        resolve("cifar_18pct", {"data.spec": "digits"}, ["optim.layers.fc10.wc=1"])
    with pytest.raises(AlexNetError, match=r"optim.layers.fc10.weight_decay=-1 must be a number ≥ 0"):
        resolve("cifar_18pct", {"data.spec": "digits"}, ["optim.layers.fc10.weight_decay=-1"])


def test_multistep_drops_at_each_milestone_like_torchs_multisteplr():
    """18pct's "÷10 after 120 epochs, then after 10 more", against torch.optim.lr_scheduler.MultiStepLR."""
    from alexnet.errors import AlexNetError

    config = resolve("cifar_18pct", {"data.spec": "digits"}, [])
    assert (config.schedule.kind, config.schedule.milestones, config.epochs) == ("multistep", [120, 130], 140)
    schedule = Schedule(config, steps_per_epoch=3)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.optim.lr)
    torch_schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[120, 130], gamma=0.1)
    for epoch in range(140):
        assert schedule.lr(3 * epoch + 2) == pytest.approx(torch_schedule.get_last_lr()[0], rel=1e-12)
        optimizer.step()
        torch_schedule.step()
    for bad in ("[130, 120]", "[0, 5]", "[1.5]"):
        with pytest.raises(AlexNetError, match="schedule.milestones"):
            resolve("cifar_18pct", {"data.spec": "digits"}, [f"schedule.milestones={bad}"])
    with pytest.raises(AlexNetError, match="needs schedule.milestones"):
        resolve("digits", {}, ['schedule.kind="multistep"'])
