"""`alexnet bench` in its quick mode: the command runs and its JSON has the promised structure.

Nothing here asserts a speed: the figures belong to docs/PERFORMANCE.md, measured on a quiet machine.
"""

import json
from pathlib import Path

import pytest

from alexnet.cli import main
from alexnet.errors import AlexNetError
from alexnet.tools import bench
from alexnet.tools.bench.rows import Row, with_ratios
from alexnet.tools.bench.timing import Measurement

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

STEP_KEYS = {"part", "label", "impl", "model", "precision", "channels_last", "batch_size", "images_per_s", "ms",
             "times_s", "median_s", "peak_memory_mb", "ratio"}


def load(path):
    report = json.loads(path.read_text())
    assert set(report) == {"machine", "config", "results", "seconds"}
    for key in ("device", "torch", "cpu", "torch_threads"):
        assert key in report["machine"]
    return report


def assert_keys_as_stored(rows, stored):
    """The rows write every key that the part's results in benchmarks/results have (timed rows and untimed
    ones apart), so a report written now reads as the stored ones do."""
    for timed in (True, False):
        old = {k for r in json.loads((RESULTS / stored).read_text())["results"] if ("images_per_s" in r) == timed for k in r}
        new = {k for r in rows if ("images_per_s" in r) == timed for k in r}
        assert old <= new, (stored, timed, sorted(old - new))


def test_step_quick_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "step", "--quick", "--model", "alexnet_small", "--device", "cpu", "--json", str(out)]) == 0
    report = load(out)
    assert report["config"]["quick"] and report["config"]["parts"] == ["step"]
    rows = report["results"]
    assert {r["impl"] for r in rows} >= {"reference", "ours"}
    for r in rows:
        assert STEP_KEYS <= set(r), r["label"]
        assert r["images_per_s"] > 0 and len(r["times_s"]) == report["config"]["reps"]
    ref = rows[0]
    assert ref["impl"] == "reference" and ref["model"] == "torchvision.alexnet" and ref["ratio"] == 1.0
    peak = report["machine"]["matmul_peak"]
    assert peak["dtype"] in ("bfloat16", "float32") and peak["tflops"] > 0
    for r in rows:  # the arithmetic each row sustained, against the machine's matrix-product rate
        assert r["tflops"] == pytest.approx(r["images_per_s"] * r["train_gflop_per_image"] / 1e3)
        assert r["of_matmul_peak"] == pytest.approx(r["tflops"] / peak["tflops"])
    assert ref["train_gflop_per_image"] == pytest.approx(4.14, abs=0.01)  # torchvision's net at 224
    ours = [r for r in rows if r["impl"] == "ours"]
    assert [r["model"] for r in ours] == ["alexnet_small"] and ours[0]["channels_last"]
    printed = capsys.readouterr().out
    assert "alexnet_small fp32 channels_last" in printed and "×" in printed and "TFLOP/s" in printed
    assert_keys_as_stored(rows, "cpu-step-alexnet.json")


def test_like_for_like_states_its_interval_by_round():
    """A round twice as slow for both rows (a shared machine's drift) leaves the per-round ratio where it
    was: the interval is narrow even where the medians alone would not say so; the table prints it."""
    from alexnet.tools.bench import step

    settings = {"precision": "fp32", "allocator": "tuned", "model": "m"}
    ref = Row("step", f"{step.REFERENCE} fp32 channels_last (like for like)", "reference", "step", 1, dict(settings),
              Measurement([1.0, 2.0, 1.0, 2.0], 0), images_per_call=1)
    ours = Row("step", "alexnet fp32", "ours", "step", 1, dict(settings), Measurement([1.25, 2.5, 1.3, 2.4], 0), images_per_call=1)
    alone = Row("step", "alexnet bf16", "ours", "step", 1, {**settings, "precision": "bf16"}, Measurement([1.0], 0), images_per_call=1)
    rows = step.like_for_like([ref, ours, alone])
    assert rows[1].settings["like_for_like"] == pytest.approx(1.5 / 1.85)  # the medians' ratio
    by_round = rows[1].settings["like_for_like_by_round"]
    assert by_round["n"] == 4 and by_round["ratio"] == pytest.approx((0.8 * 0.8 * (1 / 1.3) * (2 / 2.4)) ** 0.25)
    low, high = by_round["ci95"]
    assert 0.7 < low < by_round["ratio"] < high < 0.9
    assert "like_for_like" not in rows[2].settings  # no like-for-like reference at bf16: no ratio
    printed = bench.format_report({"machine": {"device": "cpu", "cpu": "x", "torch": "t", "torch_threads": 1},
                                   "results": [r.to_dict() for r in rows], "seconds": 1.0})
    assert f"[{1.5 / 1.85:.2f}× like for like, by round 95 % {low:.2f}–{high:.2f}]" in printed


def test_infer_quick_has_eager_and_onnxruntime_rows(tmp_path):
    out = tmp_path / "infer.json"
    assert main(["bench", "infer", "--quick", "--model", "alexnet_small", "--no-channels-last", "--json", str(out)]) == 0
    rows = load(out)["results"]
    engines = {(r["model"], r["engine"], r["kind"]) for r in rows}
    for model in ("torchvision.alexnet", "alexnet_small"):
        for kind in ("latency", "throughput"):
            assert (model, "eager", kind) in engines and (model, "onnxruntime", kind) in engines
    compiled = [r for r in rows if r["engine"] == "compiled"]
    assert compiled and all("--compile" in r["note"] and "images_per_s" not in r for r in compiled)
    ort = [r for r in rows if r["engine"] == "onnxruntime"]
    assert all("images_per_s" in r for r in ort), [r.get("note") for r in ort]
    for model in ("torchvision.alexnet", "alexnet_small"):  # fp32, int8 static and int8 dynamic, each at both batches
        assert sorted(r["precision"] for r in ort if r["model"] == model) == sorted(["fp32", "int8 static", "int8 dynamic"] * 2)
    assert {r["batch_size"] for r in rows if r["kind"] == "latency"} == {1}
    assert_keys_as_stored(rows, "cpu-infer.json")


def test_data_quick_runs_both_pipelines_from_jpeg_photographs(tmp_path, run_cli):
    out = tmp_path / "data.json"
    result = run_cli("bench", "data", "--quick", "--device", "cpu", "--data-dir", tmp_path / "photos",
                     "--model", "alexnet", "--model", "alexnet_owt", "--json", out)
    assert result.returncode == 0, result.stderr
    rows = load(out)["results"]
    assert {(r["impl"], r["what"]) for r in rows} == {("reference", "data"), ("ours", "data"),
                                                       ("reference", "end_to_end"), ("ours", "end_to_end")}
    assert all(r["tflops"] > 0 for r in rows if r["what"] == "end_to_end")
    ours = [(r["model"], r["pipeline"]) for r in rows if r["impl"] == "ours" and r["what"] == "end_to_end"]
    assert ours == [("alexnet", "paper"), ("alexnet_owt", "torchvision")]  # the paper's net; the reference's net
    assert all(r["images_per_s"] > 0 and r["photos"] >= 8 for r in rows)
    jpegs = list((tmp_path / "photos").glob("photos-*/train/class_*/*.jpg"))
    assert len(jpegs) == rows[0]["photos"]
    from PIL import Image

    with Image.open(jpegs[0]) as im:
        assert im.format == "JPEG" and sorted(im.size) == [375, 500]
    assert_keys_as_stored(rows, "cpu-data.json")


def test_rows_ratios_and_json_keys():
    """A row's figures follow from its repetitions; its ratio is to the first timed reference row of its ``what``."""
    def row(label, impl, what, seconds=None, **kw):
        timing = Measurement([seconds, 3 * seconds, seconds], warmup=1) if seconds else None
        return Row("data", label, impl, what, 4, timing=timing, images_per_call=8, batches_per_call=2, **kw)

    rows = with_ratios([row("ref data", "reference", "data", 0.5), row("ours data", "ours", "data", 0.25),
                        row("ref e2e", "reference", "end_to_end", 2.0, train_gflop=1.0), row("ours e2e", "ours", "end_to_end", 1.0),
                        row("not run", "ours", "data", note="skipped: why")])
    assert [r.ratio for r in rows] == [1.0, 2.0, 1.0, 2.0, None]
    ours = rows[1].to_dict()
    assert ours["what"] == "data" and ours["images_per_s"] == 32.0 and ours["ms"] == 125.0  # 8 images, 2 batches in 0.25 s
    assert ours["times_s"] == [0.25, 0.75, 0.25] and ours["median_s"] == 0.25 and ours["warmup"] == 1
    ref_e2e = rows[2].to_dict(matmul_peak_tflops=0.008)
    assert ref_e2e["tflops"] == pytest.approx(4 * 1.0 / 1e3) and ref_e2e["of_matmul_peak"] == pytest.approx(0.5)
    skipped = rows[4].to_dict()
    assert skipped["note"] == "skipped: why" and "images_per_s" not in skipped and "ratio" not in skipped
    assert Row("infer", "x", "ours", "latency", 1).to_dict()["kind"] == "latency"  # the infer part's key since the first results
    assert {"what", "kind"}.isdisjoint(Row("step", "x", "ours", "step", 1).to_dict())


def test_stored_results_still_print():
    """format_report reads every report in benchmarks/results: each row's label is a line of the table."""
    for path in sorted(RESULTS.glob("*.json")):
        report = json.loads(path.read_text())
        printed = bench.format_report(report)
        assert all(r["label"] in printed for r in report["results"]), path.name


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "step", "--quick", "--model", "no_such_net"]) == 2
    assert "no_such_net" in capsys.readouterr().err
    assert main(["bench", "step", "--quick", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    mine = tmp_path / "step.json"
    mine.write_text("mine")  # a report the user has: refused before anything is timed, unless --force
    assert main(["bench", "step", "--quick", "--model", "no_such_net", "--json", str(mine)]) == 2
    assert capsys.readouterr().err.strip() == f"alexnet: error: {mine} already exists; choose another --json or pass --force"
    assert main(["bench", "step", "--quick", "--json", str(tmp_path / "step.txt")]) == 2
    assert "--json" in capsys.readouterr().err and mine.read_text() == "mine"
    with pytest.raises(ValueError, match="unknown bench part 'train'; valid: step, infer"):
        bench.BenchConfig(parts=("train",))
    with pytest.raises(AlexNetError, match="^--batch-size 0: must be at least 1$"):
        bench.BenchConfig(batch_size=0)
    with pytest.raises(AlexNetError, match="^--clients 0: must be at least 1$"):
        bench.BenchConfig(serve_clients=0)


def test_d2l_quick_times_d2ls_code_and_ours_on_the_real_fashion_mnist(tmp_path):
    from alexnet.data import open_dataset
    from alexnet.errors import AlexNetError

    try:
        open_dataset("fashion-mnist")
    except AlexNetError as e:
        pytest.skip(f"the real Fashion-MNIST is not installed ({e})")
    out = tmp_path / "bench.json"
    assert main(["bench", "d2l", "--quick", "--device", "cpu", "--data-dir", str(tmp_path), "--json", str(out)]) == 0
    rows = load(out)["results"]
    assert [(r["impl"], r["model"]) for r in rows] == [("reference", "alexnet_d2l"), ("ours", "alexnet_d2l")]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] == pytest.approx(rows[1]["images_per_s"] / rows[0]["images_per_s"])
    for r in rows:  # 60,000 images at the row's rate (ours: plus prefit's share)
        assert r["minutes_per_epoch"] * 60 >= 60_000 / r["images_per_s"] * (1 - 1e-9)  # equal for the reference, but for float rounding
    raw = tmp_path / "torchvision-fashion-mnist" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                                     "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


def test_d2l_without_the_data_is_a_row_that_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(tmp_path))
    rows = bench.run(bench.BenchConfig(parts=("d2l",), quick=True, device="cpu"))["results"]
    assert len(rows) == 1 and "images_per_s" not in rows[0]
    assert rows[0]["note"].startswith(f"not run: {tmp_path} ($ALEXNET_FASHION_MNIST): no Fashion-MNIST IDX files")
