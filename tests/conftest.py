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


def save_small_checkpoint(path, classes):
    """A quarter-width alexnet_small for ``classes`` with the small pipeline and statistics of random images, saved."""
    import numpy as np

    from alexnet import checkpoint, models
    from alexnet.data.stats import compute_stats
    from alexnet.data.transforms import Preprocess, pipeline

    torch.manual_seed(0)
    model = models.create("alexnet_small", num_classes=len(classes), width=0.25)
    images = np.random.default_rng(0).integers(0, 256, (8, 36, 36, 3), dtype=np.uint8)
    ckpt = checkpoint.from_model(model, list(classes), model_options={"width": 0.25},
                                 preprocess=Preprocess(pipeline("small"), compute_stats(images)).to_state())
    checkpoint.save(path, ckpt)
    return path
