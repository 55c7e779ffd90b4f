"""The explorer's web app: Starlette routes over one :class:`~.session.Session`.

What a request may name, and nothing else:

* ``/`` and ``/static/NAME`` for NAME among the files shipped in ``explore/static`` (read once at
  start into memory: no request path ever reaches the file system, so ``/static/../x``, absolute
  paths and ``%2e%2e`` forms are 404s);
* ``/api/data/SPLIT/INDEX`` for a data-set image, SPLIT one of the data set's splits and INDEX an
  integer in range;
* uploads by the token ``/api/upload`` returned.

Every answer of ``/api/*`` is JSON (or a PNG); a bad request gets ``{"error": "..."}`` with 400
(bad value, bad upload), 404 (no such image, split or class), 411/413 (upload without a length or
over the limit), never a 500 for anything a user can send. On loopback only the Host headers
127.0.0.1, localhost and ::1 are answered (400 otherwise: DNS rebinding), and an upload from
another site's page is refused with 403: the guards of :mod:`alexnet.tools.web`, which ``alexnet
serve`` runs too. One model call runs at a time (the :class:`Gate`: an asyncio lock in front of a
worker thread, so the event loop keeps answering ``/api/status``, which the page polls to show what
is running and how many requests wait).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alexnet.errors import AlexNetError, shown, whole_number
from alexnet.tools.explore.pictures import png
from alexnet.tools.explore.session import ImageRef, NotFound, Session
from alexnet.tools.web import FORM_SLACK, check_file_size, declared_length, error, guards, handlers, query_int

log = logging.getLogger(__name__)

MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def shipped_assets() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, media type) of every file in the package's ``explore/static`` folder."""
    folder = resources.files("alexnet.tools.explore") / "static"
    return {f.name: (f.read_bytes(), MEDIA_TYPES.get("." + f.name.rpartition(".")[2], "application/octet-stream"))
            for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")}


class Gate:
    """One model call at a time, in a worker thread; ``waiting`` and ``running`` are what the page shows."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.running: str | None = None

    async def run(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
        try:
            self.running = what
            return await run_in_threadpool(fn, *args)
        finally:
            self.running = None
            self.lock.release()


def image_ref(request: Request) -> ImageRef:
    """``image=TOKEN`` (an upload) or ``split=NAME&index=N`` (a data-set image)."""
    token = request.query_params.get("image")
    if token:
        return ImageRef(token=token)
    split = request.query_params.get("split")
    if not split:
        raise AlexNetError("name an image: image=TOKEN from /api/upload, or split=NAME&index=N")
    return ImageRef(split=split, index=query_int(request, "index", 0))


class Routes:
    """The handlers: each parses its request, then runs one :class:`Session` method through the gate."""

    def __init__(self, session: Session) -> None:
        self.session, self.gate, self.assets = session, Gate(), shipped_assets()

    def table(self) -> list[Route]:
        return [
            Route("/", self.page), Route("/static/{name}", self.static), Route("/api/status", self.status),
            Route("/api/info", self.info), Route("/api/upload", self.upload, methods=["POST"]),
            Route("/api/data/{split}/{index:int}", self.data_image), Route("/api/classify", self.classify),
            Route("/api/layers", self.layers), Route("/api/filters", self.filters), Route("/api/why", self.why),
            Route("/api/neighbours", self.neighbours), Route("/api/run", self.run), Route("/api/run/live", self.live),
            Route("/api/confusion", self.confusion),
            Route("/api/confusion/cell", self.cell), Route("/api/architecture", self.architecture),
            Route("/api/arithmetic", self.arithmetic),
            Route("/api/unit/layers", self.unit_layers), Route("/api/unit/top", self.unit_top),
            Route("/api/unit/visualise", self.unit_visualise),
        ]

    async def page(self, request: Request) -> Response:
        body, media = self.assets["index.html"]
        return Response(body, media_type=media)

    async def static(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["name"])
        if found is None:
            return error("no such file", 404)
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    async def status(self, request: Request) -> Response:
        return JSONResponse({"running": self.gate.running, "waiting": self.gate.waiting})

    async def info(self, request: Request) -> Response:
        return JSONResponse(self.session.info())

    async def upload(self, request: Request) -> Response:
        limit = self.session.config.max_upload
        declared_length(request.headers, limit, FORM_SLACK)
        form = await request.form(max_files=1, max_fields=4)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            return error("send the image as the multipart form field 'file'", 400)
        data = await file.read(limit + 1)
        check_file_size(file.filename or "upload", data, limit)
        token = await self.gate.run("decoding the upload", self.session.add_upload, data, file.filename or "upload")
        return JSONResponse({"image": token})

    async def data_image(self, request: Request) -> Response:
        split, index = request.path_params["split"], request.path_params["index"]
        image = await self.gate.run("reading an image", self.session.dataset_png, split, index)
        return Response(png(image), media_type="image/png")

    async def classify(self, request: Request) -> Response:
        views = query_int(request, "views", 1)
        if views not in (1, 10):
            raise AlexNetError(f"views={views}: 1 (the centre crop) or 10 (§4.1's ten views)")
        return JSONResponse(await self.gate.run("classifying", self.session.classify, image_ref(request), views))

    async def layers(self, request: Request) -> Response:
        return JSONResponse(await self.gate.run("recording every layer", self.session.layers, image_ref(request)))

    async def arithmetic(self, request: Request) -> Response:
        ref, layer = image_ref(request), request.query_params.get("layer", "")
        text = request.query_params.get("unit", "")
        unit = [whole_number(v) for v in text.split(",")] if text else []
        if None in unit or (not unit and layer != "softmax"):  # the softmax is of the whole output: no unit
            raise AlexNetError(f"unit={shown(text)}: give the unit as channel,row,column (or one index of a vector)")
        return JSONResponse(await self.gate.run("laying out a unit's arithmetic", self.session.arithmetic, ref, layer, unit))

    async def unit_layers(self, request: Request) -> Response:
        return JSONResponse(await self.gate.run("tracing the layers' geometry", self.session.unit_layers))

    async def unit_top(self, request: Request) -> Response:
        layer, channel, target = request.query_params.get("layer"), query_int(request, "channel"), query_int(request, "class")
        split = request.query_params.get("split") or None
        return JSONResponse(await self.gate.run("finding the images that excite the unit most", self.session.unit_top,
                                                split, layer, channel, target))

    async def unit_visualise(self, request: Request) -> Response:
        layer, channel, target = request.query_params.get("layer"), query_int(request, "channel"), query_int(request, "class")
        steps = query_int(request, "steps", None, 1, 512)
        return JSONResponse(await self.gate.run("optimising an image for the unit", self.session.unit_visualise,
                                                layer, channel, target, steps))

    async def architecture(self, request: Request) -> Response:
        svg = await self.gate.run("drawing the architecture", self.session.architecture)
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache"})

    async def filters(self, request: Request) -> Response:
        return JSONResponse(await self.gate.run("drawing conv1's kernels", self.session.filters))

    async def why(self, request: Request) -> Response:
        ref, target = image_ref(request), query_int(request, "class")
        patch, stride = query_int(request, "patch", None, 1, 4096), query_int(request, "stride", None, 1, 4096)
        detail = request.query_params.get("detail", "fine")
        if detail not in ("fine", "coarse"):
            raise AlexNetError(f"detail={detail!r}: fine (the square moves by half its side) or coarse (by its side)")
        return JSONResponse(await self.gate.run("Grad-CAM and occlusion", self.session.why, ref, target, patch, stride,
                                                detail == "coarse"))

    async def neighbours(self, request: Request) -> Response:
        k = query_int(request, "k", 8, 1, 64)
        return JSONResponse(await self.gate.run("searching the feature bank", self.session.neighbours, image_ref(request), k))

    async def run(self, request: Request) -> Response:
        return JSONResponse(await self.gate.run("reading the run", self.session.run_info))

    async def live(self, request: Request) -> Response:
        return JSONResponse(await self.gate.run("following the run", self.session.live))

    async def confusion(self, request: Request) -> Response:
        return JSONResponse(await self.gate.run("the confusion matrix", self.session.confusion))

    async def cell(self, request: Request) -> Response:
        true, predicted = query_int(request, "true", 0), query_int(request, "predicted", 0)
        return JSONResponse(await self.gate.run("the confusion matrix", self.session.confusion_cell, true, predicted))


def create_app(session: Session, hosts: tuple[str, ...] = ("*",)) -> Starlette:
    """The app; ``hosts`` are the Host headers it answers (the command passes LOOPBACK_HOSTS when it
    listens on loopback, so a page of another site that rebinds its name to 127.0.0.1 is refused)."""
    return Starlette(routes=Routes(session).table(), exception_handlers=handlers("explore", {NotFound: 404}),
                     middleware=guards(hosts))
