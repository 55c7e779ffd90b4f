"""Where a checkpoint came from: recipe, resolved config, versions, git commit, time.

Recorded in every checkpoint's ``provenance`` (airbench's "the resolved config and code version saved
beside every result"); ``alexnet info`` prints it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from alexnet import __version__


def collect_provenance(recipe: str | None = None, config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Where a checkpoint came from: recipe/preset, resolved config, versions, git commit, UTC time.

    ``config`` must be JSON-able (a dataclass's ``asdict`` is); ``extra`` adds plain values (e.g.
    ``source="torchvision alexnet-owt-7be5be79.pth"`` for imported weights).
    """
    out: dict[str, Any] = {
        "recipe": recipe,
        "config": config,
        "alexnet_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is a str subclass weights_only refuses
        "torchvision_version": torchvision_version(),
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.update(extra)
    return out


def torchvision_version() -> str | None:
    """``torchvision.__version__`` without importing torchvision, whose import (torch._dynamo, sympy)
    costs about a second in every command: read from its ``version.py`` as text (the local label
    kept, e.g. ``0.29.1+cu130``), else the distribution's metadata; None when it is not installed."""
    if "torchvision" in sys.modules:
        return str(sys.modules["torchvision"].__version__)
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        try:
            found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", (Path(folder) / "version.py").read_text(), re.M)
        except OSError:
            continue
        if found:
            return found.group(1)
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the source tree this package runs from (``-dirty`` when tracked files changed),
    or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    if result.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")
