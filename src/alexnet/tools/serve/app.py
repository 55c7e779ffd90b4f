"""The server's web app: the Open Inference Protocol's REST endpoints, ``/predict`` and ``/metrics``.

=====================================================  ===========================================================
``GET /v2/health/live``, ``GET /v2/health/ready``       200 ``{"live": true}`` / ``{"ready": true}`` (400 when not)
``GET /v2``                                             server metadata: name, version, extensions
``GET /v2/models/NAME[/versions/V]``                    model metadata: inputs, outputs, our ``parameters``
``GET /v2/models/NAME[/versions/V]/ready``              ``{"name": NAME, "ready": true}``
``POST /v2/models/NAME[/versions/V]/infer``             inference (:mod:`.protocol`), dynamically batched
``POST /predict[?model=NAME&version=V&top_k=K]``        multipart image upload(s), field ``image`` (``curl -F``)
``GET /metrics``                                        Prometheus text (:mod:`.metrics`)
=====================================================  ===========================================================

A request names a model by the name the server gave it (a file's stem, a folder's name), never a
path. Every refusal is a one-line JSON ``{"error": "..."}`` (the spec's error object): 400 for a bad
request (JSON, shape, datatype, not an image, a batch over ``--max-batch-size``), 404 for an unknown
model, version or path, 411/413 for a body without a length or over the limit, 415 for a compressed
body, 503 with ``Retry-After`` when the model's queue is full, 504 past ``--timeout-s``; a 500 only
for a fault of the server itself. The guards of :mod:`alexnet.tools.web` (Host, same-origin) run
before every route. Parsing, image decoding and response encoding run in worker threads, the model
in its batcher's (:mod:`.batcher`), so the event loop only routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alexnet import __version__
from alexnet.data.images import MAX_UPLOAD
from alexnet.errors import AlexNetError
from alexnet.inference.evaluate import top_labels
from alexnet.tools.serve import protocol
from alexnet.tools.serve.batcher import BatchConfig, Batcher
from alexnet.tools.serve.metrics import Metrics, ModelMetrics
from alexnet.tools.serve.repository import Served
from alexnet.tools.web import FORM_SLACK, HttpError, check_file_size, declared_length, guards, handlers, query_int

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024 * 1024  # bytes of one request body: 32 paper-size FP32 inputs are 19.8 MB as binary, ~50 MB as JSON text


class ModelServer:
    """The served models (name → version → :class:`Served`), a :class:`Batcher` and metrics for each."""

    def __init__(self, models: dict[str, dict[str, Served]], config: BatchConfig) -> None:
        self.models, self.config, self.metrics = models, config, Metrics()
        self.batchers = {(s.name, s.version): Batcher(f"{s.name} version {s.version}", s.probabilities, config,
                                                      self.metrics.of(s.name, s.version))
                         for versions in models.values() for s in versions.values()}

    def versions(self, name: str) -> list[str]:
        return sorted(self.models[name], key=int)

    def find(self, name: str, version: str | None = None) -> Served:
        """The model ``name`` at ``version`` (default: its highest), or a 404 naming what exists."""
        if name not in self.models:
            raise HttpError(f"no model {name!r}; this server has {', '.join(map(repr, sorted(self.models)))}", 404)
        version = version or self.versions(name)[-1]
        if version not in self.models[name]:
            raise HttpError(f"model {name!r} has no version {version!r}; it has {', '.join(self.versions(name))}", 404)
        return self.models[name][version]

    def warm_up(self) -> None:
        """Every model version at every batch size it can be given (:meth:`Served.warm_up`), before the first request."""
        for versions in self.models.values():
            for served in versions.values():
                served.warm_up(self.config.max_batch_size)

    def batcher(self, served: Served) -> Batcher:
        return self.batchers[served.name, served.version]

    def ready(self) -> bool:
        return all(b.running for b in self.batchers.values())

    async def start(self) -> None:
        for b in self.batchers.values():
            b.start()

    async def stop(self) -> None:
        for b in self.batchers.values():
            await b.stop()


@contextmanager
def counted(metrics: ModelMetrics) -> Iterator[None]:
    """Count an inference request, and its failure by the status it is answered with."""
    try:
        yield
    except HttpError as e:
        metrics.failed(e.status)
        raise
    except (AlexNetError, ValueError, HTTPException) as e:
        metrics.failed(getattr(e, "status_code", 400))
        raise
    except Exception:
        metrics.failed(500)
        raise
    finally:
        metrics.requests.inc()


class Routes:
    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def table(self) -> list[Route]:
        model, version = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
        return [Route("/v2/health/live", self.live), Route("/v2/health/ready", self.ready), Route("/v2", self.server_metadata),
                Route(model, self.model_metadata), Route(version, self.model_metadata),
                Route(model + "/ready", self.model_ready), Route(version + "/ready", self.model_ready),
                Route(model + "/infer", self.infer, methods=["POST"]), Route(version + "/infer", self.infer, methods=["POST"]),
                Route("/predict", self.predict, methods=["POST"]), Route("/metrics", self.metrics)]

    def _served(self, request: Request) -> Served:
        return self.server.find(request.path_params["name"], request.path_params.get("version"))

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.server.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 400)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(protocol.server_metadata(__version__))

    async def model_metadata(self, request: Request) -> Response:
        served = self._served(request)
        return JSONResponse(protocol.model_metadata(served, self.server.versions(served.name), self.server.config.max_batch_size))

    async def model_ready(self, request: Request) -> Response:
        served = self._served(request)
        ready = self.server.batcher(served).running
        return JSONResponse({"name": served.name, "ready": ready}, status_code=200 if ready else 400)

    async def metrics(self, request: Request) -> Response:
        return Response(self.server.metrics.text(), media_type=self.server.metrics.content_type)

    async def _run(self, served: Served, files: list[bytes] | None, names: list[str], array=None):
        """Probabilities [N, K] of encoded files (decoded in a worker thread) or of an FP32 array, batched."""
        batcher = self.server.batcher(served)
        batcher.check(len(files) if files is not None else len(array))
        x = await run_in_threadpool(served.from_files, files, names) if files is not None else served.from_array(array)
        return await batcher.submit(x)

    async def infer(self, request: Request) -> Response:
        served = self._served(request)
        with counted(self.server.metrics.of(served.name, served.version)):
            declared_length(request.headers, MAX_REQUEST, what="an infer request")
            body = await request.body()
            inference = await run_in_threadpool(protocol.parse, body, request.headers.get("inference-header-content-length"),
                                                (served.channels, served.crop, served.crop), len(served.classes))
            names = [f"{protocol.BYTES_INPUT}[{i}]" for i in range(len(inference))]
            probabilities = await self._run(served, inference.files, names, inference.array)
            content, headers = await run_in_threadpool(protocol.respond, served.name, served.version, inference, probabilities,
                                                       served.classes)
        return Response(content, headers=headers)

    async def predict(self, request: Request) -> Response:
        name = request.query_params.get("model") or (next(iter(self.server.models)) if len(self.server.models) == 1 else None)
        if name is None:
            raise HttpError(f"this server has several models; name one: /predict?model=NAME ({', '.join(sorted(self.server.models))})", 400)
        served = self.server.find(name, request.query_params.get("version"))
        top_k = query_int(request, "top_k", protocol.TOP_LABELS, 1)
        with counted(self.server.metrics.of(served.name, served.version)):
            limit = self.server.config.max_batch_size
            declared_length(request.headers, min(MAX_REQUEST, limit * MAX_UPLOAD), FORM_SLACK)
            form = await request.form(max_files=limit, max_fields=limit + 4)
            files = [f for f in form.getlist("image") if isinstance(f, UploadFile)]
            if not files:
                raise HttpError("send the image as the multipart form field 'image': curl -F image=@photo.jpg …/predict", 400)
            blobs = [await f.read(MAX_UPLOAD + 1) for f in files]
            names = [f.filename or f"image[{i}]" for i, f in enumerate(files)]
            for blob, n in zip(blobs, names):
                check_file_size(n, blob, MAX_UPLOAD)
            probabilities = await self._run(served, blobs, names)
        tops = top_labels(probabilities, served.classes, top_k)
        return JSONResponse({"model_name": served.name, "model_version": served.version,
                             "images": [{"image": n, "predictions": t} for n, t in zip(names, tops)]})


def create_app(server: ModelServer, hosts: tuple[str, ...] = ("*",)) -> Starlette:
    """The app over ``server``; ``hosts`` as :func:`alexnet.tools.web.guards` takes them. Its lifespan
    starts the batchers and, after uvicorn's graceful shutdown has let the requests in flight finish, stops them."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    return Starlette(routes=Routes(server).table(), exception_handlers=handlers("serve"), middleware=guards(hosts),
                     lifespan=lifespan)
