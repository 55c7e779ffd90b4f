"""benchmarks/gpu_check.py --cpu-dry-run: every part of the device check runs, and its files are what the device run writes.

The dry run drives a dozen real commands (bench step/data/decode, prepare, train, eval, peak_rates,
profile_step, pytest) in subprocesses, each at toy sizes: about a minute and a half, mostly spent
importing torch. conftest.py starts it in the background when the suite is collected, so it overlaps
the other tests; this test waits for it and checks what it wrote.
"""

import json

from conftest import DRY_RUN, start_dry_run

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
    step = parts["2_step"]["steps"]["step_b4"]["report"]
    assert {r["impl"] for r in step["results"]} == {"ours", "reference"}
    e2e = parts["3_end_to_end"]
    assert e2e["figures"]["ours_images_per_s"] > 0 and e2e["figures"]["ratio"] > 0
    assert {r["storage"] for r in e2e["steps"]["bench_decode"]["report"]["results"]} == {"folder", "raw", "jpeg"}
    assert set(e2e["store_bytes"]) == {"raw", "jpeg"}
    assert "checkpoints/last.pt" in parts["4_train"]["runs"]["raw"]["files"]
    assert parts["4_train"]["runs"]["jpeg"] == {"status": "skipped in the dry run"}  # the device run trains from it
    assert parts["4_train"]["steps"]["eval_10_views"]["json"]["views"] == 10
    assert parts["5_towers_tests"]["two_towers"]["equal_within_1e-4"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == {p: "ok" for p in PARTS}
    assert summary["end_to_end"]["hours_for_90_imagenet_epochs"] > 0
    log = (out / "gpu_check.log").read_text()
    assert "bench step" in log and "train --preset paper" in log and "done:" in log
