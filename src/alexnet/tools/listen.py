"""The socket every local server of this package listens on (``alexnet explore``, ``alexnet serve``,
``alexnet train --explore``), with no web framework imported: a port in use is one line before
anything is loaded, the address is printed one way, and a server reachable from other machines says
so. What the servers then answer the same way is :mod:`alexnet.tools.web`.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from alexnet.errors import AlexNetError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")  # the Host headers a loopback server answers


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket (so a port in use is a one-line error before anything is loaded)."""
    if not 0 <= port <= 65535:
        raise AlexNetError(f"--port {port}: a port is 0–65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AlexNetError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port or --host") from None
    sock.listen(128)
    return sock


def url(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket as a browser takes it (0.0.0.0 shown as 127.0.0.1)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host == "0.0.0.0" else host)
    return f"http://{shown}:{port}"


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host headers a server listening on ``host`` answers: the loopback names, or any."""
    return LOOPBACK_HOSTS if is_loopback(host) else ("*",)


def warn_if_public(prog: str, host: str, what: str) -> None:
    """Say on stderr that a server on ``host`` is open to anyone who can reach the machine (``what``: what they can do)."""
    if not is_loopback(host):
        print(f"{prog}: warning: listening on {host}: anyone who can reach this machine can {what} "
              f"(the default, 127.0.0.1, is this machine only)", file=sys.stderr)
