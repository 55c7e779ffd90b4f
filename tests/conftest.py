import os
import sys

import pytest

# Under pytest-xdist (`make test` runs two workers) each worker and the commands it starts get one
# thread: two processes of two OpenMP threads each on two cores spin against each other.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"
import torch

if WORKER:
    torch.set_num_threads(1)

from helpers import DRY_RUN, SRC, start_dry_run  # after the thread settings above (helpers imports torch)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield




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


# The device check's CPU dry run (tests/tools/test_gpu_check.py) drives a dozen real commands in
# subprocesses, most of their time importing torch: in a serial run it starts in the background as
# soon as the suite is collected, so that it overlaps the other tests instead of adding its minute and
# a half to them. Under xdist the other worker provides the overlap, and the test starts it itself
# (each worker collects every test, and only one of them will run it).


SLOWEST_FIRST = ("test_paper_recipe.py", "test_gpu_check.py", "test_d2l.py")  # 190–245, 95–130 and 80–110 s on one core each


def pytest_collection_modifyitems(session, config, items):
    """Under xdist the longest tests go first, so neither worker is left with one at the end (the
    Makefile's ``--no-loadscope-reorder`` keeps this order: xdist would put the files with the most tests first)."""
    if WORKER:
        items.sort(key=lambda item: item.path.name not in SLOWEST_FIRST)


def pytest_collection_finish(session):
    if not WORKER and any(item.name == "test_gpu_check_cpu_dry_run_writes_every_part" for item in session.items):
        start_dry_run()


def pytest_sessionfinish(session):
    import shutil

    if DRY_RUN:
        if DRY_RUN["proc"].poll() is None:
            DRY_RUN["proc"].kill()
        DRY_RUN["log"].close()
        shutil.rmtree(DRY_RUN["root"], ignore_errors=True)


