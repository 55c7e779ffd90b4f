"""Training configuration: typed dataclasses, TOML presets, and ``--set key=value`` overrides.

A preset is a TOML file in ``alexnet/presets/`` (one per recipe, reference §4 and §7). Resolution
order: the dataclass defaults ← the preset ← the command's flags (``--epochs``, ``--lr``, ...) ←
``--set section.key=value`` (values are TOML literals: ``--set optim.nesterov=true``,
``--set model.options.lrn=false``). An unknown key anywhere is an error that lists the valid ones.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexnet.data.transforms import PIPELINES, pipeline
from alexnet.errors import AlexNetError, most_workers, not_one_of, unknown
from alexnet.runtime import LRN_KERNELS, PRECISIONS, RuntimeSettings

if TYPE_CHECKING:
    import torch


@dataclass
class ModelConfig:
    name: str = "alexnet"  # a registry name (`alexnet models`)
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of its builder


@dataclass
class DataConfig:
    spec: str = "digits"  # `--data`: "digits", "fashion-mnist", or a path (image folder, CIFAR-10, IDX, packed store)
    pipeline: str = "paper"  # alexnet.data.transforms.PIPELINES
    pipeline_options: dict[str, Any] = field(default_factory=dict)  # field overrides of that Pipeline
    val_fraction: float = 0.1  # held out of train when the data has no val split (stratified, seeded)
    workers: int = 2  # decode processes for unpacked image folders
    drop_last: bool = True  # drop an epoch's partial last batch (d2l's DataLoader keeps it: its presets say false)


@dataclass
class OptimConfig:
    lr: float = 0.01  # ε (§5)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # §5 applies it to every weight: v ← 0.9v − 0.0005·ε·w − ε·∂L/∂w
    nesterov: bool = False
    bias_lr_mult: float = 1.0  # Caffe's lr_mult for biases (2 in bvlc solvers)
    bias_decay: bool = True  # Caffe: decay_mult 0 for biases
    update: str = "torch"  # "paper": §5's v ← m·v − ε·g (ε inside the momentum, as Caffe and cuda-convnet); alexnet.training.optim
    # per-layer settings by module name, as cuda-convnet's layer-params files and Caffe's per-layer
    # param {} give them: {"fc10": {"weight_decay": 0.01, "lr_mult": 1.0}}; alexnet.training.optim.layer_settings
    layers: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    kind: str = "plateau"  # plateau | step | multistep | cosine | dexp | constant
    factor: float = 0.1  # ×lr at each reduction (§5: "divided by 10")
    patience: int = 5  # plateau: epochs without a better val error before a reduction
    max_reductions: int = 3  # plateau: §5 "reduced three times"
    step_size: int = 30  # step: every this many epochs (or iterations, see unit)
    milestones: list[int] = field(default_factory=list)  # multistep: ×factor at each of these epochs (or iterations)
    unit: str = "epoch"  # step: "epoch" or "iteration" (Caffe solvers count iterations)
    tgt_factor: float = 250.0  # dexp: the final lr is lr / tgt_factor (cuda-convnet2's epsW: 250)
    num_steps: int = 4  # dexp: equal stages of the run (epsW: 4)
    bias_tgt_factor: float = 0.0  # dexp: the biases' own target (epsB: 25); 0: as the weights
    bias_num_steps: int = 2  # dexp: the biases' stages (epsB: 2)


@dataclass
class FinetuneConfig:
    init: str = ""  # `--init`: a checkpoint to start from (alexnet.training.finetune); "" trains from scratch
    freeze: str = "none"  # `--freeze`: none | features (everything but the FC layers and the head) | a layer name
    loaded_lr_mult: float = 1.0  # the loaded layers' lr as a multiple of the new ones' (0.1: Caffe's fc8 lr_mult 10)
    reset_head: bool = False  # re-initialise the classifier head even when its shape fits
    keep_preprocess: bool = True  # the checkpoint's normalisation and statistics, not the data's own


@dataclass
class TrainConfig:
    preset: str = "custom"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    epochs: int = 90  # §5: "roughly 90 cycles"
    max_steps: int = 0  # stop after this many optimiser steps in all (Caffe's max_iter); 0: epochs decide
    batch_size: int = 128  # §5; per process under torchrun
    label_smoothing: float = 0.0
    eval_views: int = 1  # views at the final evaluation: 1 or 10 (§4.1)
    test_each_epoch: bool = False  # the test split's loss and error after every epoch too, as d2l's train_ch6 plots them (never chooses)
    seed: int = 0
    # how the model runs: the keys of alexnet.runtime.RuntimeSettings that presets and --set name (TrainConfig.runtime_settings)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast to bf16/fp16 (parameters stay fp32); alexnet.training.step
    channels_last: bool = True  # NHWC: oneDNN's and cuDNN's native layout (docs/PERFORMANCE.md); false for NCHW
    compile: bool = False  # torch.compile the model (slower on a 2-core CPU, measured)
    tune_allocator: bool = True  # CPU: glibc keeps freed activations (measured 1.14–1.57× on both CPUs here; benchmarks/allocator.py)
    lrn_kernel: str = "auto"  # the LRN's training step: auto (compiled on large CPU maps, measured), eager, compiled (alexnet.models.lrn)
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: only at epoch ends)
    grad_clip: float = 0.0  # 0: off

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def runtime_settings(self, device: torch.device | str) -> RuntimeSettings:
        """The runtime settings these keys name, on ``device``: the resolved one (``auto`` made a
        device, a rank's own GPU under torchrun), which is why it is an argument and not the key."""
        return RuntimeSettings(device=str(device), precision=self.precision, channels_last=self.channels_last,
                               compile=self.compile, lrn_kernel=self.lrn_kernel, tune_allocator=self.tune_allocator)


LEGACY = {"amp": "precision"}  # renamed settings: read from configurations saved before the rename, and from --set
LEGACY_VALUES = {("precision", "off"): "fp32"}

CHOICES = {
    "schedule.kind": ("plateau", "step", "multistep", "cosine", "dexp", "constant"),
    "optim.update": ("torch", "paper"),
    "schedule.unit": ("epoch", "iteration"),
    "precision": PRECISIONS,
    "lrn_kernel": LRN_KERNELS,
    "eval_views": (1, 10),
}


def preset_names() -> list[str]:
    return sorted(p.stem for p in resources.files("alexnet.training.presets").iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    """The TOML of a packaged preset, or of a file path ending in .toml."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise AlexNetError(f"{path}: preset file not found")
        try:
            text = path.read_text(encoding="utf-8")  # TOML is UTF-8
        except UnicodeDecodeError:
            raise AlexNetError(f"{path}: not a TOML preset (not UTF-8 text)") from None
    else:
        if name not in preset_names() and Path(name).exists():
            raise AlexNetError(f"--preset {name}: a preset file is TOML named .toml (e.g. `alexnet train --preset digits -v` "
                               "prints a preset's settings)")
        if name not in preset_names():
            raise AlexNetError(unknown("preset", name, preset_names(), " (or a path to a .toml file)"))
        text = resources.files("alexnet.training.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AlexNetError(f"preset {name}: not valid TOML: {e}") from None
    if not data:
        raise AlexNetError(f"preset {name}: empty (a preset names at least its model: [model] name = \"alexnet_small\")")
    data.setdefault("preset", Path(name).stem)
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` → (["a", "b", "c"], parsed VALUE); VALUE is a TOML literal or a bare string."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise AlexNetError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.02")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise AlexNetError(f"--set {'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Make dataclass ``cls`` from a dict, recursively, refusing unknown keys and wrong types."""
    data = {LEGACY.get(k, k): LEGACY_VALUES.get((LEGACY.get(k, k), v), v) if isinstance(v, str) else v
            for k, v in data.items()} if not where else data
    known = {f.name: f for f in fields(cls)}
    extra = sorted(set(data) - set(known))
    if extra:
        raise AlexNetError(unknown("setting", extra[0], known, prefix=where))
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        key = f"{where}{name}"
        default = getattr(defaults, name)
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise AlexNetError(f"setting {key} must be a section (table), got {value!r}")
            value = from_dict(type(default), value, f"{key}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise AlexNetError(f"setting {key} must be true or false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(default) is not type(value) and not (isinstance(default, dict) and isinstance(value, dict)):
            raise AlexNetError(f"setting {key} must be {type(default).__name__}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise AlexNetError(not_one_of(f"setting {key}=", value, CHOICES[key]))
        kwargs[name] = value
    return cls(**kwargs)


def resolve(preset: str, flags: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """Preset ← flags (dotted keys, None = not given) ← ``--set`` overrides, as a TrainConfig.

    With ``--init`` the model is the checkpoint's, not the preset's: the preset's model options are left
    out, so ``model.options`` holds only what ``--set`` gave, which ``finetune.init_checkpoint`` applies
    on top of the checkpoint's own (or refuses, naming the option, where it changes a loaded tensor)."""
    data = read_preset(preset)
    config = resolve_from(data, flags, overrides)
    if config.finetune.init and data.get("model", {}).get("options"):
        data["model"] = {k: v for k, v in data["model"].items() if k != "options"}
        config = resolve_from(data, flags, overrides)
    return config


def resolve_from(data: dict[str, Any], flags: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """A configuration (a preset's TOML, or a run's saved config.json) ← flags ← ``--set`` overrides."""
    data = copy.deepcopy(data)
    for key, value in flags.items():
        if value is not None:
            merge(data, key.split("."), value)
    for item in overrides:
        merge(data, *parse_override(item))
    config = from_dict(TrainConfig, data)
    check_ranges(config)
    return config


FLAGS = {  # each setting `alexnet train` has a flag for, and the flag: its help, its errors and resume's name them so
    "data.spec": "--data", "epochs": "--epochs", "batch_size": "--batch-size", "optim.lr": "--lr", "device": "--device",
    "seed": "--seed", "precision": "--precision", "channels_last": "--channels-last", "compile": "--compile",
    "lrn_kernel": "--lrn-kernel", "data.workers": "--workers", "checkpoint_every": "--checkpoint-every",
    "finetune.init": "--init", "finetune.freeze": "--freeze"}

RANGES: list[tuple[str, str, Any]] = [  # (setting, the rule in words, the test)
    ("optim.lr", "a positive number", lambda v: math.isfinite(v) and v > 0),
    ("optim.momentum", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.weight_decay", "≥ 0 and finite", lambda v: math.isfinite(v) and v >= 0),
    ("optim.bias_lr_mult", "≥ 0 and finite", lambda v: math.isfinite(v) and v >= 0),
    ("schedule.factor", "in (0, 1]", lambda v: 0 < v <= 1),
    ("schedule.patience", "≥ 0", lambda v: v >= 0),
    ("schedule.max_reductions", "≥ 0", lambda v: v >= 0),
    ("schedule.step_size", "≥ 1", lambda v: v >= 1),
    ("schedule.tgt_factor", "≥ 1", lambda v: math.isfinite(v) and v >= 1),
    ("schedule.num_steps", "≥ 1", lambda v: v >= 1),
    ("schedule.bias_tgt_factor", "0 or ≥ 1", lambda v: v == 0 or (math.isfinite(v) and v >= 1)),
    ("schedule.bias_num_steps", "≥ 1", lambda v: v >= 1),
    ("epochs", "≥ 0 (and epochs or max_steps ≥ 1)", lambda v: v >= 0),
    ("max_steps", "≥ 0", lambda v: v >= 0),
    ("batch_size", "≥ 1", lambda v: v >= 1),
    ("label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1),
    ("seed", "a whole number from 0 (up to 18 digits)", lambda v: 0 <= v < 10**18),
    ("checkpoint_every", "≥ 0 (0: only at epoch ends)", lambda v: v >= 0),
    ("grad_clip", "≥ 0 and finite (0: off)", lambda v: math.isfinite(v) and v >= 0),
    ("data.val_fraction", "in [0, 1)", lambda v: 0 <= v < 1),
    ("data.workers", "from 0 to 8 per CPU (64 at least)", lambda v: 0 <= v <= most_workers()),
    ("finetune.loaded_lr_mult", "≥ 0 and finite (0: the loaded layers stay as they are)",
     lambda v: math.isfinite(v) and v >= 0),
]


def check_ranges(config: TrainConfig) -> None:
    """Every numeric setting in its range, as one line naming the setting (and its flag) and the rule."""
    values = flatten(config.to_dict())
    for key, rule, ok in RANGES:
        if not ok(values[key]):
            flag = f" ({FLAGS[key]})" if key in FLAGS else ""
            raise AlexNetError(f"setting {key}={values[key]!r}{flag} must be {rule}")
    if config.epochs < 1 and config.max_steps < 1:
        raise AlexNetError(f"epochs={config.epochs}: train for at least one epoch (or set max_steps)")
    check_layers(config.optim.layers)
    try:
        pipeline(config.data.pipeline, **config.data.pipeline_options)
    except ValueError as e:
        key = "data.pipeline_options" if config.data.pipeline in PIPELINES else "data.pipeline"
        raise AlexNetError(f"setting {key}: {e}") from None
    if reserved := {"num_classes"} & set(config.model.options):
        raise AlexNetError(f"setting model.options.{reserved.pop()}: the number of classes is the data set's "
                           "(fine-tuning to other classes: --init CHECKPOINT with the new data)")
    steps = config.schedule.milestones
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in steps) or steps != sorted(set(steps)):
        raise AlexNetError(f"setting schedule.milestones={steps!r} must be increasing whole numbers ≥ 1, e.g. [120, 130]")
    if config.schedule.kind == "multistep" and not steps:
        raise AlexNetError('setting schedule.kind="multistep" needs schedule.milestones, e.g. --set schedule.milestones=[120,130]')


LAYER_SETTINGS = ("lr_mult", "weight_decay")  # optim.layers.NAME.*: Caffe's lr_mult, cuda-convnet's wc


def check_layers(layers: dict[str, Any]) -> None:
    """``optim.layers``: each entry a table of :data:`LAYER_SETTINGS`, each ≥ 0 and finite (the layer
    names are checked against the model when the optimiser is made: alexnet.training.optim.layer_settings)."""
    for name, settings in layers.items():
        if not isinstance(settings, dict):
            raise AlexNetError(f"setting optim.layers.{name} must be a table such as {{ weight_decay = 0.004 }}, got {settings!r}")
        for key, value in settings.items():
            if key not in LAYER_SETTINGS:
                raise AlexNetError(unknown("setting", key, LAYER_SETTINGS, prefix=f"optim.layers.{name}."))
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise AlexNetError(f"setting optim.layers.{name}.{key}={value!r} must be a number ≥ 0")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.01}} → {"optim.lr": 0.01}; model options are leaves too."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
