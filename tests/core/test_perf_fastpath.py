"""The fast path changes speed, not results: channels_last, fused SGD and autocast against the plain step."""

import copy

import pytest
import torch

from alexnet import models, runtime
from alexnet.errors import AlexNetError
from alexnet.models.lrn import PlainLocalResponseNorm
from alexnet.tools.bench.step import plain_lrn, train_step
from alexnet.training.config import resolve


def small_net():
    torch.manual_seed(0)
    return models.create("alexnet_small", num_classes=10, dropout=0.0)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


def train(model, fast, steps=2):
    step = train_step(model, fast)  # the step alexnet train runs, as the bench builds it
    x, y = batch()
    losses = [step(x, y)[1].item() for _ in range(steps)]
    return model, losses


def test_fast_fp32_step_equals_the_plain_step():
    """Plain: NCHW, the plain LRN formula, a for-loop SGD. Fast: channels_last, fused LRN, fused SGD."""
    plain = runtime.RuntimeSettings(channels_last=False, fused_optimizer=False, tune_allocator=False)
    plain_model, plain_losses = train(plain_lrn(small_net()), plain)
    assert any(isinstance(m, PlainLocalResponseNorm) for m in plain_model.modules())
    fast_model, fast_losses = train(small_net(), runtime.RuntimeSettings(channels_last=True, fused_optimizer=True))
    assert fast_model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast_model.conv2.weight.shape == (128, 32, 5, 5)  # the two towers stay one grouped conv
    assert fast_losses == pytest.approx(plain_losses, rel=1e-4)
    for (name, p), q in zip(fast_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("precision", ["bf16"])
def test_autocast_step_within_its_tolerance(precision):
    _, exact = train(small_net(), runtime.RuntimeSettings(), steps=1)
    _, low = train(small_net(), runtime.RuntimeSettings(precision=precision), steps=1)
    assert low == pytest.approx(exact, rel=3e-2)


def test_predict_in_channels_last_and_bf16_matches_fp32():
    model = small_net().eval()
    x, _ = batch()
    with torch.no_grad():
        expected = model(x)
    fast = runtime.RuntimeSettings(channels_last=True)
    torch.testing.assert_close(runtime.predict(copy.deepcopy(model).to(memory_format=torch.channels_last), x, fast), expected,
                               rtol=1e-4, atol=1e-4)
    low = runtime.predict(model, x, runtime.RuntimeSettings(precision="bf16"))
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, expected, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_owt", "alexnet_small"])
def test_weights_cast_once_for_inference_give_autocasts_outputs_bit_for_bit(name):
    """for_inference at bf16 casts the weights autocast would cast at every call: the same numbers.

    Compared in the same layout (channels_last): where bf16 is emulated (an AVX2 CPU) NCHW and
    channels_last convolutions sum in different orders, cast or not."""
    from alexnet.inference.evaluate import input_probabilities

    torch.manual_seed(0)
    model = models.create(name, num_classes=10).eval()
    x = torch.randn(2, 1, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(1))
    expected = input_probabilities(runtime.place(copy.deepcopy(model), runtime.RuntimeSettings()), x, "bf16")
    cast = runtime.for_inference(copy.deepcopy(model), runtime.RuntimeSettings(precision="bf16"))
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    assert torch.equal(input_probabilities(cast, x, "bf16"), expected)
    kept = runtime.for_inference(copy.deepcopy(model), runtime.RuntimeSettings())  # fp32: only the layout changes
    assert {p.dtype for p in kept.parameters()} == {torch.float32}
    assert kept.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_model_with_batch_norm_keeps_fp32_weights_for_inference():
    model = models.create("resnet18_d2l", num_classes=10, input_size=32)
    runtime.for_inference(model, runtime.RuntimeSettings(precision="bf16"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast runs batch norm on fp32 weights


def test_devices_and_precisions_are_checked():
    assert runtime.resolve_device("cpu").type == "cpu"
    assert runtime.resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(AlexNetError, match="CUDA is not available"):
            runtime.resolve_device("cuda")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        runtime.RuntimeSettings(precision="fp8")
    assert runtime.precision_supported(torch.device("cpu"), "fp32")


@pytest.mark.parametrize("native", [True, False])
def test_an_emulated_precision_is_said_once_where_the_run_starts(monkeypatch, caplog, native):
    """bf16 on a CPU without AVX512-BF16/AMX runs, slower than fp32: the user is told in one line."""
    monkeypatch.setattr(runtime, "precision_supported", lambda device, precision: native or precision == "fp32")
    monkeypatch.setattr(runtime, "tune_cpu_allocator", lambda: True)
    with caplog.at_level("WARNING", logger="alexnet.runtime"):
        runtime.apply_process_settings(runtime.RuntimeSettings(precision="fp32"))
        runtime.apply_process_settings(runtime.RuntimeSettings(precision="bf16"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == (0 if native else 1)  # fp32 says nothing; bf16, where emulated, one line
    if not native:
        assert lines[0].startswith("bf16 is not native on this cpu") and "--precision fp32" in lines[0]
    assert runtime.warn_if_emulated(torch.device("cpu"), "bf16") is not native


def test_allocator_tuning_is_idempotent():
    first = runtime.tune_cpu_allocator()
    assert isinstance(first, bool) and runtime.tune_cpu_allocator() == first
    assert runtime.allocator_tuned() == first  # the public question the bench asks


def test_process_settings_change_only_where_they_are_applied(monkeypatch):
    """Building a model's runtime or a training step leaves the process alone; apply_process_settings does it."""
    calls = []
    monkeypatch.setattr(runtime, "tune_cpu_allocator", lambda: calls.append("allocator") or True)
    runtime.prepare_model(small_net(), runtime.RuntimeSettings())
    train(small_net(), runtime.RuntimeSettings(), steps=1)
    assert calls == []
    runtime.apply_process_settings(runtime.RuntimeSettings(tune_allocator=False))
    assert calls == []
    runtime.apply_process_settings(runtime.RuntimeSettings())
    assert calls == ["allocator"]
    monkeypatch.setattr(runtime, "limit_malloc_arenas", lambda n: calls.append(f"arenas {n}") or True)
    runtime.apply_process_settings(runtime.RuntimeSettings(malloc_arenas=1))  # what alexnet serve asks for
    assert calls == ["allocator", "arenas 1", "allocator"]
    with pytest.raises(ValueError, match="malloc_arenas -1"):
        runtime.RuntimeSettings(malloc_arenas=-1)


def test_train_config_keys_name_the_runtime_settings():
    """The keys presets and --set use (precision, channels_last, compile) become one RuntimeSettings."""
    config = resolve("digits", {}, ['precision="bf16"', "channels_last=false", "compile=true"])
    settings = config.runtime_settings(torch.device("cpu"))
    assert settings == runtime.RuntimeSettings(device="cpu", precision="bf16", channels_last=False, compile=True)
    assert settings.memory_format == torch.contiguous_format

