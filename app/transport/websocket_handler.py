"""The WebSocket transport's handler: ``/<server>/<session>/websocket`` (SockJS frames) and ``/websocket`` (raw).

The frames themselves are written by ``app.transport.websocket``'s receiver, from the event loop; this handler only
checks the upgrade and reads. What it guarantees:

* **Checked before upgrading.** Browsers send ``Origin`` on every WebSocket handshake and no CORS applies to it:
  the origin policy and the cross-site navigation check run before the upgrade, and a refused one is a 403, a
  non-GET a 405, a request that is not a valid upgrade a 400. Opening a session passes the pacer
  (``app.core.pacing``) when one is set, so a reconnect storm cannot stall the loop.
* **No task and no compressor per connection.** The session's frames are pushed by the manager's per-tick flush,
  and the response never negotiates permessage-deflate (a browser connection held a zlib compressor of ~90 KiB to
  shrink frames of a few hundred bytes). The handler is routed directly and keeps one coroutine frame: each frame
  between aiohttp and the receive loop is memory every idle session holds.
* **Nothing before the open frame.** The receiver is attached once the open frame is queued, so nothing the
  application queued while it opened the session is written before it.
* **Bad input ends the connection, never the server.** Empty messages are ignored (sockjs-protocol); broken JSON
  drops the connection at once (interrupted, 1002); a batch over the message limit hands on nothing and closes
  with 1009 and the reason. A message over ``max_websocket_message`` is refused by aiohttp.
* **The session ends with its connection.** A WebSocket session cannot be resumed: it is released before any await
  in the clean-up, and the application hears of the end before the handler returns (mail sent from then on finds
  the user gone, not a dead socket); what was queued and not written is the application's
  (``take_undelivered``).
"""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from . import framing
from .framing import BadPayload, TooManyMessages
from .options import EndpointPart
from .policy import valid_id
from .responses import TEXT, method_not_allowed
from .websocket import WebSocketReceiver


class WebSocketTransport(EndpointPart):
    """Serves the WebSocket URLs of one endpoint (``SockJSEndpoint.add_routes`` routes them to ``handle``)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``/<server>/<session>/websocket`` (SockJS frames) and ``/websocket`` (raw: one WebSocket message per
        SockJS message, no frames; aiohttp's pings keep it alive).

        One handler for both, routed directly rather than through ``SockJSEndpoint.session_url``: it stays
        suspended for the whole life of the connection, and each coroutine frame between aiohttp and the receive
        loop is memory every idle session holds.
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
            return method_not_allowed("GET")
        # Browsers send Origin on every WebSocket handshake and no CORS applies to it: this check is the only one.
        refusal = self.options.origins.refusal(request)
        if refusal is not None:
            return refusal
        # No permessage-deflate: WebSocketReceiver writes the frames itself, and a browser connection (browsers always
        # offer it) held a zlib compressor of ~90 KiB to shrink frames of a few hundred bytes.
        ws = web.WebSocketResponse(
            max_msg_size=self.options.max_websocket_message, heartbeat=heartbeat, compress=False
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, body=b"Not a valid websocket request", headers={"Content-Type": TEXT})
        writer = await ws.prepare(request)
        return ws, writer
