import os
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs two workers) each worker and the commands it starts get one
# thread: two processes of two OpenMP threads each on two cores spin against each other.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"
import torch

if WORKER:
    torch.set_num_threads(1)

from alexnet.training.loop import Callback  # after the thread settings above


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


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


class StopAfter(Callback):
    """Stop the run as if killed right after a checkpoint at step ``steps`` (the resume tests)."""

    def __init__(self, steps):
        self.stop_at = steps


class Records(Callback):
    """Keep every finished epoch's metrics record."""

    def __init__(self):
        self.records = []

    def on_epoch(self, record):
        self.records.append(record)


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


# The device check's CPU dry run (tests/test_gpu_check.py) drives a dozen real commands in
# subprocesses, most of their time importing torch: in a serial run it starts in the background as
# soon as the suite is collected, so that it overlaps the other tests instead of adding its minute and
# a half to them. Under xdist the other worker provides the overlap, and the test starts it itself
# (each worker collects every test, and only one of them will run it).
DRY_RUN: dict = {}


SLOWEST_FIRST = ("test_paper_recipe.py", "test_gpu_check.py")  # 90 s and 50 s alone on one core each


def pytest_collection_modifyitems(session, config, items):
    """Under xdist the longest tests go first, so neither worker is left with one at the end (the
    Makefile's ``--no-loadscope-reorder`` keeps this order: xdist would put the files with the most tests first)."""
    if WORKER:
        items.sort(key=lambda item: item.path.name not in SLOWEST_FIRST)


def pytest_collection_finish(session):
    if not WORKER and any(item.name == "test_gpu_check_cpu_dry_run_writes_every_part" for item in session.items):
        start_dry_run()


def start_dry_run() -> dict:
    import subprocess
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="alexnet-gpu-check-"))
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(root / "console.txt", "w")
    script = Path(SRC).parent / "benchmarks" / "gpu_check.py"
    DRY_RUN.update(root=root, log=log, proc=subprocess.Popen(
        [sys.executable, str(script), "--out", str(root / "out"), "--work", str(root / "work"), "--cpu-dry-run"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(SRC).parent))
    return DRY_RUN


def pytest_sessionfinish(session):
    import shutil

    if DRY_RUN:
        if DRY_RUN["proc"].poll() is None:
            DRY_RUN["proc"].kill()
        DRY_RUN["log"].close()
        shutil.rmtree(DRY_RUN["root"], ignore_errors=True)


def train_step(model, device: str = "cpu", precision: str = "fp32"):
    """The step ``alexnet train`` runs, for ``model`` on ``device`` at §5's SGD with lr 0.01: every test
    that takes a training step calls the step's builder here, so a change of its signature is one line."""
    from alexnet.training.config import OptimConfig, TrainConfig
    from alexnet.training.step import make_train_step

    config = TrainConfig(precision=precision, optim=OptimConfig(lr=0.01))
    return make_train_step(model, config, config.runtime_settings(device))
