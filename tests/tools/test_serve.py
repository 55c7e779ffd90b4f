"""alexnet serve in process (Starlette's TestClient): the model repository's layouts, the Open
Inference Protocol's endpoints with JSON and binary tensors, answers equal to ``alexnet predict``'s,
``/predict``, ``/metrics``, every bad request a one-line 4xx; the batcher's batching, routing,
bounded queue and timeout. A third-party client against a real server: test_serve_client.py."""

import asyncio
import base64
import json
import struct
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.errors import AlexNetError

pytest.importorskip("starlette", reason="the [serve] extra (starlette) is not installed")
pytest.importorskip("prometheus_client", reason="the [serve] extra (prometheus-client) is not installed")
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2")
from helpers import predicted, serving_models
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from alexnet.tools.listen import LOOPBACK_HOSTS
from alexnet.tools.serve import protocol
from alexnet.tools.serve.app import ModelServer, create_app
from alexnet.tools.serve.batcher import BatchConfig, Batcher, QueueFull, TimedOut
from alexnet.tools.serve.repository import find_models, load_all

URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return serving_models(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(served):
    ckpt, repo, _ = served
    return ModelServer(load_all(find_models([ckpt, repo])), BatchConfig(max_batch_size=8, max_delay_ms=2))


@pytest.fixture(scope="module")
def client(server):
    with TestClient(create_app(server, LOOPBACK_HOSTS), base_url=URL, raise_server_exceptions=False) as c:
        yield c



def files_request(paths, outputs=None, **extra) -> dict:
    data = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    request = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [len(paths)], "data": data}], **extra}
    return request if outputs is None else {**request, "outputs": outputs}


def output(response: dict, name: str) -> dict:
    return next(o for o in response["outputs"] if o["name"] == name)


# -- the MODEL arguments -------------------------------------------------------------------------
def test_models_are_found_in_every_layout_and_a_name_given_twice_is_refused(tmp_path):
    for path in ("one.pt", "net/1/model.onnx", "net/1/notes.txt", "net/2/weights.pt", "repo/a/1/model.pt", "repo/b/4/x.onnx",
                 "repo/b/10/model.pt", "amb/1/a.pt", "amb/1/b.pt", "odd/a/1/model.pt", "odd/notes/readme.txt", "more/one/1/model.pt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    found = find_models([tmp_path / "one.pt", tmp_path / "net", tmp_path / "repo"])
    assert [(f.name, f.version, f.path.relative_to(tmp_path).as_posix()) for f in found] == [
        ("one", "1", "one.pt"), ("net", "1", "net/1/model.onnx"), ("net", "2", "net/2/weights.pt"),
        ("a", "1", "repo/a/1/model.pt"), ("b", "4", "repo/b/4/x.onnx"), ("b", "10", "repo/b/10/model.pt")]
    for args, message in (([tmp_path / "one.pt", tmp_path / "more"], "model name 'one' is given twice: by .*one.pt and by .*more"),
                          ([tmp_path / "one.pt", tmp_path / "one.pt"], "model name 'one' is given twice"),
                          ([tmp_path / "amb"], "amb/1: a version folder holds model.onnx, model.pt or one model file; it holds a.pt, b.pt"),
                          ([tmp_path / "empty"], "empty: a folder with no version folders"),
                          ([tmp_path / "odd"], "odd/notes: a model folder in the repository .* without version folders"),
                          ([tmp_path / "nope.pt"], "nope.pt: no such file or folder")):
        with pytest.raises(AlexNetError, match=message):
            find_models(args)


# -- the protocol --------------------------------------------------------------------------------
def test_health_server_and_model_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json() == {"name": "alexnet", "version": "0.1.0", "extensions": ["binary_tensor_data", "classification"]}
    meta = client.get("/v2/models/digits").json()
    assert meta["name"] == "digits" and meta["versions"] == ["1"] and meta["platform"] == "pytorch_checkpoint"
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 24, 24]},
                              {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                               {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]}]
    p = meta["parameters"]
    assert p["classes"] == [str(d) for d in range(10)] and p["architecture"] == "alexnet_small" and p["max_batch_size"] == 8
    assert p["preprocessing"]["resize"] == 28 and p["preprocessing"]["crop"] == 24 and len(p["preprocessing"]["mean"]) == 1
    onnx = client.get("/v2/models/onnx").json()
    assert onnx["versions"] == ["1", "3"] and onnx["platform"] == "onnx_onnxv1" and onnx["parameters"]["format"] == "ONNX fp32"
    assert client.get("/v2/models/onnx/versions/1").json()["name"] == "onnx"
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/onnx/versions/3/ready").status_code == 200


def test_answers_equal_alexnet_predicts_for_files_and_for_fp32_input(client, server, served, capsys):
    ckpt, repo, paths = served
    paths = paths[:6]
    for model, path in (("digits", ckpt), ("onnx", repo / "onnx" / "3" / "model.onnx")):
        expected = predicted(path, paths, capsys)
        response = client.post(f"/v2/models/{model}/infer", json=files_request(paths, id="req-7"))
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["model_name"] == model and body["model_version"] == ("1" if model == "digits" else "3") and body["id"] == "req-7"
        probabilities = np.array(output(body, "probabilities")["data"]).reshape(output(body, "probabilities")["shape"])
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        labels = output(body, "labels")
        assert labels["shape"] == [6, 5] and labels["datatype"] == "BYTES"
        assert labels["data"][::5] == [str(i) for i in expected.argmax(1)]  # top-1 of each image
    served_model = server.find("digits")
    x = served_model.from_files([p.read_bytes() for p in paths], [p.name for p in paths]).numpy()
    request = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}],  # nested form
               "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    top = output(client.post("/v2/models/digits/infer", json=request).json(), "probabilities")
    assert top["datatype"] == "BYTES" and top["shape"] == [6, 2]
    expected = predicted(ckpt, paths, capsys)
    for i, entry in enumerate(top["data"][::2]):  # Triton's classification: "value:index:label"
        value, index, label = entry.split(":")
        assert int(index) == expected[i].argmax() and label == index and abs(float(value) - expected[i].max()) < 1e-5


def test_binary_tensor_data_in_both_directions(client, server, served):
    _, _, paths = served
    x = server.find("digits").from_files([p.read_bytes() for p in paths[:2]], ["a", "b"]).numpy()
    head = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 1, 24, 24],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    response = client.post("/v2/models/digits/infer", content=head + x.astype("<f4").tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(head))})
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    n = int(response.headers["inference-header-content-length"])
    body = json.loads(response.content[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in body["outputs"]]
    blob = response.content[n:]
    assert sum(sizes) == len(blob) and sizes[0] == 2 * 10 * 4
    probabilities = np.frombuffer(blob[: sizes[0]], "<f4").reshape(2, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    labels, at = [], sizes[0]
    while at < len(blob):
        (size,) = struct.unpack_from("<I", blob, at)
        labels.append(blob[at + 4 : at + 4 + size].decode())
        at += 4 + size
    assert len(labels) == 10 and labels[0] == str(probabilities[0].argmax()) and labels[5] == str(probabilities[1].argmax())
    files = b"".join(struct.pack("<I", len(d)) + d for d in (p.read_bytes() for p in paths[:2]))  # BYTES in, JSON out
    head = json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(files)}}],
                       "outputs": [{"name": "probabilities"}]}).encode()
    response = client.post("/v2/models/digits/infer", content=head + files, headers={"Inference-Header-Content-Length": str(len(head))})
    np.testing.assert_allclose(np.array(response.json()["outputs"][0]["data"]).reshape(2, 10), probabilities, atol=1e-5)


def fp32(shape, values=None, **tensor) -> dict:
    data = values if values is not None else [0.0] * int(np.prod(shape))
    return {"inputs": [{"name": "images", "datatype": "FP32", "shape": shape, "data": data, **tensor}]}


def b64(data: bytes, n: int = 1) -> dict:
    return {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [n], "data": [base64.b64encode(data).decode()] * n}]}


def bomb() -> bytes:
    import io
    buffer = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buffer, format="PNG")  # 90 M pixels in a few kB
    return buffer.getvalue()


INFER = "/v2/models/digits/infer"
BAD = [
    (INFER, {"content": b"{not json"}, 400, "not JSON"),
    (INFER, {"content": b"[1, 2]"}, 400, "not the $inference_request object"),
    (INFER, {"content": b"[" * 100_000}, 400, "nested too deeply"),
    (INFER, {"json": {"inputs": []}}, 400, "inputs must be a list of one tensor object"),
    (INFER, {"json": {**fp32([1, 1, 24, 24]), "id": 7}}, 400, "id must be a string"),
    (INFER, {"json": {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0]}]}}, 400, "no input 'pixels'"),
    (INFER, {"json": fp32([1, 1, 24, 24], datatype="INT8")}, 400, "input 'images' is FP32, not 'INT8'"),
    (INFER, {"json": fp32([1, 3, 24, 24])}, 400, "this model takes [N, 1, 24, 24]"),
    (INFER, {"json": fp32([1, 1, 24, 24], [0.0] * 10)}, 400, "10 values for shape [1, 1, 24, 24] (576 values)"),
    (INFER, {"json": fp32([1, 1, 24, 24], ["a"] * 576)}, 400, "data must be JSON numbers (found strings)"),
    (INFER, {"json": fp32([1, 1, 24, 24], [10**400] + [0] * 575)}, 400, "data must be JSON numbers (found integers past int64: send them as floats)"),
    (INFER, {"json": fp32([1, 1, 24, 24], [None] * 576)}, 400, "data must be JSON numbers (found null)"),
    (INFER, {"json": fp32([1, 1, 24, 24], [[0.0] * 575, [0.0]])}, 400, "data is not an array of numbers"),
    (INFER, {"json": fp32([0, 1, 24, 24])}, 400, "an empty batch"),
    (INFER, {"content": json.dumps(fp32([1, 1, 24, 24], [float("nan")] * 576)).encode()}, 400, "NaN or infinite"),
    (INFER, {"json": {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]}}, 400, "not base64"),
    (INFER, {"json": b64(b"just some text")}, 400, "image_bytes[0]: not an image"),
    (INFER, {"json": b64(bomb())}, 400, "image_bytes[0]: decompression bomb"),
    (INFER, {"json": b64(b"x", 9)}, 400, "a batch of 9 is over the largest this server runs, 8 (--max-batch-size)"),
    (INFER, {"json": {**fp32([1, 1, 24, 24]), "outputs": [{"name": "logits"}]}}, 400, "output 'logits': no such output"),
    (INFER, {"json": {**fp32([1, 1, 24, 24]), "outputs": [{"name": "labels", "parameters": {"classification": 0}}]}}, 400,
     "parameters.classification 0 must be a whole number ≥ 1"),
    (INFER, {"json": {**fp32([1, 1, 24, 24]), "parameters": {"binary_data_output": "yes"}}}, 400, "binary_data_output must be true or false"),
    (INFER, {"content": b"{}", "headers": {"Inference-Header-Content-Length": "abc"}}, 400, "Inference-Header-Content-Length 'abc'"),
    (INFER, {"content": json.dumps(fp32([1, 1, 24, 24])).encode() + b"xx",
             "headers": {"Inference-Header-Content-Length": str(len(json.dumps(fp32([1, 1, 24, 24]))))}}, 400,
     "2 bytes of binary data after the JSON, but no input has parameters.binary_data_size"),
    (INFER, {"content": json.dumps(fp32([1, 1, 24, 24], parameters={"binary_data_size": 8})).encode() + b"1234",
             "headers": {"Inference-Header-Content-Length": str(len(json.dumps(fp32([1, 1, 24, 24], parameters={"binary_data_size": 8}))))}},
     400, "binary_data_size 8, but 4 bytes follow the JSON"),
    (INFER, {"content": b"{}", "headers": {"Content-Encoding": "gzip"}}, 415, "Content-Encoding 'gzip': send an infer request uncompressed"),
    (INFER, {"content": b"{}", "headers": {"Content-Length": str(10**9)}}, 413, "over the limit of 67,108,864"),
    ("/v2/models/nope/infer", {"json": fp32([1, 1, 24, 24])}, 404, "no model 'nope'; this server has 'digits', 'onnx'"),
    ("/v2/models/onnx/versions/2/infer", {"json": fp32([1, 1, 24, 24])}, 404, "model 'onnx' has no version '2'; it has 1, 3"),
    ("/predict", {"files": {"image": ("a.png", b"x", "image/png")}}, 400, "several models; name one: /predict?model=NAME"),
    ("/predict?model=digits", {"data": {"x": "1"}}, 400, "the multipart form field 'image'"),
    ("/predict?model=digits", {"files": {"image": ("notes.png", b"text", "image/png")}}, 400, "notes.png: not an image"),
    ("/predict?model=digits", {"files": {"image": ("a.png", b"x", "image/png")}, "headers": {"Content-Encoding": "gzip"}}, 415,
     "Content-Encoding 'gzip': send an upload uncompressed"),
    ("/predict?model=digits&top_k=0", {"files": {"image": ("a.png", b"x", "image/png")}}, 400, "top_k='0' must be a whole number ≥ 1"),
    ("/predict?model=digits&top_k=%C2%B2", {"files": {"image": ("a.png", b"x", "image/png")}}, 400, "top_k='²' must be a whole number"),
    ("/predict?model=digits&top_k=%D9%A3", {"files": {"image": ("a.png", b"x", "image/png")}}, 400, "top_k='٣' must be a whole number"),
    (f"/predict?model=digits&top_k={'9' * 5000}", {"files": {"image": ("a.png", b"x", "image/png")}}, 400,
     f"top_k='{'9' * 40}'… must be a whole number"),
]


@pytest.mark.parametrize("path, kwargs, status, message", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_a_bad_request_is_a_one_line_4xx(client, path, kwargs, status, message):
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    assert message in body["error"]


def test_an_image_over_the_upload_limit_is_413_and_other_methods_and_paths_are_json(client, served, monkeypatch):
    monkeypatch.setattr(protocol, "MAX_UPLOAD", 100)
    response = client.post(INFER, json=b64(served[2][0].read_bytes() + b"\0" * 100))
    assert response.status_code == 413 and "element 0 is" in response.json()["error"] and "over the limit of 100" in response.json()["error"]
    assert client.get(INFER).status_code == 405 and "error" in client.get(INFER).json()
    assert client.get(INFER).headers["allow"] == "POST"  # RFC 9110: a 405 names the methods the path takes
    assert client.get("/v2/nothing").status_code == 404 and client.get("/v2/models/nope").json()["error"].startswith("no model 'nope'")


def test_predict_upload_like_curl_and_the_host_and_origin_guards(client, server, served, capsys):
    ckpt, _, paths = served
    response = client.post("/predict?model=digits&top_k=3", files=[("image", (p.name, p.read_bytes(), "image/png")) for p in paths[:3]])
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "digits" and [r["image"] for r in body["images"]] == [p.name for p in paths[:3]]
    expected = predicted(ckpt, paths[:3], capsys)
    for row, result in zip(expected, body["images"]):
        assert len(result["predictions"]) == 3 and result["predictions"][0]["index"] == row.argmax()
        assert abs(result["predictions"][0]["probability"] - row.max()) < 1e-5
    blank = client.post("/predict?model=digits&top_k=", files=[("image", (paths[0].name, paths[0].read_bytes(), "image/png"))])
    assert len(blank.json()["images"][0]["predictions"]) == protocol.TOP_LABELS  # a blank field: the default, as explore reads it
    app = create_app(server, LOOPBACK_HOSTS)  # no lifespan: the guards answer before any route
    rebound = TestClient(app, base_url="http://rebound.example:8080").get("/v2")
    assert rebound.status_code == 400 and "Host 'rebound.example:8080' is not one this server answers" in rebound.json()["error"]
    assert TestClient(app, base_url="http://[::1]:8080").get("/v2").status_code == 200
    evil = TestClient(app, base_url=URL).post(INFER, json=fp32([1, 1, 24, 24]), headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "is not this server" in evil.json()["error"]


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_count_requests_failures_and_batches(client, served):
    labels = (("model", "digits"), ("version", "1"))
    before = samples(client.get("/metrics").text)
    assert client.post(INFER, json=files_request(served[2][:3])).status_code == 200
    assert client.post(INFER, json=fp32([1, 1, 24, 24], datatype="INT8")).status_code == 400
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    change = lambda name, extra=(): after.get((name, tuple(sorted(labels + extra))), 0) - before.get((name, tuple(sorted(labels + extra))), 0)
    assert change("alexnet_serve_requests_total") == 2 and change("alexnet_serve_failures_total", (("code", "400"),)) == 1
    assert change("alexnet_serve_batch_size_count") == 1 and change("alexnet_serve_batch_size_sum") == 3
    assert change("alexnet_serve_queue_seconds_count") == 1 and change("alexnet_serve_compute_seconds_count") == 1
    assert ("alexnet_serve_queue_depth", labels) in after
    assert not any(dict(key[1]).get("model") == "nope" for key in after)  # an unknown name adds no series


# -- the batcher ---------------------------------------------------------------------------------
def test_batcher_stacks_what_arrives_together_and_routes_each_answer_back():
    sizes = []

    def run(x):
        sizes.append(len(x))
        return x * 2

    async def main():
        batcher = Batcher("m", run, BatchConfig(max_batch_size=4, max_delay_ms=50))
        batcher.start()
        inputs = [torch.full((n, 3), float(i)) for i, n in enumerate([1, 2, 1, 3, 1])]
        answers = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.stop()
        return inputs, answers

    inputs, answers = asyncio.run(main())
    for x, y in zip(inputs, answers):
        assert torch.equal(y, x * 2)
    assert sizes == [4, 4]  # 1+2+1 fills the first batch; the 3 would overflow it and starts the next with the last 1


def test_a_full_queue_is_refused_at_once_and_a_slow_answer_times_out():
    gate, started = threading.Event(), threading.Event()

    def run(x):
        started.set()
        gate.wait(10)
        return x

    async def main():
        batcher = Batcher("m", run, BatchConfig(max_batch_size=1, max_delay_ms=0, max_queue=1, timeout_s=0.3))
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1)))
        while not started.is_set():  # the first request is in the model; the next one waits in the queue
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit(torch.zeros(1, 1)))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as full:
            await batcher.submit(torch.zeros(1, 1))
        results = await asyncio.gather(first, second, return_exceptions=True)
        gate.set()
        await batcher.stop()
        return full.value, results

    full, results = asyncio.run(main())
    assert full.status == 503 and full.headers == {"Retry-After": "1"} and "1 requests are waiting already (--max-queue)" in str(full)
    assert all(isinstance(r, TimedOut) and r.status == 504 and "no answer within 0.3 s" in str(r) for r in results)


def test_batch_config_flags_are_range_checked():
    for flags, message in (({"max_batch_size": 0}, "--max-batch-size 0: must be at least 1"),
                           ({"max_queue": 0}, "--max-queue 0: must be at least 1"),
                           ({"max_delay_ms": -1}, "--max-delay-ms -1: must be 0–60000"),
                           ({"timeout_s": 0}, "--timeout-s 0: must be more than 0")):
        with pytest.raises(ValueError, match=message):
            BatchConfig(**flags)
