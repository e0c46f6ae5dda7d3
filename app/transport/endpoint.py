"""The SockJS endpoint: every URL of the protocol, the HTTP and WebSocket transports, CORS and the origin policy.

Routes under the prefix (``/chat-websocket`` for Warren)::

    GET        /                          greeting
    GET|OPTIONS /info                     capabilities, entropy, allowed origins
    GET        /iframe[-version].html     the page iframe transports run in (``app.transport.iframe``), with
               /iframe-loader.js          its loader and the sockjs-client releases it loads
               /sockjs-client-<v>.min.js
    GET        /websocket                 raw WebSocket (no SockJS framing; command-line clients)
    *          /<server>/<session>/<t>    t = websocket, xhr, xhr_send, xhr_streaming, eventsource, htmlfile,
                                          jsonp, jsonp_send

What this adds to, or fixes in, the ``sockjs`` package's routes (``sockjs/route.py``, ``transports/``):

* **Origin policy everywhere.** A request from a page of another origin is refused with 403 — ``/info``, the
  preflight, every session URL and the WebSocket upgrade (checked before upgrading) — unless the origin is the
  server's own or in the allow-list (``ALLOWED_ORIGINS``, ``app.auth.origins``). The package checked nothing and
  ``/info`` claimed ``"*:*"``; ``/info`` now lists the origins actually allowed.
* **Sessions have owners.** Every session URL is looked up under the requester (``SessionManager.identify``): a
  request of anyone but the session's owner answers as for an unused id (``app.transport.manager``). Document
  navigations started by another site (``Sec-Fetch-Site`` cross-site or same-site with a navigating
  ``Sec-Fetch-Mode``/``-Dest``) are refused with 403 on every session URL; SockJS never makes one. Server and
  session ids are 1–128 characters without ``.``, ``#``, ``%``, ``?``, ``/`` or control characters, else 404.
* **CORS.** Allowed cross-origin requests get ``Access-Control-Allow-Origin: <origin>`` with credentials, and
  preflight ``OPTIONS`` is answered for ``/info``, ``xhr``, ``xhr_send`` and ``xhr_streaming`` (the package
  never routed ``OPTIONS``). Same-origin requests need none of it and get none.
* **``JSESSIONID``** (``cookie_needed``) is set on session URLs only, for load balancers that stick on it:
  ``HttpOnly``, ``SameSite=None; Secure`` when the request came over HTTPS (directly or per
  ``X-Forwarded-Proto``) so that allowed cross-site pages keep their affinity, otherwise ``SameSite=Lax``
  (browsers drop ``SameSite=None`` cookies that are not ``Secure``). It carries no authority.
* **Strict input.** ``xhr_send`` and ``jsonp_send`` take a JSON array of strings and nothing else (the package
  turned a bare string into one message per character): an empty body is ``500 Payload expected.``, anything
  else ``500 Broken JSON encoding.``. JSONP/htmlfile callbacks must match ``^[a-zA-Z0-9_.]+$``.
* **Escaped scripts.** htmlfile and JSONP frames are written with ``framing.script_string`` (``</script>`` in a
  message cannot end the script).
* **The iframe page** runs the sockjs-client release of the page that framed it, from this server
  (``app.transport.iframe``: sockjs-client refuses an iframe of another version), and answers 304 only when
  ``If-None-Match`` names its ETag.
* **WebSocket sessions cost no task of their own.** Their frames are pushed by the manager's per-tick flush
  (``app.transport.websocket``), without permessage-deflate; the handler only reads.
* **Sends survive an aborted request.** The messages of an ``xhr_send`` are handed to the application in a
  shielded task: a client that gives up on the request cannot cut a STOMP frame's handling in half.

The official sockjs-protocol suite passes against this module except ``Websocket.test_haproxy``, which exercises
hixie-76, a 2010 WebSocket draft no browser speaks and aiohttp does not implement (``python -m app.conformance``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from ..auth.origins import origin_allowed
from ..core.pacing import Pacer
from . import framing
from .framing import BadPayload, TooManyMessages
from .iframe import SockJSClients, add_iframe_routes
from .manager import SessionManager
from .receiver import peer_gone
from .session import HEARTBEAT_FRAME, FrameKind, Session, SessionState
from .websocket import WebSocketReceiver

log = logging.getLogger(__name__)

_JS = "application/javascript;charset=UTF-8"
_TEXT = "text/plain;charset=UTF-8"
_HTML = "text/html;charset=UTF-8"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
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
        scheme = _forwarded_proto(request) or request.scheme
        own = _host_port(f"{scheme}://{request.host}")
        listed = [_host_port(origin) for origin in self.allowed]
        return list(dict.fromkeys(origin for origin in [own, *listed] if origin))


@dataclass(frozen=True)
class EndpointOptions:
    #: The sockjs-client releases the iframe page runs, each for the pages of that release.
    sockjs_clients: SockJSClients
    origins: OriginPolicy = OriginPolicy()
    #: Report ``cookie_needed`` and set ``JSESSIONID`` (sticky load balancers).
    cookie_needed: bool = True
    websocket: bool = True
    #: Bytes a streaming response carries before it ends and the client opens the next one (frees memory).
    response_limit: int = 128 * 1024
    #: The largest WebSocket message accepted from a client.
    max_websocket_message: int = 4 * 1024 * 1024
    #: Opening a session (a WebSocket upgrade, the first poll) passes this gate when set (``app.core.pacing``).
    pacer: Pacer | None = None
    #: The status of a refused send body (broken JSON, not an array of strings): 400 on Warren (a client error,
    #: never a server error); the SockJS protocol suite expects its 500 (``app.conformance``).
    bad_payload_status: int = 400


@dataclass(frozen=True)
class _Receiving:
    """A transport that carries frames to the client (the request that polls or streams)."""

    name: str
    method: str
    content_type: str
    streaming: bool
    wrap: Callable[[str, str], bytes]
    prelude: Callable[[str], bytes] | None = None
    needs_callback: bool = False


_RECEIVING: dict[str, _Receiving] = {
    "xhr": _Receiving("xhr-polling", "POST", _JS, False, lambda frame, _c: framing.xhr(frame)),
    "xhr_streaming": _Receiving(
        "xhr-streaming",
        "POST",
        _JS,
        True,
        lambda frame, _c: framing.xhr(frame),
        lambda _c: framing.XHR_STREAMING_PRELUDE,
    ),
    "eventsource": _Receiving(
        "eventsource",
        "GET",
        "text/event-stream",
        True,
        lambda frame, _c: framing.eventsource(frame),
        lambda _c: framing.EVENTSOURCE_PRELUDE,
    ),
    "htmlfile": _Receiving(
        "htmlfile",
        "GET",
        _HTML,
        True,
        lambda frame, callback: framing.htmlfile(frame),
        framing.htmlfile_prelude,
        needs_callback=True,
    ),
    "jsonp": _Receiving(
        "jsonp-polling", "GET", _JS, False, lambda frame, callback: framing.jsonp(callback, frame), needs_callback=True
    ),
}
#: Transports that take messages from the client.
_SENDING = {"xhr_send": "POST", "jsonp_send": "POST"}
#: Session URLs that answer a CORS preflight (the XHR ones; the others are not fetched with custom requests).
_PREFLIGHT = frozenset({"xhr", "xhr_send", "xhr_streaming"})


def parse_messages(data: bytes | str) -> list[str]:
    """A SockJS send payload: a JSON array of strings. Raises ``BadPayload`` with the protocol's message."""
    return framing.decode_batch(data)


class SockJSEndpoint:
    """Serves one SockJS endpoint for ``manager``; ``add_routes`` mounts it under a prefix."""

    def __init__(self, manager: SessionManager[Any], options: EndpointOptions) -> None:
        self.manager = manager
        self.options = options

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        prefix = prefix.rstrip("/")
        router.add_route("GET", prefix, self.greeting)
        router.add_route("GET", prefix + "/", self.greeting)
        router.add_route("*", prefix + "/info", self.info)
        add_iframe_routes(router, prefix, self.options.sockjs_clients, self.options.origins.frame_ancestors())
        if self.options.websocket:
            router.add_route("*", prefix + "/websocket", self.websocket)
            router.add_route("*", prefix + "/{server}/{session}/websocket", self.websocket)
        router.add_route("*", prefix + "/{server}/{session}/{transport}", self.session_url)

    # -- static URLs ---------------------------------------------------------------------------------------------

    async def greeting(self, _request: web.Request) -> web.Response:
        return web.Response(body=b"Welcome to SockJS!\n", headers={"Content-Type": _TEXT})

    async def info(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return self._preflight(request, "OPTIONS, GET")
        if request.method != "GET":
            return _method_not_allowed("GET, OPTIONS")
        if not self.options.origins.allows(request):
            return _forbidden()
        body = {
            "websocket": self.options.websocket,
            "cookie_needed": self.options.cookie_needed,
            "origins": self.options.origins.info_origins(request),
            # Browsers had poor random sources; the client seeds session ids with this.
            "entropy": secrets.randbits(32),
        }
        headers = {"Content-Type": "application/json;charset=UTF-8", "Cache-Control": framing.NO_CACHE}
        headers.update(self._cors(request))
        return web.Response(body=json.dumps(body).encode(), headers=headers)

    # -- session URLs ----------------------------------------------------------------------------------------------

    async def session_url(self, request: web.Request) -> web.StreamResponse:
        server, session_id = request.match_info["server"], request.match_info["session"]
        transport = request.match_info["transport"]
        if not (valid_id(server) and valid_id(session_id)):
            raise web.HTTPNotFound()
        receiving = _RECEIVING.get(transport)
        method = receiving.method if receiving is not None else _SENDING.get(transport)
        if method is None:
            raise web.HTTPNotFound()
        if request.method == "OPTIONS" and transport in _PREFLIGHT:
            return self._preflight(request, "OPTIONS, POST")
        if request.method != method:
            return _method_not_allowed(method + (", OPTIONS" if transport in _PREFLIGHT else ""))
        if not self.options.origins.allows(request):
            return _forbidden()
        if cross_site_navigation(request):
            return _navigation_refused()
        # The session is looked up under the requester's own sign-in: another sign-in's session of the same id
        # is invisible here (a receiving request opens a session of its own, a send is a 404), and never touched.
        owner = await self.manager.identify(request)
        pacer = self.options.pacer
        if pacer is not None and self.manager.get(session_id, owner) is None:
            # Opening a session (the first poll) is set-up work (app.core.pacing); the WebSocket route paces its own.
            await pacer.turn()
        if receiving is not None:
            return await self._receive(request, receiving, session_id, owner)
        return await self._send(request, transport, session_id, owner)

    async def _send(
        self, request: web.Request, transport: str, session_id: str, owner: Hashable | None
    ) -> web.Response:
        session = self.manager.get(session_id, owner)
        if session is None:
            raise web.HTTPNotFound()
        body = await request.read()
        try:
            if transport == "jsonp_send" and request.content_type == "application/x-www-form-urlencoded":
                body = await framing.form_field(body, "d")
            messages = parse_messages(body)
        except TooManyMessages as exc:
            return _server_error(str(exc), self._cors(request), status=413)
        except BadPayload as exc:
            return _server_error(str(exc), self._cors(request), status=self.options.bad_payload_status)
        # Shielded: if the client aborts this request, its messages are still handled whole and in order.
        await asyncio.shield(self.manager.receive(session, messages))
        headers = {"Content-Type": _TEXT, "Cache-Control": framing.NO_CACHE, **self._cors(request)}
        headers.update(self._cookie(request))
        if transport == "jsonp_send":
            # Some old browsers mishandle 204 on a form post; the protocol answers "ok".
            return web.Response(body=b"ok", headers=headers)
        return web.Response(status=204, headers=headers)

    async def _receive(
        self, request: web.Request, kind: _Receiving, session_id: str, owner: Hashable | None
    ) -> web.StreamResponse:
        callback = ""
        if kind.needs_callback:
            callback = request.query.get("c", "")
            if not callback:
                return _server_error('"callback" parameter required', self._cors(request))
            if not framing.CALLBACK.match(callback):
                return _server_error('invalid "callback" parameter', self._cors(request))
        session = self.manager.get(session_id, owner)
        if session is None:
            session = self.manager.create(session_id, kind.name, owner=owner)
        headers = {"Content-Type": kind.content_type, "Cache-Control": framing.NO_CACHE, **self._cors(request)}
        headers.update(self._cookie(request))
        response = web.StreamResponse(headers=headers)
        if kind.streaming and request.version < (1, 1):
            # HTTP/1.0 has no chunking: the end of a stream is the end of the connection, whatever the client
            # asked for with "Connection: Keep-Alive".
            response.force_close()
        out = _Output(request, response, kind.streaming)
        try:
            if kind.prelude is not None:
                await out.write(kind.prelude(callback))
            await self._carry(request, session, kind, callback, out)
        except ConnectionError:
            pass  # the client went away while we wrote; _carry has ended the session if it was carrying it
        await out.finish()
        return out.response

    async def _carry(
        self, request: web.Request, session: Session, kind: _Receiving, callback: str, out: _Output
    ) -> None:
        """Write the session's frames to this request: one frame when polling, until a limit when streaming."""
        manager = self.manager
        if session.state is SessionState.CLOSED:
            # Ended: every request gets the close frame until the session expires (sockjs-protocol).
            await out.write(kind.wrap(_close_text(session), callback))
            return
        receiver = manager.attach(session, request)
        if receiver is None:
            if manager.receiver_gone(session):
                # The request holding the session was aborted and nobody noticed yet: that ends the session.
                manager.interrupt(session)
                await out.write(kind.wrap(_close_text(session), callback))
            else:
                await out.write(kind.wrap(framing.close_frame(2010, "Another connection still open"), callback))
            return
        try:
            await manager.open(session, request)
            sent = 0
            while session.is_receiver(receiver):
                pending = session.next_frame()
                if pending is None:
                    if await session.wait_for_frames(manager.heartbeat_delay):
                        continue
                    pending = HEARTBEAT_FRAME
                if peer_gone(request):
                    manager.interrupt(session)
                    return
                data = kind.wrap(pending.text, callback)
                await out.write(data)
                manager.written(session, pending, await_next_poll=not kind.streaming)
                sent += len(data)
                if pending.kind is FrameKind.CLOSE or not kind.streaming or sent >= self.options.response_limit:
                    return
        except ConnectionError:
            # Written into a connection the client had closed: nothing was committed, the frame is still queued.
            if session.is_receiver(receiver):
                manager.interrupt(session)
            raise
        except asyncio.CancelledError:
            # Only with aiohttp's handler_cancellation on: the client went away while we waited or wrote.
            if session.is_receiver(receiver):
                manager.interrupt(session)
            raise
        finally:
            manager.detach(session, receiver)

    # -- WebSocket ---------------------------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``/<server>/<session>/websocket`` (SockJS frames) and ``/websocket`` (raw: one WebSocket message per
        SockJS message, no frames; aiohttp's pings keep it alive).

        One handler for both, routed directly rather than through ``session_url``: it stays suspended for the whole
        life of the connection, and each coroutine frame between aiohttp and the receive loop is memory every idle
        session holds.
        """
        framed = "session" in request.match_info
        manager = self.manager
        if framed:
            session_id = request.match_info["session"]
            if not (valid_id(request.match_info["server"]) and valid_id(session_id)):
                raise web.HTTPNotFound()
            if self.options.pacer is not None:
                # Opening a session is set-up work (app.core.pacing): a reconnect storm must not stall the loop.
                await self.options.pacer.turn()
        upgraded = await self._upgrade(request, heartbeat=None if framed else manager.heartbeat_delay)
        if isinstance(upgraded, web.Response):
            return upgraded
        ws, writer = upgraded
        # Read once: the session is the opener's for as long as its connection lasts (``identify``).
        owner = await manager.identify(request)
        if framed:
            session = manager.create_unique(session_id, "websocket", owner=owner)
        else:
            session = manager.create_unique(f"raw-{secrets.token_hex(6)}", "websocket-raw", owner=owner)
        receiver = WebSocketReceiver(request, manager, ws, writer, framed=framed)
        try:
            await manager.open(session, request)
            # Attached once the open frame is queued: nothing the application queued while it opened the session
            # may be written before that frame.
            manager.attach(session, request, receiver)
            while True:
                # ws.receive() rather than ``async for``: one coroutine frame less per idle connection.
                message = await ws.receive()
                if message.type is not WSMsgType.TEXT:
                    break
                if not message.data:
                    continue  # empty frames are ignored (sockjs-protocol)
                if framed:
                    try:
                        messages = framing.decode_batch(message.data, single_string=True)
                    except TooManyMessages as exc:
                        # Nothing of the batch is handed on; the client is told why, then the WebSocket closes.
                        session.close(1009, str(exc))
                        continue
                    except BadPayload:
                        # Broken JSON: the protocol says to drop the connection at once.
                        manager.interrupt(session)
                        break
                else:
                    messages = [message.data]
                await manager.receive(session, messages)
                # An idle connection keeps neither its last message nor its decoding while it waits for the next.
                del message, messages
        finally:
            # A WebSocket session cannot be resumed: it ends with its connection, and the application hears of it
            # before this handler returns (mail sent from now on finds the user gone, not a dead socket); what was
            # queued and not written is the application's (``take_undelivered``). The session is released before
            # any await here: with handler cancellation on, a closed connection can cancel this handler again
            # while it cleans up.
            ended = manager.release(session, receiver)
            if not ws.closed:
                await ws.close()
            await asyncio.shield(ended)
        return ws

    async def _upgrade(
        self, request: web.Request, *, heartbeat: float | None
    ) -> web.Response | tuple[web.WebSocketResponse, AbstractStreamWriter]:
        if request.method != "GET":
            return _method_not_allowed("GET")
        # Browsers send Origin on every WebSocket handshake and no CORS applies to it: this check is the only one.
        if not self.options.origins.allows(request):
            return _forbidden()
        if cross_site_navigation(request):
            return _navigation_refused()
        # No permessage-deflate: WebSocketReceiver writes the frames itself, and a browser connection (browsers always
        # offer it) held a zlib compressor of ~90 KiB to shrink frames of a few hundred bytes.
        ws = web.WebSocketResponse(
            max_msg_size=self.options.max_websocket_message, heartbeat=heartbeat, compress=False
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, body=b"Not a valid websocket request", headers={"Content-Type": _TEXT})
        writer = await ws.prepare(request)
        return ws, writer

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _preflight(self, request: web.Request, methods: str) -> web.Response:
        if not self.options.origins.allows(request):
            return _forbidden()
        headers = {
            **framing.cache_for_a_year(),
            "Access-Control-Max-Age": str(framing.ONE_YEAR),
            "Access-Control-Allow-Methods": methods,
            **self._cors(request),
        }
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        return web.Response(status=204, headers=headers)

    def _cors(self, request: web.BaseRequest) -> dict[str, str]:
        """CORS answer for an allowed request: echo its origin, with credentials (cookies must flow)."""
        origin = request.headers.get("Origin")
        if not origin:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}

    def _cookie(self, request: web.BaseRequest) -> dict[str, str]:
        if not self.options.cookie_needed:
            return {}
        value = request.cookies.get("JSESSIONID", "")
        if not _COOKIE_VALUE.match(value):
            # The protocol's placeholder: a balancer that sticks on JSESSIONID rewrites or prefixes it.
            value = "dummy"
        secure = request.secure or _forwarded_proto(request) == "https"
        same_site = "SameSite=None; Secure" if secure else "SameSite=Lax"
        return {"Set-Cookie": f"JSESSIONID={value}; Path=/; HttpOnly; {same_site}"}


class _Output:
    """A response written frame by frame; a polling response is sized and sent with its single frame."""

    def __init__(self, request: web.Request, response: web.StreamResponse, streaming: bool) -> None:
        self.request = request
        self.response = response
        self.streaming = streaming

    async def write(self, data: bytes) -> None:
        if not self.response.prepared:
            if not self.streaming:
                self.response.content_length = len(data)
            await self.response.prepare(self.request)
        await self.response.write(data)

    async def finish(self) -> None:
        if not self.response.prepared:
            return
        try:
            await self.response.write_eof()
        except ConnectionError:
            pass


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


def _close_text(session: Session) -> str:
    pending = session.next_frame()
    assert pending is not None and pending.kind is FrameKind.CLOSE
    return pending.text




def _forwarded_proto(request: web.BaseRequest) -> str:
    return request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()


def _host_port(origin: str) -> str:
    parts = urlsplit(origin)
    if not parts.hostname:
        return ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    return f"{parts.hostname}:{port}"


def _method_not_allowed(allow: str) -> web.Response:
    # No body and no content type (sockjs-protocol checks both).
    return web.Response(status=405, headers={"Allow": allow})


def _forbidden() -> web.Response:
    return web.Response(status=403, body=b"Origin not allowed", headers={"Content-Type": _TEXT})


def _navigation_refused() -> web.Response:
    return web.Response(status=403, body=b"Cross-site navigation refused", headers={"Content-Type": _TEXT})


def _server_error(text: str, cors: dict[str, str], *, status: int = 500) -> web.Response:
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": _TEXT, **cors})
