"""The plain HTTP answers and headers every SockJS URL shares.

What this module guarantees:

* **Refusals have the protocol's shape**: a 405 carries ``Allow`` and neither body nor content type
  (sockjs-protocol checks both); a 403 says in plain text whether the origin or a cross-site navigation was
  refused; a refused body or callback is a plain-text answer with the status the caller chose, never an HTML page.
* **CORS only where it is needed.** A request with an ``Origin`` (the endpoint has already checked it is allowed)
  gets that origin back with credentials and ``Vary: Origin``; same-origin requests without one get no CORS
  headers at all.
* **``JSESSIONID`` carries no authority.** It is echoed (or set to the protocol's ``dummy``) for load balancers
  that stick on it: ``HttpOnly``, ``SameSite=None; Secure`` when the request came over HTTPS (directly or per
  ``X-Forwarded-Proto``) so that allowed cross-site pages keep their affinity, otherwise ``SameSite=Lax``
  (browsers drop ``SameSite=None`` cookies that are not ``Secure``). A value that is not a plain token is never
  echoed into a header.
"""

from __future__ import annotations

import re

from aiohttp import web

from . import framing

JAVASCRIPT = "application/javascript;charset=UTF-8"
TEXT = "text/plain;charset=UTF-8"
HTML = "text/html;charset=UTF-8"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")


def forwarded_proto(request: web.BaseRequest) -> str:
    """The scheme a proxy in front says the client used (``X-Forwarded-Proto``), lower case; "" if none."""
    return request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()


def cors_headers(request: web.BaseRequest) -> dict[str, str]:
    """CORS answer for an allowed request: echo its origin, with credentials (cookies must flow)."""
    origin = request.headers.get("Origin")
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}


def jsessionid_cookie(request: web.BaseRequest, cookie_needed: bool) -> dict[str, str]:
    """The ``Set-Cookie`` of a session URL (none unless ``cookie_needed``)."""
    if not cookie_needed:
        return {}
    value = request.cookies.get("JSESSIONID", "")
    if not _COOKIE_VALUE.match(value):
        # The protocol's placeholder: a balancer that sticks on JSESSIONID rewrites or prefixes it.
        value = "dummy"
    secure = request.secure or forwarded_proto(request) == "https"
    same_site = "SameSite=None; Secure" if secure else "SameSite=Lax"
    return {"Set-Cookie": f"JSESSIONID={value}; Path=/; HttpOnly; {same_site}"}


def session_headers(request: web.BaseRequest, content_type: str, *, cookie_needed: bool) -> dict[str, str]:
    """The headers of every answer on a session URL: never cached, CORS, ``JSESSIONID``."""
    headers = {"Content-Type": content_type, "Cache-Control": framing.NO_CACHE, **cors_headers(request)}
    headers.update(jsessionid_cookie(request, cookie_needed))
    return headers


def method_not_allowed(allow: str) -> web.Response:
    # No body and no content type (sockjs-protocol checks both).
    return web.Response(status=405, headers={"Allow": allow})


def origin_refused() -> web.Response:
    return web.Response(status=403, body=b"Origin not allowed", headers={"Content-Type": TEXT})


def navigation_refused() -> web.Response:
    return web.Response(status=403, body=b"Cross-site navigation refused", headers={"Content-Type": TEXT})


def plain_error(text: str, cors: dict[str, str], *, status: int = 500) -> web.Response:
    """A refused request, said in plain text (``status``: the protocol's 500 unless the caller knows better)."""
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": TEXT, **cors})
