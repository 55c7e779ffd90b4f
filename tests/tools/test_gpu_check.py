"""benchmarks/gpu_check.py --cpu-dry-run: every part of the device check runs, and its files are what the device run writes.

The dry run drives a dozen real commands (bench step/data/decode, prepare, train, eval, peak_rates,
profile_step, pytest) in subprocesses, each at toy sizes: about a minute and a half, mostly spent
importing torch. conftest.py starts it in the background when the suite is collected, so it overlaps
the other tests; this test waits for it and checks what it wrote.
"""

import importlib.util
import json
import sys
from pathlib import Path

from helpers import DRY_RUN, start_dry_run

PARTS = ("1_env", "2_step", "3_end_to_end", "4_train", "5_towers_tests")


def test_gpu_check_cpu_dry_run_writes_every_part():
    """The dry run was started when the suite was collected (conftest.py); here it is awaited and checked."""
    run = DRY_RUN or start_dry_run()  # started at collection in a serial run, here under xdist
    code = run["proc"].wait(timeout=900)
    run["log"].flush()
    assert code == 0, (run["root"] / "console.txt").read_text()[-4000:]
    out = run["root"] / "out"
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"{p}.json" for p in PARTS] + ["summary.json", "gpu_check.log"])  # at most 8 come back
    assert all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    parts = {p: json.loads((out / f"{p}.json").read_text()) for p in PARTS}
    for name, part in parts.items():
        assert part["part"] == name and part["status"] in ("ok", "error"), (name, part["status"])
        assert part["steps"], name
        for step_name, step in part["steps"].items():
            assert step["status"] in ("ok", "error"), (name, step_name, step["status"])
            if step["status"] == "error":  # a failure is recorded with what is needed to see why
                assert "rc" in step and "tail" in step, (name, step_name)
    # on a healthy tree every command of the dry run succeeds
    failed = {f"{n}/{s}": st.get("tail", "")[-500:] for n, p in parts.items() for s, st in p["steps"].items()
              if st["status"] != "ok"}
    assert not failed, failed
    step = parts["2_step"]["steps"]["step_b2"]["report"]
    assert {r["impl"] for r in step["results"]} == {"ours", "reference"}
    assert any("like_for_like" in r for r in step["results"])  # issue 24's ratio comes back from the device
    assert "layer_forms.py" in " ".join(parts["2_step"]["steps"]["layer_forms"]["argv"])
    e2e = parts["3_end_to_end"]
    assert e2e["figures"]["ours_images_per_s"] > 0 and e2e["figures"]["ratio"] > 0
    assert {r["storage"] for r in e2e["steps"]["bench_decode"]["report"]["results"]} == {"folder", "raw", "jpeg"}
    assert set(e2e["store_bytes"]) == {"raw", "jpeg"}
    assert "checkpoints/last.pt" in parts["4_train"]["runs"]["raw"]["files"]
    assert parts["4_train"]["runs"]["jpeg"] == {"status": "skipped in the dry run"}  # the device run trains from it
    assert parts["4_train"]["steps"]["eval_10_views"]["json"]["views"] == 10
    assert parts["5_towers_tests"]["two_towers"]["equal_within_1e-4"] is True
    tests = parts["5_towers_tests"]["steps"]["pytest_devices"]["tests"]  # the device's tests ran, none skipped
    assert tests["passed"] >= 3 and tests["skipped"] == tests["failures"] == tests["errors"] == 0, tests
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == {p: "ok" for p in PARTS}
    assert summary["end_to_end"]["hours_for_90_imagenet_epochs"] > 0
    log = (out / "gpu_check.log").read_text()
    assert "bench step" in log and "train --preset paper" in log and "done:" in log


def load_gpu_check():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_device_tests_that_only_skip_are_an_error(tmp_path):
    """Issue 22: ``pytest -k cuda`` on a machine whose GPU torch cannot see collects only skips, and exits 0;
    the check's test part must call that an error. Here CUDA is hidden from the run, so its tests skip."""
    gpu_check = load_gpu_check()
    sizes = gpu_check.Sizes(**{**gpu_check.asdict(gpu_check.GPU), "device_tests": "cuda and batches"})
    check = gpu_check.Check(tmp_path, tmp_path, sizes)
    check.env["CUDA_VISIBLE_DEVICES"] = ""
    part = {"part": "5_towers_tests", "status": "running", "steps": {}, "_start": 0.0}
    step = gpu_check.device_tests(check, part)
    assert step["rc"] == 0  # pytest itself calls a run of skips a success
    assert step["tests"] == {"tests": 1, "failures": 0, "errors": 0, "skipped": 1, "passed": 0}
    assert step["status"] == "error" and "every device test must run" in step["reason"]
    assert json.loads((tmp_path / "5_towers_tests.json").read_text())["status"] == "error"
