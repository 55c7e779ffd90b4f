"""What every local web server of this package does the same way (``alexnet explore``, ``alexnet serve``).

* :func:`error`: the one-line JSON answer of every refusal, ``{"error": "..."}`` (the Open Inference
  Protocol's error object has the same shape).
* :class:`HostCheck`: on loopback only the Host headers 127.0.0.1, localhost and ::1 are answered
  (400 otherwise): a page of another site that rebinds its DNS name to 127.0.0.1 reaches the server
  with its own name as the Host.
* :class:`SameOrigin`: a request that changes state (any method but GET, HEAD and OPTIONS) whose
  ``Origin`` (else ``Referer``) is not this server's own is refused with 403: a page of another site
  can post a form to 127.0.0.1, and the browser sends the Host it posts to; a client without either
  header (curl, a script, an inference client) is no browser page and is answered.
* :func:`guards`: the two as Starlette middleware; :func:`declared_length`: a body's
  Content-Length, required and within a limit (411, 413), read before the body is.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from alexnet.errors import AlexNetError

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
    server (h11) holds a client to the length it declared."""
    length = headers.get("content-length")
    if length is None or not length.isdigit():
        raise HttpError(f"{what} needs a Content-Length", 411)
    if int(length) > limit + slack:
        raise HttpError(f"{what} of {int(length):,} bytes is over the limit of {limit:,}", 413)
    return int(length)


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
    """ASGI middleware: 403 for a state-changing request from another origin (:func:`cross_origin`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            why = cross_origin(Headers(scope=scope), scope.get("scheme", "http"))
            if why is not None:
                await error(why, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guards(hosts: tuple[str, ...] = ("*",)) -> list[Middleware]:
    """The middleware of a local server: the Host check (unless ``hosts`` holds ``*``: a server told
    to listen on another address answers any name) and the same-origin rule."""
    checks = [] if "*" in hosts else [Middleware(HostCheck, hosts=hosts)]
    return [*checks, Middleware(SameOrigin)]
