"""Part ``serve``: ``alexnet serve`` under load, dynamic batching against none, and past its queue's bound.

The server is the real one, ``python -m alexnet serve CHECKPOINT --port 0 ...`` in a subprocess on
127.0.0.1, over a checkpoint this part writes itself: an untrained registry model (``alexnet_owt`` at
224 px, torchvision's architecture and what a deployment serves, or each ``--model``); weights do not
change the speed. Three servers of that checkpoint start side by side:

* ``--max-batch-size 1``: no batching, the reference row;
* ``--max-batch-size 32 --max-delay-ms 5``: dynamic batching (the server's defaults); its ratio to
  the reference is the issue's target, ≥ 3× at 32 clients;
* overload: ``--max-batch-size 1 --max-queue 2`` under twice the clients, which it cannot hold:
  every answer must be a 200 or a 503 with ``Retry-After``, at once (a client gives up after
  ``REQUEST_TIMEOUT_S``: a hang is counted as ``TimeoutError``).

The load: ``--clients`` threads (32), each with one keep-alive ``http.client`` connection, closed
loop (its next request when the last is answered; a 503 is not retried, the next request follows);
a window is ``--requests`` requests from each. A request is one image as FP32 input already
preprocessed, [1, C, crop, crop], sent by the binary tensor data extension and asking only for the
top class (Triton's classification extension): the server's time goes to batching and the model,
not to decoding images or JSON text, and the client's to as little as possible. The client shares
the machine's cores with the server, so its CPU time is measured and reported beside the server's
(``client_cpu_s``, ``server_cpu_s``) rather than hidden. The inputs are ``POOL`` random tensors whose
probabilities this process computes first through the server's own path
(:meth:`~alexnet.tools.serve.repository.Served.probabilities`); every 200's top-1 index and its
probability are checked against them (``wrong_answers``: an answer sent to the wrong caller shows).

Timing as in the other parts: ``warmup`` windows per server, then ``reps`` timed windows, the two
timed servers interleaved window by window (a shared machine's drift affects both alike), no timed
window started after ``--serve-seconds`` (the first always runs); the overload server gets one
window, after them. Throughput (``images_per_s``: one image a request) is the 200s of a window over
its seconds, the median window; ``times_s`` are the seconds a window of all-200s would take at that
rate, and the JSON's ``ms`` is wall milliseconds per answered request (1000 / throughput): latency is
``p50_ms`` and ``p99_ms``, over the timed requests answered 200. Each row also has ``statuses``
(answers by HTTP status, or the exception a client got), ``errors`` (answers other than 200, or
under overload other than 200 and 503 with ``Retry-After``, plus wrong answers: 0 is the target in
every row), the mean batch size (``/metrics``' ``alexnet_serve_batch_size`` histogram, its sum over
its count across the timed windows) and the server's resident memory (``VmRSS`` of
``/proc/PID/status``: at start, after warm-up, at the end, and the highest of samples every
``RSS_EVERY_S``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import alexnet
from alexnet import checkpoint, models
from alexnet.data.stats import imagenet_stats
from alexnet.data.transforms import Preprocess
from alexnet.errors import AlexNetError
from alexnet.tools.bench.data import model_pipeline
from alexnet.tools.bench.rows import Row, with_ratios
from alexnet.tools.bench.timing import Measurement

log = logging.getLogger(__name__)

BATCH, DELAY_MS = 32, 5.0  # the dynamic server: alexnet serve's defaults
OVERLOAD_QUEUE = 2  # --max-queue of the overload server (batch 1), far below its 2 × --clients clients
REQUEST_TIMEOUT_S = 60.0  # a client gives up on an answer after this: counted as a hang (TimeoutError)
START_TIMEOUT_S = 300.0  # for a server to print "ready" (torch's import and the model's load)
POOL = 64  # distinct inputs the clients cycle through
ATOL = 1e-5  # an answer's probability against this process's (fp32 rounding: batching reorders the sums)
RSS_EVERY_S = 0.1  # the server's memory is sampled this often


@dataclass(frozen=True)
class Setting:
    """One server and the load on it."""

    label: str
    impl: str  # "reference" (no batching), "ours" (dynamic batching), "other" (overload)
    what: str  # "load": the timed rows, compared; "overload": statuses only
    flags: tuple[str, ...]  # alexnet serve's options
    clients: int


def settings(cfg, precision: str, overload: bool) -> list[Setting]:
    """The compared pair at ``precision`` (``--precision``, shown where it is not fp32), then the overload server."""
    shown = f" --precision {precision}" if precision != "fp32" else ""
    batch1, dynamic = ("--max-batch-size", "1"), ("--max-batch-size", str(BATCH), "--max-delay-ms", f"{DELAY_MS:g}")
    chosen = [Setting(f"{' '.join(batch1)}{shown}: no batching", "reference", "load", (*batch1, "--precision", precision),
                      cfg.serve_clients),
              Setting(f"{' '.join(dynamic)}{shown}: dynamic batching", "ours", "load", (*dynamic, "--precision", precision),
                      cfg.serve_clients)]
    if overload:
        flags = (*batch1, "--max-queue", str(OVERLOAD_QUEUE))
        chosen.append(Setting(f"{' '.join(flags)}: overload, {2 * cfg.serve_clients} clients", "other", "overload", flags,
                              2 * cfg.serve_clients))
    return chosen


def write_checkpoint(name: str, folder: Path) -> Path:
    """An untrained ``name`` as ``folder/NAME.pt`` (the server names the model NAME), with the
    preprocessing the bench's data part trains it with and ImageNet's statistics: FP32 requests skip
    the preprocessing, so only its crop and channels matter here."""
    torch.manual_seed(0)
    model = models.create(name)
    pipe = model_pipeline(name, model)
    preprocess = Preprocess(pipe, imagenet_stats(pipe.resize)).to_state()
    path = folder / f"{name}.pt"
    classes = [f"class_{i}" for i in range(model.num_classes)]
    checkpoint.save(path, checkpoint.from_model(model, classes, preprocess=preprocess))
    return path


@dataclass(frozen=True)
class Inputs:
    """The request bodies (one FP32 image each, binary) and what the model answers to each, [POOL, K]."""

    bodies: list[bytes]
    header_lengths: list[int]
    expected: np.ndarray


def make_inputs(path: Path, device: torch.device, precision: str = "fp32") -> Inputs:
    """``POOL`` random inputs of the model's shape and their probabilities, computed in this process
    by the path the server's batches run (:meth:`Served.probabilities` at ``precision``, one input at a time)."""
    from alexnet.tools.serve.repository import Served, find_models

    served = Served(find_models([path])[0], str(device), precision)
    x = torch.randn(POOL, served.channels, served.crop, served.crop, generator=torch.Generator().manual_seed(0))
    expected = np.stack([served.probabilities(x[i : i + 1].to(device))[0].numpy() for i in range(POOL)])
    bodies, lengths = [], []
    for image in x.numpy():
        data = np.ascontiguousarray(image[None], dtype="<f4").tobytes()
        head = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, *image.shape],
                                       "parameters": {"binary_data_size": len(data)}}],
                           "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]}).encode()
        bodies.append(head + data)
        lengths.append(len(head))
    return Inputs(bodies, lengths, expected)


class Server:
    """``python -m alexnet serve CHECKPOINT --port 0 FLAGS`` on 127.0.0.1; its output goes to ``log``."""

    def __init__(self, ckpt: Path, flags: tuple[str, ...], device: str, log_path: Path) -> None:
        self.model, self.log_path = ckpt.stem, log_path
        src = str(Path(alexnet.__file__).resolve().parents[1])  # this alexnet, installed or from the source tree
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        command = [sys.executable, "-m", "alexnet", "serve", str(ckpt), "--host", "127.0.0.1", "--port", "0",
                   "--device", device, *flags]
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.port = 0

    def wait_ready(self) -> Server:
        """Wait for its "ready at http://127.0.0.1:PORT/" line; an exit or ``START_TIMEOUT_S`` is an error."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "ready at http://127.0.0.1:" in text:
                self.port = int(text.split("ready at http://127.0.0.1:")[1].split("/")[0])
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
        raise AlexNetError(f"alexnet serve did not start (exit {self.proc.poll()}): {tail or 'no output'}")

    @property
    def path(self) -> str:
        return f"/v2/models/{self.model}/infer"

    def stop(self) -> None:
        """SIGTERM (the requests in flight finish), then kill after 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str) -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request("GET", path)
            return connection.getresponse().read().decode()
        finally:
            connection.close()

    def batches(self) -> tuple[float, float]:
        """(batches run, images in them) so far, from /metrics' batch-size histogram."""
        from prometheus_client.parser import text_string_to_metric_families

        found = {s.name: s.value for f in text_string_to_metric_families(self.get("/metrics")) for s in f.samples
                 if s.labels.get("model") == self.model}
        return found.get("alexnet_serve_batch_size_count", 0.0), found.get("alexnet_serve_batch_size_sum", 0.0)

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the server process so far (Linux), all its threads."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def rss_mb(pid: int) -> float | None:
    """A process's resident set size now (``VmRSS``, Linux), in MiB; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class RssSampler:
    """A thread sampling a process's RSS every ``RSS_EVERY_S``; :meth:`mark` keeps one by name."""

    def __init__(self, pid: int) -> None:
        self.pid, self.marks, self.highest = pid, {}, None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, name=f"rss {pid}", daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopped.wait(RSS_EVERY_S):
            if self.mark(None) is None:  # the process is gone (or there is no /proc)
                break

    def mark(self, name: str | None) -> float | None:
        now = rss_mb(self.pid)
        if now is not None:
            self.highest = max(self.highest or 0.0, now)
        if name is not None:
            self.marks[name] = now
        return now

    def stop(self) -> dict[str, float | None]:
        self.mark("end")
        self.stopped.set()
        self.thread.join()
        return {f"rss_{k}_mb": self.marks.get(k) for k in ("start", "warm", "end")} | {"rss_max_mb": self.highest}


@dataclass
class Tally:
    """What the clients of one server saw; their threads record into it under its lock."""

    expected: np.ndarray  # [POOL, K]: this process's probabilities of each input
    statuses: Counter = field(default_factory=Counter)  # "200", "503", …, or a client's exception name
    latencies: list[float] = field(default_factory=list)  # seconds, the 200s of timed windows
    checked: int = 0
    wrong: int = 0
    missing_retry_after: int = 0
    timed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def correct(self, body: bytes, index: int) -> bool:
        """The answer's top class is this process's (or within ``ATOL`` of it, a tie) with its probability."""
        try:
            value, top, _ = json.loads(body)["outputs"][0]["data"][0].split(":", 2)
            p = self.expected[index, int(top)]
            return abs(p - float(value)) <= ATOL and p >= self.expected[index].max() - ATOL
        except (ValueError, KeyError, IndexError, TypeError):
            return False

    def errors(self, overload: bool) -> int:
        """Answers not as they should be: anything but a 200 (under overload: a 503 with Retry-After too), or a wrong answer."""
        allowed = ("200", "503") if overload else ("200",)
        bad_503s = self.missing_retry_after if overload else 0  # elsewhere every 503 is counted already
        return sum(n for k, n in self.statuses.items() if k not in allowed) + bad_503s + self.wrong

    def record(self, status: str, seconds: float, index: int, body: bytes = b"", retry_after: str | None = None) -> None:
        right = self.correct(body, index) if status == "200" else None
        with self.lock:
            self.statuses[status] += 1
            if status == "200":
                self.checked, self.wrong = self.checked + 1, self.wrong + (not right)
                if self.timed:
                    self.latencies.append(seconds)
            elif status == "503" and not retry_after:
                self.missing_retry_after += 1


def client(port: int, path: str, inputs: Inputs, picks: list[int], tally: Tally) -> None:
    """One client: the inputs ``picks`` in turn, each sent when the last is answered, on one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        for i in picks:
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(inputs.header_lengths[i])}
            start = time.perf_counter()
            try:
                connection.request("POST", path, body=inputs.bodies[i], headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as e:  # a refused or dropped connection, or no answer in time
                tally.record(type(e).__name__, time.perf_counter() - start, i)
                connection.close()  # the next request reconnects
                continue
            tally.record(str(response.status), time.perf_counter() - start, i, body, response.getheader("Retry-After"))
    finally:
        connection.close()


class Load:
    """One server under its setting's clients: the windows run on it and what they measured."""

    def __init__(self, setting: Setting, server: Server, inputs: Inputs, requests: int) -> None:
        self.setting, self.server, self.inputs, self.requests = setting, server, inputs, requests
        self.tally, self.rss = Tally(inputs.expected), RssSampler(server.proc.pid)
        self.rss.mark("start")
        self.times: list[float] = []  # seconds a window of all-200s takes at each timed window's rate
        self.batch_count = self.batch_sum = self.client_cpu = 0.0
        self.server_cpu: float | None = 0.0 if server.cpu_seconds() is not None else None  # None: no /proc here
        self.windows = 0

    def window(self, timed: bool) -> None:
        """Every client's ``requests`` requests, in threads; a timed window's figures are kept."""
        n, c, pool = self.requests, self.setting.clients, len(self.inputs.bodies)
        picks = [[(self.windows * n * c + k * c + j) % pool for k in range(n)] for j in range(c)]
        threads = [threading.Thread(target=client, args=(self.server.port, self.server.path, self.inputs, p, self.tally))
                   for p in picks]
        self.tally.timed, answered = timed, self.tally.statuses["200"]
        batches, cpu, server_cpu = self.server.batches(), time.process_time(), self.server.cpu_seconds()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds, self.windows = time.perf_counter() - start, self.windows + 1
        answered = self.tally.statuses["200"] - answered
        if timed:
            count, images = (a - b for a, b in zip(self.server.batches(), batches))
            self.batch_count, self.batch_sum = self.batch_count + count, self.batch_sum + images
            self.client_cpu += time.process_time() - cpu
            if self.server_cpu is not None and server_cpu is not None:
                self.server_cpu += (self.server.cpu_seconds() or server_cpu) - server_cpu
            if answered:
                self.times.append(seconds * n * c / answered)

    def row(self, model: str, warmup: int) -> Row:
        s, t, rss = self.setting, self.tally, self.rss.stop()
        quantiles = statistics.quantiles(t.latencies, n=100, method="inclusive") if len(t.latencies) > 1 else None
        settings = {"model": model, "server": " ".join(s.flags), "clients": s.clients, "requests_per_client": self.requests,
                    "windows": self.windows, "input": "FP32 [1, C, crop, crop], binary", "statuses": dict(sorted(t.statuses.items())),
                    "errors": t.errors(s.what == "overload"), "answers_checked": t.checked,
                    "wrong_answers": t.wrong, "missing_retry_after": t.missing_retry_after,
                    "p50_ms": quantiles[49] * 1e3 if quantiles else None, "p99_ms": quantiles[98] * 1e3 if quantiles else None,
                    "mean_batch_size": self.batch_sum / self.batch_count if self.batch_count else None,
                    "client_cpu_s": self.client_cpu, "server_cpu_s": self.server_cpu, **rss}
        n = self.requests * s.clients
        timing = Measurement(self.times, warmup if s.what == "load" else 0) if self.times else None
        batch = int(s.flags[s.flags.index("--max-batch-size") + 1])
        note = None if timing or s.what != "load" else "no window was answered"
        return Row("serve", s.label, s.impl, s.what, batch, settings=settings, timing=timing, images_per_call=n,
                   batches_per_call=n, note=note)


def measure(loads: list[Load], cfg) -> None:
    """Warm each up, then time them window by window, interleaved, until ``reps`` or ``--serve-seconds``."""
    for load in loads:
        for _ in range(cfg.warmup):
            load.window(timed=False)
        load.rss.mark("warm")
    deadline = time.monotonic() + cfg.serve_seconds
    for rep in range(cfg.reps):
        if rep and time.monotonic() > deadline:
            log.warning("serve: %d of %d timed windows run within --serve-seconds %g", rep, cfg.reps, cfg.serve_seconds)
            break
        for load in loads:
            load.window(timed=True)


def model_rows(cfg, device: torch.device, name: str, precision: str = "fp32", overload: bool = True) -> list[Row]:
    """The servers of an untrained ``name`` at ``precision``: the two timed rows, then the overload row."""
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-serve-") as tmp:
        folder = Path(tmp)
        log.info("serve: %s %s, writing the checkpoint", name, precision)
        ckpt = write_checkpoint(name, folder)
        inputs = make_inputs(ckpt, device, precision)
        chosen = settings(cfg, precision, overload)
        servers = [Server(ckpt, s.flags, str(device), folder / f"server-{i}.log") for i, s in enumerate(chosen)]
        try:
            loads = [Load(s, server.wait_ready(), inputs, cfg.serve_requests) for s, server in zip(chosen, servers)]
            log.info("serve: %s, %d clients × %d requests a window", name, cfg.serve_clients, cfg.serve_requests)
            measure(loads[:2], cfg)
            if overload:
                loads[2].window(timed=True)
            return with_ratios([load.row(name, cfg.warmup) for load in loads])  # while the servers run: their RSS at the end
        except AlexNetError as e:
            return [Row("serve", s.label, s.impl, s.what, 0, settings={"model": name}, note=f"not run: {e}") for s in chosen]
        finally:
            for server in servers:
                server.stop()


def run(cfg, device: torch.device) -> list[Row]:
    """Each of ``cfg.serve_models`` served three ways (with ratios within each model's rows)."""
    from alexnet.tools.serve import require

    try:
        require()
    except AlexNetError as e:
        return [Row("serve", "alexnet serve under load", "reference", "load", 0, note=f"skipped: {e}")]
    return [row for name in cfg.serve_models for i, precision in enumerate(cfg.precisions)
            for row in model_rows(cfg, device, name, precision, overload=i == 0)]


HEADER = (f"{'serve':<7} {'what':<72} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'batch':>6}"
          f"  {'RSS MB start/warm/end/max':>25}  answers")


def format_row(r: dict) -> str:
    """A serve row as a line of the printed table (:data:`HEADER`)."""
    def number(key: str, spec: str = ".1f") -> str:
        return format(r[key], spec) if r.get(key) is not None else "-"

    if "clients" not in r:
        return f"{'':<7} {r['label']:<72} {r.get('note', '')}"
    label = f"{r['model']} {r['label']}"
    ratio = f"{r['ratio']:.2f}×" if "ratio" in r else ""
    rss = "/".join(number(f"rss_{k}_mb", ".0f") for k in ("start", "warm", "end", "max"))
    answers = ", ".join(f"{n} × {k}" for k, n in r["statuses"].items())
    wrong = f", {r['wrong_answers']} wrong" if r.get("wrong_answers") else ""
    retry = f", {r['missing_retry_after']} 503s without Retry-After" if r.get("missing_retry_after") else ""
    return (f"{'':<7} {label:<72} {r['clients']:>7} {number('images_per_s'):>8} {number('p50_ms'):>8} {number('p99_ms'):>8}"
            f" {ratio:>6} {number('mean_batch_size'):>6}  {rss:>25}  {answers}{wrong}{retry}")
