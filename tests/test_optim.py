"""The paper's update rule after a learning-rate drop, and cuda-convnet2's dexp schedule."""

import pytest
import torch

from alexnet.config import resolve
from alexnet.optim import Schedule, dexp, make_optimizer, set_lr


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
