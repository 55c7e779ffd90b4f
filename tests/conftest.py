import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def cli_env():
    """Environment for running ``python -m alexnet`` in a subprocess from the source tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def run_cli(cli_env):
    """Run ``alexnet ARGS`` in a subprocess; returns the CompletedProcess (text mode)."""
    import subprocess

    def run(*args, check=False, timeout=600):
        return subprocess.run([sys.executable, "-m", "alexnet", *map(str, args)], env=cli_env,
                              capture_output=True, text=True, timeout=timeout, check=check)

    return run
