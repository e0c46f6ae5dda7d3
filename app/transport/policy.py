"""Whom a SockJS endpoint serves: the origin policy, cross-site navigations and the ids it accepts.

What this module guarantees:

* **Origin policy everywhere.** A request from a page of another origin is refused with 403 — ``/info``, the
  preflight, every session URL and the WebSocket upgrade (checked before upgrading) — unless the origin is the
  server's own or in the allow-list (``ALLOWED_ORIGINS``, ``app.auth.origins``). ``/info`` lists the origins
  actually allowed (the ``sockjs`` package claimed ``"*:*"``), and only the protocol suite may switch the policy
  off (``any_origin``).
* **No cross-site navigations.** Document navigations started by another site (``Sec-Fetch-Site`` cross-site or
  same-site with a navigating ``Sec-Fetch-Mode``/``-Dest``) are refused with 403 on every session URL; SockJS
  never makes one. Browsers that send no ``Sec-Fetch-*`` headers are let through (the README's Security section
  says what that leaves open).
* **Plain ids.** Server and session ids are 1–128 characters without ``.``, ``#``, ``%``, ``?``, ``/`` or control
  characters; anything else is a 404, never a 500.
* **Framing only by allowed pages.** The iframe page's ``frame-ancestors`` names this origin and the allowed ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from ..auth.origins import origin_allowed
from .responses import forwarded_proto, navigation_refused, origin_refused

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: What a server or session id may not contain: dots (the protocol's rule: no "../" or file-like names), "#", "%",
#: "?" and "/" (nothing a URL could mean differently once decoded), control characters. Spaces are allowed
#: (sockjs-protocol's ``test_anyValue`` uses them).
_BAD_ID_CHARACTER = re.compile(r"[.#%?/\x00-\x1f\x7f]")
_MAX_ID_LENGTH = 128
#: ``Sec-Fetch-Mode`` / ``Sec-Fetch-Dest`` values of a document navigation (a link, ``window.open``, a redirect,
#: a frame): what a page of another site can make a browser do with its SameSite=Lax cookie attached.
_NAVIGATION_MODES = frozenset({"navigate", "nested-navigate"})
_DOCUMENT_DESTINATIONS = frozenset({"document", "iframe", "frame", "embed", "object", "fencedframe"})


@dataclass(frozen=True)
class OriginPolicy:
    """Which pages may use the endpoint: the server's own origin, those in ``allowed``, or (suite only) any."""

    allowed: tuple[str, ...] = ()
    #: Accept every origin and report ``"*:*"``: only for running the protocol suite (it sends ``Origin: test``).
    any_origin: bool = False

    def allows(self, request: web.Request) -> bool:
        return self.any_origin or origin_allowed(request, self.allowed)

    def frame_ancestors(self) -> str:
        """Who may frame the iframe page (the iframe transports): this origin and the allowed ones, nobody else
        (clickjacking). As a CSP ``frame-ancestors`` it overrides a blanket ``X-Frame-Options: SAMEORIGIN``."""
        return "*" if self.any_origin else " ".join(["'self'", *self.allowed])

    def info_origins(self, request: web.Request) -> list[str]:
        """The ``origins`` of ``/info``, in sockjs' ``host:port`` form."""
        if self.any_origin:
            return ["*:*"]
        scheme = forwarded_proto(request) or request.scheme
        own = _host_port(f"{scheme}://{request.host}")
        listed = [_host_port(origin) for origin in self.allowed]
        return list(dict.fromkeys(origin for origin in [own, *listed] if origin))

    def refusal(self, request: web.Request) -> web.Response | None:
        """The 403 for a request of a page this endpoint does not serve, or a cross-site navigation; None if
        neither (every session URL and the WebSocket upgrade ask this before anything else)."""
        if not self.allows(request):
            return origin_refused()
        if cross_site_navigation(request):
            return navigation_refused()
        return None


def valid_id(value: str) -> bool:
    """A server or session id this endpoint accepts (anything else is a 404)."""
    return 0 < len(value) <= _MAX_ID_LENGTH and _BAD_ID_CHARACTER.search(value) is None


def cross_site_navigation(request: web.BaseRequest) -> bool:
    """The browser says this request is a document navigation started by a page of another site.

    SockJS never navigates across sites: the iframe transports' documents (``htmlfile``, the ``jsonp_send``
    form) are loaded by the iframe page, which is of this origin, so their requests are ``same-origin``;
    script, XHR, EventSource and WebSocket requests are not navigations. Browsers that send no ``Sec-Fetch-*``
    headers are let through (the README's Security section says what that leaves open).
    """
    headers = request.headers
    if headers.get("Sec-Fetch-Site", "").lower() not in ("cross-site", "same-site"):
        return False
    return (
        headers.get("Sec-Fetch-Mode", "").lower() in _NAVIGATION_MODES
        or headers.get("Sec-Fetch-Dest", "").lower() in _DOCUMENT_DESTINATIONS
    )


def _host_port(origin: str) -> str:
    parts = urlsplit(origin)
    if not parts.hostname:
        return ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    return f"{parts.hostname}:{port}"
