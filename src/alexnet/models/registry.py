"""A small model registry in torchvision's manner: ``register``, ``create``, ``names``.

Each builder is a function with keyword-only, typed options. ``create`` checks the options against
the builder's signature before calling it, so a misspelt option is an error that lists the valid
ones instead of a silent default (the ``**kwargs`` chains of timm's ``create_model`` are what we
avoid).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from alexnet.errors import unknown


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    summary: str  # one line for `alexnet models`

    def options(self) -> dict[str, inspect.Parameter]:
        return {n: p for n, p in inspect.signature(self.builder).parameters.items() if p.kind is p.KEYWORD_ONLY}


_REGISTRY: dict[str, ModelEntry] = {}


def register(summary: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: add a builder to the registry under its function name."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, summary)
        return builder

    return add


def names() -> list[str]:
    """The registered model names, in registration order."""
    return list(_REGISTRY)


def entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(unknown("model", name, _REGISTRY)) from None


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown option (listing the valid ones) or a value of another type than the option's
    default: ``lrn="False"`` (a string from ``--set model.options.lrn=False``) is not ``lrn=False``."""
    valid = entry(name).options()
    extra = sorted(set(options) - set(valid))
    if extra:
        raise ValueError(unknown(f"{name} option", extra[0], valid))
    for key, value in options.items():
        default = valid[key].default
        if default is inspect.Parameter.empty or default is None or isinstance(value, type(default)):
            continue
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            continue
        if isinstance(default, bool) or isinstance(value, bool) or isinstance(default, (int, float, str)):
            kind = "true or false" if isinstance(default, bool) else type(default).__name__
            raise ValueError(f"{name} option {key}={value!r} must be {kind} (as in TOML: e.g. {key}={_toml(default)})")


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value).replace("'", '"')


def create(name: str, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build a registered model. ``num_classes=None`` keeps the builder's default (1000 for ImageNet nets)."""
    e = entry(name)
    check_options(name, options)
    if num_classes is not None:
        options["num_classes"] = num_classes
    return e.builder(**options)
