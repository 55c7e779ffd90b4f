"""alexnet serve as a real server on 127.0.0.1, spoken to by a client written by others (Triton's
``tritonclient.http``, unchanged): health, metadata, FP32 and BYTES inference with binary data, and
dynamic batching under concurrent requests whose answers equal ``alexnet predict``'s; a full queue's
503 and a slow answer's 504 over HTTP; the command's one-line refusals; SIGTERM lets the request in
flight finish."""

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from alexnet import cli

pytest.importorskip("uvicorn", reason="the [serve] extra (uvicorn) is not installed")
pytest.importorskip("prometheus_client", reason="the [serve] extra (prometheus-client) is not installed")
pytest.importorskip("tritonclient.http", reason="tritonclient[http] (the test extra) is not installed")
import tritonclient.http as httpclient
import uvicorn
from helpers import predicted, serving_models
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from alexnet.tools.listen import LOOPBACK_HOSTS, listen
from alexnet.tools.serve.app import ModelServer, create_app
from alexnet.tools.serve.batcher import BatchConfig
from alexnet.tools.serve.repository import find_models, load_all


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return serving_models(tmp_path_factory.mktemp("serve"))


@contextmanager
def running(server: ModelServer):
    """``server`` behind uvicorn on a free port of 127.0.0.1, in a thread; yields "127.0.0.1:PORT"."""
    sock = listen("127.0.0.1", 0)
    web = uvicorn.Server(uvicorn.Config(create_app(server, LOOPBACK_HOSTS), log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if web.started:
                break
            time.sleep(0.01)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        web.should_exit = True
        thread.join(10)
        sock.close()



def files_input(paths):
    blobs = np.array([p.read_bytes() for p in paths], dtype=np.object_)
    return httpclient.InferInput("image_bytes", [len(paths)], "BYTES").set_data_from_numpy(blobs, binary_data=True)


def batch_sizes(url: str) -> tuple[float, float]:
    """(batches run, images in them) of the model digits, from /metrics."""
    text = http_request(url, "GET", "/metrics")[2]
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if s.labels.get("model") == "digits"}
    return found.get("alexnet_serve_batch_size_count", 0), found.get("alexnet_serve_batch_size_sum", 0)


def http_request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, str]:
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    response = connection.getresponse()
    result = response.status, dict(response.getheaders()), response.read().decode()
    connection.close()
    return result


def test_tritons_client_unchanged(served, capsys):
    ckpt, repo, paths = served
    server = ModelServer(load_all(find_models([ckpt, repo])), BatchConfig(max_batch_size=8, max_delay_ms=2))
    with running(server) as url:
        client = httpclient.InferenceServerClient(url)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
        assert client.is_model_ready("onnx", "1") and not client.is_model_ready("nope")
        assert set(client.get_server_metadata()["extensions"]) == {"binary_tensor_data", "classification"}
        meta = client.get_model_metadata("onnx")
        assert meta["versions"] == ["1", "3"] and meta["inputs"][0]["shape"] == [-1, 1, 24, 24]
        expected = predicted(ckpt, paths[:4], capsys)
        result = client.infer("digits", [files_input(paths[:4])])  # no outputs named: all, as binary (the client's default)
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
        labels = result.as_numpy("labels")
        assert labels.shape == (4, 5) and [label.decode() for label in labels[:, 0]] == [str(i) for i in expected.argmax(1)]
        x = server.find("digits").from_files([p.read_bytes() for p in paths[:4]], ["a", "b", "c", "d"]).numpy()
        fp32 = httpclient.InferInput("images", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=True)
        top = httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=3)
        result = client.infer("onnx", [fp32], model_version="1", outputs=[top], request_id="r1")
        assert result.get_response()["id"] == "r1" and result.get_response()["model_version"] == "1"
        first = [entry.split(":") for entry in result.as_numpy("probabilities")[:, 0]]
        assert [int(index) for _, index, _ in first] == list(expected.argmax(1))
        np.testing.assert_allclose([float(value) for value, _, _ in first], expected.max(1), atol=1e-5)
        with pytest.raises(InferenceServerException, match="no model 'nope'") as unknown:
            client.infer("nope", [fp32])
        assert unknown.value.status() == "404"
        client.close()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served, capsys):
    ckpt, _, paths = served
    server = ModelServer(load_all(find_models([ckpt])), BatchConfig(max_batch_size=8, max_delay_ms=50))
    expected = predicted(ckpt, paths[:8], capsys)
    with running(server) as url:
        client = httpclient.InferenceServerClient(url, concurrency=8)
        before = batch_sizes(url)
        pending = [client.async_infer("digits", [files_input([p])]) for p in paths[:8]]
        answers = [r.get_result(timeout=30).as_numpy("probabilities")[0] for r in pending]
        batches, images = (a - b for a, b in zip(batch_sizes(url), before))
        client.close()
    np.testing.assert_allclose(np.stack(answers), expected, atol=1e-5)  # each caller got its own image's answer
    assert images == 8 and batches < 8, f"8 single-image requests ran as {batches:g} batches: nothing was batched"


def test_a_full_queue_answers_503_at_once_and_a_slow_answer_504(served):
    ckpt, _, paths = served
    server = ModelServer(load_all(find_models([ckpt])), BatchConfig(max_batch_size=1, max_delay_ms=0, max_queue=1, timeout_s=1))
    batcher = next(iter(server.batchers.values()))
    gate, started, model = threading.Event(), threading.Event(), batcher.run

    def held(x):  # the model, held until the test lets it go
        started.set()
        gate.wait(20)
        return model(x)

    batcher.run = held
    x = server.find("digits").from_files([paths[0].read_bytes()], ["a"]).numpy()
    body = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}).encode()
    with running(server) as url:
        answers = {}
        threads = [threading.Thread(target=lambda k=k: answers.__setitem__(k, http_request(url, "POST", "/v2/models/digits/infer", body)))
                   for k in ("in the model", "queued")]
        threads[0].start()
        assert started.wait(10)
        threads[1].start()
        time.sleep(0.2)
        status, headers, text = http_request(url, "POST", "/v2/models/digits/infer", body)
        assert status == 503 and headers["retry-after"] == "1" and "(--max-queue)" in json.loads(text)["error"] and "\n" not in text
        for t in threads:
            t.join(10)
        gate.set()
        assert all(a[0] == 504 and "no answer within 1 s (--timeout-s)" in json.loads(a[2])["error"] for a in answers.values()), answers
        assert http_request(url, "POST", "/v2/models/digits/infer", body)[0] == 200  # the server goes on


def test_the_command_refuses_bad_arguments_in_one_line(served, tmp_path, capsys):
    ckpt, repo, _ = served
    onnx = str(repo / "onnx" / "1" / "model.onnx")
    for args, message in (([str(ckpt), "--max-batch-size", "0"], "--max-batch-size 0: must be at least 1"),
                          ([str(ckpt), "--timeout-s", "-1"], "--timeout-s -1.0: must be more than 0"),
                          ([onnx, "--precision", "bf16"], "an .onnx runs in fp32 on ONNX Runtime's CPU provider"),
                          ([str(ckpt), "--port", "70000"], "--port 70000: a port is 0–65535"),
                          ([str(tmp_path / "nope.pt")], "nope.pt: no such file or folder"),
                          ([str(tmp_path)], "a folder with no version folders"),
                          ([str(ckpt), str(ckpt)], "model name 'digits' is given twice")):
        assert cli.main(["serve", *args, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("alexnet: error: ") and message in err and err.count("\n") == 1, err


def test_the_command_prints_each_model_and_warns_off_loopback(served, monkeypatch, capsys):
    ckpt, repo, _ = served
    ran = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: ran.update(address=sockets[0].getsockname()))
    assert cli.main(["serve", str(ckpt), str(repo), "--host", "0.0.0.0", "--port", "0", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine can use the models" in err
    assert "alexnet serve: digits (versions 1; checkpoint, torch fp32, 10 classes) at http://127.0.0.1:" in out
    assert "alexnet serve: onnx (versions 1, 3; ONNX fp32, 10 classes)" in out and "ready at http://127.0.0.1:" in out
    assert ran["address"][0] == "0.0.0.0"
    assert "alexnet serve: warmed up at batch sizes 1–32 in " in err


def test_warm_up_runs_every_batch_size_the_batcher_can_form_largest_first(served, monkeypatch, capsys):
    ckpt, _, _ = served
    server = ModelServer(load_all(find_models([ckpt])), BatchConfig(max_batch_size=5))
    model = server.find("digits")
    sizes = []
    real = model.probabilities
    monkeypatch.setattr(model, "probabilities", lambda x: sizes.append(len(x)) or real(x))
    server.warm_up()
    assert sizes == [5, 4, 3, 2, 1]
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    monkeypatch.setattr(ModelServer, "warm_up", lambda self: sizes.append("again"))
    assert cli.main(["serve", str(ckpt), "--port", "0", "--device", "cpu", "--no-warmup"]) == 0
    assert sizes == [5, 4, 3, 2, 1] and "warmed up" not in capsys.readouterr().err


def test_a_missing_package_of_the_extra_names_the_pip_command(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prometheus_client" else real(name, *a))
    assert cli.main(["serve", "x.pt"]) == 2
    assert capsys.readouterr().err.strip() == "alexnet: error: alexnet serve needs prometheus-client: pip install 'alexnet[serve]'"


def test_sigterm_lets_the_request_in_flight_finish(served, cli_env):
    """The request waits 1.5 s for a batch to fill (--max-delay-ms); SIGTERM arrives meanwhile; uvicorn's
    graceful shutdown answers it, then the process ends (re-raising the signal, as uvicorn does)."""
    ckpt, _, paths = served
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", str(ckpt), "--port", "0", "--max-delay-ms", "1500",
                             "--device", "cpu"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stdout:
            if "ready at http://" in line:
                url = line.split("http://")[1].split("/")[0]
                break
        assert url is not None, proc.stderr.read()
        answer = {}
        body = b"".join([b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n",
                         b"Content-Type: image/png\r\n\r\n", paths[0].read_bytes(), b"\r\n--B--\r\n"])

        def post():
            host, port = url.split(":")
            c = http.client.HTTPConnection(host, int(port), timeout=30)
            c.request("POST", "/predict", body=body, headers={"Content-Type": "multipart/form-data; boundary=B"})
            r = c.getresponse()
            answer.update(status=r.status, body=json.loads(r.read()))

        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert answer["status"] == 200 and answer["body"]["images"][0]["image"] == "a.png"
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
