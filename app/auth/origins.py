"""Origin policy: which web pages may act with a signed-in user's cookie.

A browser sends the session cookie with cross-site requests too (SameSite=Lax still allows top-level POST
navigations in some browsers, and every WebSocket upgrade), so every state-changing request and every SockJS
connection is checked here: the ``Origin`` header (or, failing that, ``Referer``) must be this server's own origin
or one listed in ``ALLOWED_ORIGINS``. Requests without either header are not from a browser page and pass (curl,
server-to-server); they carry no ambient browser cookie a third party could abuse.

Origins are compared in one canonical form (``canonical_origin``): lower case, no trailing slash, and no port when
it is the scheme's default — browsers send ``https://chat.example.com``, never ``…:443``, so a configured
``https://chat.example.com:443`` must mean the same origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from aiohttp import web

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def canonical_origin(origin: str) -> str:
    """``HTTPS://Chat.Example.com:443/`` → ``https://chat.example.com``."""
    origin = origin.strip().rstrip("/").lower()
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return origin
    host, colon, port = rest.rpartition(":")
    if colon and not host.endswith("]") and "]" in rest:
        return origin  # an IPv6 literal without a port: its colons are not a port separator
    if colon and port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return origin


def request_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return canonical_origin(origin)
    if origin == "null":
        return "null"
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return canonical_origin(f"{parts.scheme}://{parts.netloc}")
    return None


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    origin = request_origin(request)
    if origin is None:
        return True
    if origin in allowed:
        return True
    # Same origin: the page was served by this host (the scheme may differ behind a TLS-terminating balancer).
    parts = urlsplit(origin)
    host = request.host.lower()
    return bool(parts.netloc) and parts.netloc in (host, canonical_origin(f"{parts.scheme}://{host}").split("://")[1])
