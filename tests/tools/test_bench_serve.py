"""``alexnet bench serve --quick``: three real ``alexnet serve`` processes on 127.0.0.1 under concurrent
clients; the rows have their fields, every answer in the normal rows is a 200 equal to this
process's, and past the queue's bound there are 503s with Retry-After and nothing else.

Nothing here asserts a speed (the ≥ 3× target is measured at full size by the lead; docs/SERVING.md).
"""

import json

import numpy as np
import pytest

from alexnet.cli import main
from alexnet.errors import AlexNetError
from alexnet.tools import bench
from alexnet.tools.bench import serve

pytest.importorskip("uvicorn", reason="the [serve] extra (uvicorn) is not installed")
pytest.importorskip("prometheus_client", reason="the [serve] extra (prometheus-client) is not installed")

ROW_KEYS = {"part", "label", "impl", "model", "server", "clients", "requests_per_client", "windows", "statuses", "errors",
            "answers_checked", "wrong_answers", "missing_retry_after", "p50_ms", "p99_ms", "mean_batch_size",
            "client_cpu_s", "server_cpu_s", "rss_start_mb", "rss_warm_mb", "rss_end_mb", "rss_max_mb", "images_per_s",
            "times_s", "median_s"}


def test_quick_serve_part_rows_answers_and_overload(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--quick", "--model", "alexnet_small", "--device", "cpu", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["impl"], r["what"], r["server"]) for r in rows] == [
        ("reference", "load", "--max-batch-size 1 --precision fp32"),
        ("ours", "load", "--max-batch-size 32 --max-delay-ms 5 --precision fp32"),
        ("other", "overload", "--max-batch-size 1 --max-queue 2")]
    for r in rows:
        assert ROW_KEYS <= set(r), sorted(ROW_KEYS - set(r))
        assert r["model"] == "alexnet_small" and r["errors"] == 0 and r["wrong_answers"] == 0
        assert r["answers_checked"] == r["statuses"].get("200", 0) > 0  # every 200 checked against this process's model
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["images_per_s"] > 0
        assert 0 < r["rss_start_mb"] <= r["rss_max_mb"] and r["rss_end_mb"] <= r["rss_max_mb"]
    batch1, dynamic, overload = rows
    for r in (batch1, dynamic):  # warm-up and timed windows, every request answered 200
        assert r["statuses"] == {"200": r["clients"] * r["requests_per_client"] * r["windows"]}
        assert r["clients"] == 8 and r["windows"] == 2 and r["rss_warm_mb"] > 0
    assert batch1["mean_batch_size"] == 1 and 1 < dynamic["mean_batch_size"] <= 8  # batching at work
    assert batch1["ratio"] == 1.0 and dynamic["ratio"] == pytest.approx(dynamic["images_per_s"] / batch1["images_per_s"])
    assert overload["clients"] == 16 and set(overload["statuses"]) == {"200", "503"}  # 503s and nothing else
    assert overload["missing_retry_after"] == 0 and "ratio" not in overload
    printed = capsys.readouterr().out
    assert "alexnet_small --max-batch-size 32 --max-delay-ms 5: dynamic batching" in printed and "× 503" in printed


def test_a_wrong_answer_is_counted():
    """The check is not vacuous: another input's answer, a far probability or a garbled body is wrong; a tie is not."""
    expected = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.4, 0.4 - 5e-6, 0.2]], dtype=np.float32)
    tally = serve.Tally(expected)

    def answer(p, index):
        return json.dumps({"outputs": [{"name": "probabilities", "data": [f"{p}:{index}:class_{index}"]}]}).encode()

    assert tally.correct(answer(0.7, 1), 0) and tally.correct(answer(0.39999, 1), 2)  # the tie within fp32 rounding
    assert not tally.correct(answer(0.5, 0), 0)  # input 1's answer given to input 0
    assert not tally.correct(answer(0.71, 1), 0) and not tally.correct(b"{}", 0) and not tally.correct(b"x", 0)
    tally.record("200", 0.01, 0, answer(0.5, 0))
    tally.record("503", 0.01, 0, retry_after=None)
    assert tally.wrong == 1 and tally.checked == 1 and tally.missing_retry_after == 1
    assert tally.errors(overload=False) == 2 and tally.errors(overload=True) == 2


def test_a_server_that_does_not_start_is_a_row_that_says_why(monkeypatch):
    bad = serve.Setting("refused", "reference", "load", ("--max-queue", "0"), 2)
    monkeypatch.setattr(serve, "settings", lambda cfg, precision, overload: [bad])
    cfg = bench.BenchConfig(parts=("serve",), quick=True, device="cpu", models=("alexnet_small",)).resolve(serve.torch.device("cpu"))
    (row,) = serve.run(cfg, serve.torch.device("cpu"))
    assert row.timing is None and row.note.startswith("not run: alexnet serve did not start (exit 2)")
    assert "--max-queue 0: must be at least 1" in row.note


def test_config_defaults_and_the_help(capsys):
    cfg = bench.BenchConfig()
    assert "serve" in bench.PARTS and cfg.serve_models == ("alexnet_owt",) and cfg.serve_clients == 32
    quick = bench.BenchConfig(quick=True).resolve(serve.torch.device("cpu"))
    assert (quick.serve_clients, quick.serve_requests, quick.reps) == (8, 3, 1)
    with pytest.raises(AlexNetError, match="^--clients 0: must be at least 1$"):  # named by the flag
        bench.BenchConfig(serve_clients=0)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "serve (alexnet serve under load)" in " ".join(capsys.readouterr().out.split())
