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

from helpers import DRY_RUN, DRY_RUN_ROOT, SRC, start_dry_run  # after the thread settings above (helpers imports torch)


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
# subprocesses, a minute and a half on one core, most of it importing torch. It starts in the
# background as soon as the suite is collected (in a serial run) or a worker has collected it (under
# xdist, started by the controller, which all workers share), so that it fills the time the tests
# spend waiting on servers, browsers and each other; its test, last on its worker, only checks what it wrote.


SLOWEST_FIRST = ("test_paper_recipe.py", "test_d2l.py")  # 190–245 and 80–110 s on one core each
LAST = ("test_gpu_check.py",)  # it waits for the dry run: by then it has ended
DRY_RUN_TEST = "tests/tools/test_gpu_check.py::test_gpu_check_cpu_dry_run_writes_every_part"


def pytest_collection_modifyitems(session, config, items):
    """Under xdist the longest tests go first, so neither worker is left with one at the end, and the dry
    run's check last (the Makefile's ``--no-loadscope-reorder`` keeps this order: xdist would put the files
    with the most tests first)."""
    if WORKER:
        items.sort(key=lambda item: 0 if item.path.name in SLOWEST_FIRST else 2 if item.path.name in LAST else 1)


def pytest_configure(config):
    if not WORKER:  # before xdist starts its workers, which inherit the variable
        import tempfile

        os.environ[DRY_RUN_ROOT] = tempfile.mkdtemp(prefix="alexnet-gpu-check-")


def pytest_collection_finish(session):
    if not WORKER and any(item.nodeid == DRY_RUN_TEST for item in session.items):  # a serial run
        start_dry_run(Path(os.environ[DRY_RUN_ROOT]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """xdist's controller, when a worker has collected: the first to hold the dry run's test starts it."""
    if not DRY_RUN and DRY_RUN_TEST in ids:
        start_dry_run(Path(os.environ[DRY_RUN_ROOT]))


def pytest_sessionfinish(session):
    import shutil

    if WORKER:
        return
    if DRY_RUN:
        if DRY_RUN["proc"].poll() is None:
            DRY_RUN["proc"].kill()
        DRY_RUN["log"].close()
    shutil.rmtree(os.environ[DRY_RUN_ROOT], ignore_errors=True)


