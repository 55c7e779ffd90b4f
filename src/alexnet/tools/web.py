"""What every local web server of this package does the same way (``alexnet explore``, ``alexnet serve``).

* :func:`error`: the one-line JSON answer of every refusal, ``{"error": "..."}`` (the Open Inference
  Protocol's error object has the same shape).
* :class:`HostCheck`: on loopback only the Host headers 127.0.0.1, localhost and ::1 are answered
  (400 otherwise): a page of another site that rebinds its DNS name to 127.0.0.1 reaches the server
  with its own name as the Host.
* :class:`SameOrigin`: a request that changes state (any method but GET, HEAD and OPTIONS) whose
  ``Origin`` (else ``Referer``) is not this server's own is refused with 403: a page of another site
  can post a form to 127.0.0.1, and the browser sends the Host it posts to; a client without either
  header (curl, a script, an inference client) is no browser page and is answered. A GET whose
  ``Sec-Fetch-Site`` says another site's page made it is refused too, unless it opens a page.
* :func:`guards`: the two as Starlette middleware; :func:`declared_length`: a body's
  Content-Length, required and within a limit (411, 413), and no Content-Encoding (415), read before
  the body is.
* :func:`handlers`: what each exception is answered with: an :class:`HttpError` with its status and
  headers, Starlette's own (404, 405 with its ``Allow`` header) as they are, any other
  :class:`AlexNetError` or ``ValueError`` 400, anything else a logged 500.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from alexnet.errors import AlexNetError, shown, whole_number

log = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class HttpError(AlexNetError):
    """A refusal with its HTTP status; the apps answer it with :func:`error`."""

    def __init__(self, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


def declared_length(headers: Headers, limit: int, slack: int = 0, what: str = "an upload") -> int:
    """The body's Content-Length: required (411) and at most ``limit`` + ``slack`` bytes (413); the
    server (h11) holds a client to the length it declared. A compressed body is refused (415): its
    length says nothing of what it inflates to."""
    encoding = headers.get("content-encoding", "identity")
    if encoding.strip().lower() != "identity":
        raise HttpError(f"Content-Encoding {shown(encoding)}: send {what} uncompressed", 415)
    length = whole_number(headers.get("content-length"))
    if length is None:
        raise HttpError(f"{what} needs a Content-Length", 411)
    if length > limit + slack:
        raise HttpError(f"{what} of {length:,} bytes is over the limit of {limit:,}", 413)
    return length


def query_int(request: Request, name: str, default: int | None = None, low: int = 0, high: int | None = None) -> int | None:
    """The query parameter ``name`` as a whole number from ``low`` (to ``high``), else a 400 naming it; absent or
    empty (a form's blank field) is ``default``. An unbounded one (an index, a class) is checked where its
    range is known."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    number = whole_number(value)
    if number is None or number < low or (high is not None and number > high):
        within = f"≥ {low}" if high is None else f"in {low}–{high}"
        raise HttpError(f"{name}={shown(value)} must be a whole number {within}", 400)
    return number


FORM_SLACK = 64 * 1024  # a multipart form's headers and boundaries, beyond its files' own limit


def check_file_size(name: str, data: bytes, limit: int) -> None:
    """One uploaded file of a form within its own limit (413), read as ``file.read(limit + 1)``: the form's
    Content-Length (:func:`declared_length`) bounds all its files together, not each."""
    if len(data) > limit:
        raise HttpError(f"{name}: over the limit of {limit:,} bytes for one image", 413)


def handlers(server: str, statuses: dict[type[AlexNetError], int] | None = None) -> dict:
    """Starlette's ``exception_handlers`` for the server named ``server`` (in the log of a 500);
    ``statuses`` answers further error types with their own status (explore's NotFound: 404). Starlette
    picks a handler by the exception's class, then its bases."""
    def internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s: %s failed", server, request.url.path)
        return error(f"internal error: {type(e).__name__}: {e}", 500)

    own = {kind: (lambda r, e, status=status: error(str(e), status)) for kind, status in (statuses or {}).items()}
    return {**own, HttpError: lambda r, e: error(str(e), e.status, e.headers), AlexNetError: lambda r, e: error(str(e), 400),
            ValueError: lambda r, e: error(str(e), 400),
            HTTPException: lambda r, e: error(str(e.detail), e.status_code, e.headers), Exception: internal}


def host_name(header: str) -> str | None:
    """The name in a Host header (``[::1]:8000`` → ``::1``), lower case; None when it is not one."""
    try:
        return urlsplit("//" + header).hostname
    except ValueError:
        return None


class HostCheck:
    """ASGI middleware: 400 for a request whose Host is not one of ``hosts``."""

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app, self.names = app, {h.strip("[]").lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = Headers(scope=scope).get("host", "")
            if host_name(header) not in self.names:
                why = f"Host {header!r} is not one this server answers ({', '.join(sorted(self.names))}): a page of another site?"
                await error(why, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_origin(headers: Headers, scheme: str) -> str | None:
    """Why a state-changing request comes from another site's page (its ``Origin``, else its ``Referer``,
    is not ``scheme://Host``), or None. ``Origin: null`` (a sandboxed or file: page) is another site."""
    own = f"{scheme}://{headers.get('host', '')}".lower()
    for name in ("origin", "referer"):
        value = headers.get(name)
        if value is None:
            continue
        parts = urlsplit(value)
        theirs = f"{parts.scheme}://{parts.netloc}".lower() if parts.netloc else value.lower()
        if theirs == own:
            return None
        return f"{name.capitalize()} {value!r} is not this server ({own}); it takes uploads only from its own page"
    return None


class SameOrigin:
    """ASGI middleware: 403 for a state-changing request from another origin (:func:`cross_origin`), and
    for any other request a browser marks as made by another site's page (:func:`cross_site_fetch`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            why = cross_site_fetch(headers) if scope["method"] in SAFE_METHODS else cross_origin(headers, scope.get("scheme", "http"))
            if why is not None:
                await error(why, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_site_fetch(headers: Headers) -> str | None:
    """Why a GET is refused: a browser's Fetch Metadata say another site's page made it (an ``<img>`` or
    a script pointed at /api/why costs a forward pass per pixel), not a person opening a link. The
    resource-isolation policy of web.dev/articles/fetch-metadata; a client without the headers (curl,
    a script, an older browser) is answered."""
    site = headers.get("sec-fetch-site")
    if site in (None, "same-origin", "none"):
        return None
    if headers.get("sec-fetch-mode") == "navigate" and headers.get("sec-fetch-dest") in ("document", None):
        return None  # a link followed to this server's page
    return f"a request by a page of another site (Sec-Fetch-Site: {shown(site)}); this server answers its own page"


def guards(hosts: tuple[str, ...] = ("*",)) -> list[Middleware]:
    """The middleware of a local server: the Host check (unless ``hosts`` holds ``*``: a server told
    to listen on another address answers any name) and the same-origin rule."""
    checks = [] if "*" in hosts else [Middleware(HostCheck, hosts=hosts)]
    return [*checks, Middleware(SameOrigin)]
