"""Origin policy: which web pages may act with a signed-in user's cookie.

A browser sends the session cookie with cross-site requests too (SameSite=Lax still allows top-level POST
navigations in some browsers, and every WebSocket upgrade), so every state-changing request and every SockJS
connection is checked here: the ``Origin`` header (or, failing that, ``Referer``) must be this server's own origin
or one listed in ``ALLOWED_ORIGINS``. Requests without either header are not from a browser page and pass (curl,
server-to-server); they carry no ambient browser cookie a third party could abuse.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web


def request_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return origin.rstrip("/").lower()
    if origin == "null":
        return "null"
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}".lower()
    return None


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    origin = request_origin(request)
    if origin is None:
        return True
    if origin in allowed:
        return True
    # Same origin: the page was served by this host (the scheme may differ behind a TLS-terminating balancer).
    netloc = urlsplit(origin).netloc
    return bool(netloc) and netloc == request.host.lower()
