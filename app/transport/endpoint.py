"""The SockJS endpoint: every URL of the protocol, routed to the module that serves it.

Routes under the prefix (``/chat-websocket`` for Warren)::

    GET        /                          greeting
    GET|OPTIONS /info                     capabilities, entropy, allowed origins
    GET        /iframe[-version].html     the page iframe transports run in (``app.transport.iframe``), with
               /iframe-loader.js          its loader and the sockjs-client releases it loads
               /sockjs-client-<v>.min.js
    GET        /websocket                 raw WebSocket (no SockJS framing; command-line clients)
    *          /<server>/<session>/<t>    t = websocket, xhr, xhr_send, xhr_streaming, eventsource, htmlfile,
                                          jsonp, jsonp_send

Who serves what, and what each adds to, or fixes in, the ``sockjs`` package's routes (``sockjs/route.py``,
``transports/``):

* this module — routing, ``/info`` and the CORS preflight. A session URL's server and session ids are checked
  (else 404), then its method (405 with ``Allow``), then the origin policy and cross-site navigations (403), and
  only then is the requester identified and the session looked up under that owner (``app.transport.manager``:
  anyone but the session's owner meets what an unused id gives). Preflight ``OPTIONS`` is answered for ``/info``,
  ``xhr``, ``xhr_send`` and ``xhr_streaming`` (the package never routed ``OPTIONS``), cached for a year; same-origin
  requests need none of it and get none. Opening a session (the first poll) passes the pacer when one is set.
* ``app.transport.policy`` — the origin allow-list everywhere (``/info`` lists the origins actually allowed, where
  the package claimed ``"*:*"``), cross-site navigations, valid ids.
* ``app.transport.responses`` — CORS headers, ``JSESSIONID`` (``cookie_needed``) with SameSite/Secure, the
  protocol's refusals.
* ``app.transport.receiving`` — xhr, xhr_streaming, eventsource, htmlfile, jsonp: frames committed only once
  written, escaped scripts, validated callbacks.
* ``app.transport.sending`` — xhr_send, jsonp_send: strict JSON input, shielded hand-over.
* ``app.transport.websocket_handler`` — the upgrade (checked before upgrading, no permessage-deflate) and the read
  loop; ``app.transport.websocket`` writes the frames.
* ``app.transport.iframe`` — the iframe page runs the sockjs-client release of the page that framed it, from this
  server, and answers 304 only when ``If-None-Match`` names its ETag.

The official sockjs-protocol suite passes against this endpoint except ``Websocket.test_haproxy``, which exercises
hixie-76, a 2010 WebSocket draft no browser speaks and aiohttp does not implement (``python -m app.conformance``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from . import framing
from .iframe import add_iframe_routes
from .manager import SessionManager
from .options import EndpointOptions
from .policy import OriginPolicy, valid_id
from .receiving import RECEIVING, HttpReceiving
from .responses import TEXT, cors_headers, method_not_allowed, origin_refused
from .sending import SENDING, HttpSending
from .websocket_handler import WebSocketTransport

__all__ = ["EndpointOptions", "OriginPolicy", "SockJSEndpoint"]

#: Session URLs that answer a CORS preflight (the XHR ones; the others are not fetched with custom requests).
_PREFLIGHT = frozenset({"xhr", "xhr_send", "xhr_streaming"})


class SockJSEndpoint:
    """Serves one SockJS endpoint for ``manager``; ``add_routes`` mounts it under a prefix."""

    def __init__(self, manager: SessionManager[Any], options: EndpointOptions) -> None:
        self.manager = manager
        self.options = options
        self.receiving = HttpReceiving(manager, options)
        self.sending = HttpSending(manager, options)
        self.websocket = WebSocketTransport(manager, options)

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        prefix = prefix.rstrip("/")
        router.add_route("GET", prefix, self.greeting)
        router.add_route("GET", prefix + "/", self.greeting)
        router.add_route("*", prefix + "/info", self.info)
        add_iframe_routes(router, prefix, self.options.sockjs_clients, self.options.origins.frame_ancestors())
        if self.options.websocket:
            # Straight to the WebSocket handler, not through session_url (see WebSocketTransport.handle).
            router.add_route("*", prefix + "/websocket", self.websocket.handle)
            router.add_route("*", prefix + "/{server}/{session}/websocket", self.websocket.handle)
        router.add_route("*", prefix + "/{server}/{session}/{transport}", self.session_url)

    # -- static URLs ---------------------------------------------------------------------------------------------

    async def greeting(self, _request: web.Request) -> web.Response:
        return web.Response(body=b"Welcome to SockJS!\n", headers={"Content-Type": TEXT})

    async def info(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return self._preflight(request, "OPTIONS, GET")
        if request.method != "GET":
            return method_not_allowed("GET, OPTIONS")
        if not self.options.origins.allows(request):
            return origin_refused()
        body = {
            "websocket": self.options.websocket,
            "cookie_needed": self.options.cookie_needed,
            "origins": self.options.origins.info_origins(request),
            # Browsers had poor random sources; the client seeds session ids with this.
            "entropy": secrets.randbits(32),
        }
        headers = {"Content-Type": "application/json;charset=UTF-8", "Cache-Control": framing.NO_CACHE}
        headers.update(cors_headers(request))
        return web.Response(body=json.dumps(body).encode(), headers=headers)

    # -- session URLs ----------------------------------------------------------------------------------------------

    async def session_url(self, request: web.Request) -> web.StreamResponse:
        server, session_id = request.match_info["server"], request.match_info["session"]
        transport = request.match_info["transport"]
        if not (valid_id(server) and valid_id(session_id)):
            raise web.HTTPNotFound()
        receiving = RECEIVING.get(transport)
        method = receiving.method if receiving is not None else SENDING.get(transport)
        if method is None:
            raise web.HTTPNotFound()
        if request.method == "OPTIONS" and transport in _PREFLIGHT:
            return self._preflight(request, "OPTIONS, POST")
        if request.method != method:
            return method_not_allowed(method + (", OPTIONS" if transport in _PREFLIGHT else ""))
        refusal = self.options.origins.refusal(request)
        if refusal is not None:
            return refusal
        # The session is looked up under the requester's own sign-in: another sign-in's session of the same id
        # is invisible here (a receiving request opens a session of its own, a send is a 404), and never touched.
        owner = await self.manager.identify(request)
        pacer = self.options.pacer
        if pacer is not None and self.manager.get(session_id, owner) is None:
            # Opening a session (the first poll) is set-up work (app.core.pacing); the WebSocket route paces its own.
            await pacer.turn()
        if receiving is not None:
            return await self.receiving.receive(request, receiving, session_id, owner)
        return await self.sending.send(request, transport, session_id, owner)

    def _preflight(self, request: web.Request, methods: str) -> web.Response:
        if not self.options.origins.allows(request):
            return origin_refused()
        headers = {
            **framing.cache_for_a_year(),
            "Access-Control-Max-Age": str(framing.ONE_YEAR),
            "Access-Control-Allow-Methods": methods,
            **cors_headers(request),
        }
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        return web.Response(status=204, headers=headers)
