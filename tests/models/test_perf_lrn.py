"""The fused LRN against the plain formula: forward, backward (float64 gradcheck), layouts, dtypes."""

import pytest
import torch
import torch.nn.functional as F

from alexnet import models
from alexnet.models import LocalResponseNorm
from alexnet.models.lrn import PlainLocalResponseNorm, local_response_norm, plain_local_response_norm


def formula(x, size, alpha_per_term, beta, k, groups):
    """b_i = a_i / (k + α'·Σ_{j=i−n//2}^{i+(n−1)//2} a_j²)^β within each group, written out by loop."""
    n, c, h, w = x.shape
    cg = c // groups
    out = torch.empty_like(x)
    for g in range(groups):
        for i in range(cg):
            lo, hi = max(0, i - size // 2), min(cg - 1, i + (size - 1) // 2)
            s = k + alpha_per_term * (x[:, g * cg + lo:g * cg + hi + 1] ** 2).sum(1)
            out[:, g * cg + i] = x[:, g * cg + i] / s ** beta
    return out


CASES = [  # size, alpha', beta, k, groups
    (5, 1e-4 / 5, 0.75, 2.0, 1),  # the paper as run (α/n), Caffe's grouping
    (5, 1e-4, 0.75, 2.0, 2),  # as printed, each tower on its own (§3.2)
    (4, 0.3, 0.6, 1.0, 2),  # even window: asymmetric, so the backward's transposed window matters
    (3, 0.5, 1.2, 0.5, 3),
    (1, 0.2, 0.75, 1.0, 1),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_forward_matches_the_formula(case, channels_last):
    size, a, b, k, groups = case
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = formula(x, size, a, b, k, groups)
    torch.testing.assert_close(local_response_norm(x, size, a, b, k, groups), expected)
    torch.testing.assert_close(plain_local_response_norm(x, size, a, b, k, groups), expected)
    y = local_response_norm(x.requires_grad_(), size, a, b, k, groups)  # the autograd.Function path
    torch.testing.assert_close(y.detach(), expected)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_backward_passes_gradcheck(case, channels_last):
    size, a, b, k, groups = case
    x = torch.randn(2, 6 * groups, 3, 3, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, a, b, k, groups), (x,))
    g = torch.randn_like(x)
    (fused,) = torch.autograd.grad(local_response_norm(x, size, a, b, k, groups), x, g)
    (plain,) = torch.autograd.grad(formula(x, size, a, b, k, groups), x, g)
    torch.testing.assert_close(fused, plain)


@pytest.mark.parametrize("convention", ["as_run", "as_printed"])
@pytest.mark.parametrize("groups", [1, 2])
def test_module_matches_torch_lrn_at_the_papers_scale(convention, groups):
    """Activations of post-ReLU size (up to ~50) where the LRN term is far from negligible."""
    fused = LocalResponseNorm(5, 1e-4, 0.75, 2.0, convention=convention, groups=groups)
    plain = PlainLocalResponseNorm(5, 1e-4, 0.75, 2.0, convention=convention, groups=groups)
    x = (torch.randn(3, 96, 7, 7) * 20).relu().requires_grad_(True)
    g = torch.randn(3, 96, 7, 7)
    y1, y2 = fused(x), plain(x)
    torch.testing.assert_close(y1, y2)
    (g1,) = torch.autograd.grad(y1, x, g)
    (g2,) = torch.autograd.grad(y2, x, g)
    torch.testing.assert_close(g1, g2)
    if groups == 1:  # and the plain layer is torch's own module, α' = α/n ⇔ torch's alpha
        alpha = fused.alpha_per_term * 5
        torch.testing.assert_close(y1, torch.nn.LocalResponseNorm(5, alpha, 0.75, 2.0)(x))


def test_bfloat16_within_its_tolerance():
    x = (torch.randn(2, 16, 5, 5, dtype=torch.float64) * 10).relu()
    g = torch.randn_like(x)
    exact = x.clone().requires_grad_(True)
    y = local_response_norm(exact, 5, 1e-4, 0.75, 2.0, 2)
    (gx,) = torch.autograd.grad(y, exact, g)
    low = x.bfloat16().requires_grad_(True)
    y16 = local_response_norm(low, 5, 1e-4, 0.75, 2.0, 2)
    (gx16,) = torch.autograd.grad(y16, low, g.bfloat16())
    assert y16.dtype == gx16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.double(), y, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx16.double(), gx, rtol=2e-2, atol=2e-2)


def test_bfloat16_where_the_normalisation_bites():
    """bf16 computes the LRN in bf16 (no fp32 round trip): at activations where α'Σa² is of the order
    of k (the paper's 0–255 scale after conv1), outputs and gradients stay within bf16's tolerance."""
    x = (torch.randn(2, 96, 7, 7, dtype=torch.float64) * 150).relu()
    g = torch.randn_like(x)
    exact = x.clone().requires_grad_(True)
    y = local_response_norm(exact, 5, 1e-4 / 5, 0.75, 2.0, 2)
    (gx,) = torch.autograd.grad(y, exact, g)
    s = 2.0 + 1e-4 / 5 * torch.nn.functional.avg_pool3d((x * x).unsqueeze(1), (5, 1, 1), 1, (2, 0, 0)).squeeze(1) * 5
    assert s.max() > 3.0  # the window's term matters: s is not ≈ k
    low = x.bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y16 = local_response_norm(low, 5, 1e-4 / 5, 0.75, 2.0, 2)
    (gx16,) = torch.autograd.grad(y16, low, g.bfloat16())
    torch.testing.assert_close(y16.double(), y, rtol=2e-2, atol=1e-1)
    torch.testing.assert_close(gx16.double(), gx, rtol=3e-2, atol=3e-2)


def test_bad_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match="groups=2"):
        LocalResponseNorm(groups=2)(torch.randn(1, 5, 2, 2))


def test_tracing_uses_the_plain_formula():
    layer = LocalResponseNorm(groups=2)
    x = torch.randn(1, 8, 3, 3)
    traced = torch.jit.trace(layer, x)
    assert "avg_pool3d" in str(traced.graph)
    torch.testing.assert_close(traced(x), layer(x))


def test_paper_model_fused_equals_plain_forward_and_backward():
    torch.manual_seed(0)
    fused = models.create("alexnet_small", num_classes=10, init="kaiming", dropout=0.0)
    plain = models.create("alexnet_small", num_classes=10, init="kaiming", dropout=0.0)
    plain.load_state_dict(fused.state_dict())
    for name, m in list(plain.named_children()):
        if isinstance(m, LocalResponseNorm):
            setattr(plain, name, PlainLocalResponseNorm(m.size, m.alpha, m.beta, m.k, convention=m.convention, groups=m.groups))
    x = torch.randn(4, 3, 32, 32) * 50
    y = torch.randint(0, 10, (4,))
    F.cross_entropy(fused(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-4, atol=1e-4)  # float32 rounding through 8 layers
    for (n, p), q in zip(fused.named_parameters(), plain.parameters()):  # atol by each gradient's scale (up to ~200):
        scale = q.grad.abs().max().item()  # with one thread on an AVX2 CPU, fc8's differs by 8e-5 at 192
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=max(1e-5, 2e-6 * scale), msg=n)


def test_window_weights_are_built_once_and_survive_inference_mode():
    """The banded weight is cached per shape/dtype/device; one first built under inference_mode is a
    plain tensor (an inference tensor could never be saved for backward) and the LRN still trains."""
    from alexnet.models.lrn import _window_weights, local_response_norm

    _window_weights.cache_clear()
    x = torch.rand(2, 12, 5, 5)
    with torch.inference_mode():
        local_response_norm(x, 5, 1e-4, 0.75, 2.0, groups=2)
    (weight, bias), = [_window_weights(12, 2, 2, 2, 1e-4, 2.0, torch.float32, x.device)]
    assert _window_weights.cache_info().hits == 1 and not weight.is_inference() and not bias.is_inference()
    a = x.clone().requires_grad_()
    local_response_norm(a, 5, 1e-4, 0.75, 2.0, groups=2).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert _window_weights.cache_info().hits > 1


# --- the compiled kernel (torch.compile'd passes, saving s alone) against the eager one and the formula


@pytest.fixture
def kernel():
    """Run the LRN's training step with the kernel the test names, and put the process's choice back."""
    from alexnet import runtime

    before = runtime.lrn_kernel()
    yield runtime.set_lrn_kernel
    runtime.set_lrn_kernel(before)


@pytest.mark.parametrize("case", [CASES[1], CASES[2]])
def test_compiled_kernel_passes_gradcheck_and_equals_the_eager_one(kernel, case):
    size, a, b, k, groups = case
    x = (torch.randn(2, 6 * groups, 3, 3, dtype=torch.float64) * 3).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    results = {}
    for name in ("eager", "compiled"):
        kernel(name)
        t = x.clone().requires_grad_(True)
        y = local_response_norm(t, size, a, b, k, groups)
        (results[name],) = torch.autograd.grad(y, t, g)
        torch.testing.assert_close(y.detach(), formula(x, size, a, b, k, groups))
    from alexnet.models import lrn

    assert not lrn._Compiled.failed and lrn._Compiled.passes is not None  # it did compile
    torch.testing.assert_close(results["compiled"], results["eager"])
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, a, b, k, groups), (x.clone().requires_grad_(True),))


def test_compiled_kernel_in_bfloat16_is_as_close_to_float64_as_the_eager_one(kernel):
    """bf16 at the paper's scale: the compiled passes round once (they compute in fp32 inside), the eager
    ones at every pass, so the compiled kernel is at least as close to the float64 result."""
    x = (torch.randn(2, 96, 7, 7, dtype=torch.float64) * 150).relu().contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    exact = x.clone().requires_grad_(True)
    y = local_response_norm(exact, 5, 1e-4 / 5, 0.75, 2.0, 2)
    (gx,) = torch.autograd.grad(y, exact, g)
    errors = {}
    for name in ("eager", "compiled"):
        kernel(name)
        low = x.bfloat16().requires_grad_(True)
        y16 = local_response_norm(low, 5, 1e-4 / 5, 0.75, 2.0, 2)
        (gx16,) = torch.autograd.grad(y16, low, g.bfloat16())
        assert y16.dtype == gx16.dtype == torch.bfloat16 and y16.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y16.double(), y, rtol=2e-2, atol=1e-1)
        torch.testing.assert_close(gx16.double(), gx, rtol=3e-2, atol=3e-2)
        errors[name] = ((y16.double() - y).abs().max().item(), (gx16.double() - gx).abs().max().item())
    assert errors["compiled"][0] <= errors["eager"][0] and errors["compiled"][1] <= errors["eager"][1] * 1.5, errors


def test_the_auto_rule_compiles_only_a_training_step_on_large_cpu_maps(kernel, monkeypatch):
    from alexnet.models import lrn

    kernel("auto")
    big = torch.zeros(1, lrn.COMPILED_MIN_VALUES, 1, 1)
    small = torch.zeros(1, lrn.COMPILED_MIN_VALUES - 1, 1, 1)
    assert lrn.use_compiled_kernel(big) and not lrn.use_compiled_kernel(small)
    demo = torch.zeros(64, 64, 24, 24)  # 2.4 M values, but 36,864 an image: a small-image net stays eager
    paper = torch.zeros(4, 96, 55, 55)  # conv1's LRN in the paper's net at batch 4
    assert not lrn.use_compiled_kernel(demo) and lrn.use_compiled_kernel(paper)
    kernel("eager")
    assert not lrn.use_compiled_kernel(big)
    kernel("compiled")
    assert lrn.use_compiled_kernel(small)
    monkeypatch.setattr(lrn._Compiled, "failed", True)
    assert not lrn.use_compiled_kernel(small)  # a compile that failed once is not tried again


def test_a_compile_that_fails_falls_back_to_the_same_numbers_once(kernel, monkeypatch, caplog):
    from alexnet.models import lrn

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no C++ compiler\nmore lines")

    monkeypatch.setattr(lrn._Compiled, "passes", None)
    monkeypatch.setattr(lrn._Compiled, "failed", False)
    monkeypatch.setattr(torch, "compile", broken)
    kernel("compiled")
    x = torch.randn(2, 12, 4, 4, dtype=torch.float64).requires_grad_(True)
    with caplog.at_level("WARNING", logger="alexnet.models.lrn"):
        y = local_response_norm(x, 5, 1e-4, 0.75, 2.0, 2)
        y.sum().backward()
    torch.testing.assert_close(y.detach(), formula(x.detach(), 5, 1e-4, 0.75, 2.0, 2))
    assert lrn._Compiled.failed
    assert [r.getMessage() for r in caplog.records] == [
        "LRN: its compiled kernel failed to build (InductorError: no C++ compiler); the eager kernel runs instead"]


def test_runtime_settings_name_the_kernel_and_refuse_a_typo():
    from alexnet import runtime

    with pytest.raises(ValueError, match=r"LRN kernel 'compield' is not one of auto, eager, compiled \(did you mean 'compiled'\?\)$"):
        runtime.RuntimeSettings(lrn_kernel="compield")
    before = runtime.lrn_kernel()
    try:
        runtime.apply_process_settings(runtime.RuntimeSettings(lrn_kernel="eager", tune_allocator=False))
        assert runtime.lrn_kernel() == "eager"
    finally:
        runtime.set_lrn_kernel(before)


def test_a_training_step_with_the_compiled_kernel_equals_the_eager_one(kernel):
    """Two SGD steps of the paper's small net, channels_last fp32, through the step `alexnet train`
    runs: the same losses and weights with either kernel."""
    from alexnet import runtime
    from alexnet.training.config import OptimConfig, TrainConfig
    from alexnet.training.step import make_train_step

    x, y = torch.randn(4, 3, 32, 32) * 50, torch.randint(0, 10, (4,))
    results = {}
    for name in ("eager", "compiled"):
        kernel(name)
        torch.manual_seed(0)
        model = models.create("alexnet_small", num_classes=10, init="kaiming", dropout=0.0)
        step = make_train_step(model, TrainConfig(optim=OptimConfig(lr=0.01)), runtime.RuntimeSettings())
        losses = [float(step(x.contiguous(memory_format=torch.channels_last), y)[1]) for _ in range(2)]
        results[name] = losses, [p.detach().clone() for p in model.parameters()]
    torch.testing.assert_close(results["compiled"][0], results["eager"][0], rtol=1e-5, atol=1e-6)
    for p, q in zip(results["compiled"][1], results["eager"][1]):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)  # fp32 rounding, two steps on inputs of ±50
