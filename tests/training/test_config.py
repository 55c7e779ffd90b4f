"""Settings checked when a run is resolved or started: numeric ranges, boolean model options, a batch larger than the data."""

import pytest
from helpers import tiny_config

from alexnet import models
from alexnet.errors import AlexNetError
from alexnet.training.config import resolve
from alexnet.training.loop import RunOptions, train


@pytest.mark.parametrize(("flags", "overrides", "message"), [
    ({"optim.lr": -1.0}, [], r"optim.lr=-1.0 \(--lr\) must be a positive number"),
    ({"optim.lr": float("nan")}, [], r"optim.lr=nan \(--lr\) must be a positive number"),
    ({"data.workers": -1}, [], r"data.workers=-1 \(--workers\) must be from 0 to 8 per CPU"),
    ({"checkpoint_every": -3}, [], r"checkpoint_every=-3 \(--checkpoint-every\) must be ≥ 0"),
    ({}, ["data.val_fraction=1.5"], r"data.val_fraction=1.5 must be in \[0, 1\)"),
    ({}, ["optim.momentum=1.0"], r"optim.momentum=1.0 must be in \[0, 1\)"),
])
def test_numeric_settings_are_range_checked(flags, overrides, message):
    with pytest.raises(AlexNetError, match=message):
        resolve("digits", flags, overrides)


@pytest.mark.parametrize("value", ["False", "maybe", "no", "yes"])
def test_boolean_model_options_refuse_strings(value, tmp_path):
    config = resolve("digits", {"device": "cpu"}, [f"model.options.lrn={value}"])
    assert config.model.options["lrn"] == value  # what the command line gave: a string, not a boolean
    with pytest.raises(ValueError, match=rf"alexnet_small option lrn={value!r} must be true or false"):
        train(config, RunOptions(out=tmp_path / "run", progress_bar=False))
    assert not (tmp_path / "run").exists()  # refused before anything was created
    models.check_options("alexnet_small", {"lrn": False, "width": 1})  # real booleans and ints for floats pass


def test_a_batch_larger_than_the_data_names_the_flag(tmp_path):
    with pytest.raises(AlexNetError, match=r"--batch-size 5000 .* larger than the 1259 training images .* smaller --batch-size"):
        train(tiny_config(batch_size=5000), RunOptions(out=tmp_path / "run", progress_bar=False))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("data.pipeline=papr", "setting data.pipeline: unknown pipeline 'papr' (did you mean 'paper'?)"),
    ("data.pipeline_options.cropp=3", "setting data.pipeline_options: unknown pipeline option 'cropp' (did you mean 'crop'?)"),
    ("data.pipeline_options.crop=abc", "pipeline option crop='abc' must be a whole number"),
    ("data.pipeline_options.crop=true", "pipeline option crop=True must be a whole number"),
    ("data.pipeline_options.flip=yes", "pipeline option flip='yes' must be true or false"),
    ("data.pipeline_options.lighting=-1", "pipeline option lighting=-1 must be ≥ 0"),
    ("data.pipeline_options.min_area=5", "pipeline option min_area=5 must be in (0, 1]"),
    ("data.pipeline_options.name=x", "unknown pipeline option 'name'"),
    ("model.options.num_classes=10", "setting model.options.num_classes: the number of classes is the data set's"),
])
def test_pipeline_and_reserved_model_options_are_checked_when_resolved(override, message):
    """Issue: these reached the builders and came out as an internal TypeError (or trained with flip='yes')."""
    with pytest.raises(AlexNetError) as caught:
        resolve("digits", {}, [override])
    assert message in str(caught.value)
    options = resolve("digits", {}, ["data.pipeline_options.lighting=0", "data.pipeline_options.flip=false"]).data.pipeline_options
    assert options["lighting"] == 0 and options["flip"] is False


def test_a_preset_file_that_is_not_a_toml_preset_is_named(tmp_path):
    """An empty .toml trained the full paper net on 8×8 digits; a .json said "unknown preset" and listed 26 names."""
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "p.json").write_text("{}")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    for name, message in (("empty.toml", "empty (a preset names at least its model"),
                          ("p.json", "a preset file is TOML named .toml"),
                          ("bin.toml", "bin.toml: not a TOML preset (not UTF-8 text)")):
        with pytest.raises(AlexNetError, match="") as caught:
            resolve(str(tmp_path / name), {}, [])
        assert message in str(caught.value) and "valid:" not in str(caught.value)
