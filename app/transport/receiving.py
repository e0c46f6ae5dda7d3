"""The HTTP transports that carry a session's frames to the client: xhr polling, xhr_streaming, eventsource,
htmlfile and jsonp.

What this module guarantees (the queue's own rules are ``app.transport.session``'s):

* **One frame per poll, a limit per stream.** A polling request gets exactly one frame (sized with
  ``Content-Length``); a streaming one gets frames until it carried ``response_limit`` bytes, then ends so that
  the client opens the next one and the memory of the response is freed. HTTP/1.0 streams end with their
  connection (no chunking).
* **Written, then committed.** A frame is taken off the queue only after it was written; a client found gone before
  the write, or a write into a closed connection, interrupts the session (1002) and leaves the frame queued. A
  polling answer is delivered only when the next poll arrives.
* **One receiver at a time.** A second request for a session that has a live one gets ``c[2010,…]`` and changes
  nothing; one whose holder was aborted unnoticed ends the session and gets its close frame. A session that
  ended answers every request with its close frame until it expires.
* **Heart-beats** are written when nothing else was for the manager's ``heartbeat_delay``.
* **Escaped scripts.** htmlfile and JSONP frames are written with ``framing``'s script escaping (``</script>`` in a
  message cannot end the script), and their callbacks must match ``^[a-zA-Z0-9_.]+$``, else a plain-text error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiohttp import web

from . import framing
from .options import EndpointPart
from .receiver import peer_gone
from .responses import HTML, JAVASCRIPT, cors_headers, plain_error, session_headers
from .session import HEARTBEAT_FRAME, FrameKind, Session, SessionState


@dataclass(frozen=True)
class ReceivingTransport:
    """A transport that carries frames to the client (the request that polls or streams)."""

    name: str
    method: str
    content_type: str
    streaming: bool
    wrap: Callable[[str, str], bytes]
    prelude: Callable[[str], bytes] | None = None
    needs_callback: bool = False


RECEIVING: dict[str, ReceivingTransport] = {
    "xhr": ReceivingTransport("xhr-polling", "POST", JAVASCRIPT, False, lambda frame, _c: framing.xhr(frame)),
    "xhr_streaming": ReceivingTransport(
        "xhr-streaming",
        "POST",
        JAVASCRIPT,
        True,
        lambda frame, _c: framing.xhr(frame),
        lambda _c: framing.XHR_STREAMING_PRELUDE,
    ),
    "eventsource": ReceivingTransport(
        "eventsource",
        "GET",
        "text/event-stream",
        True,
        lambda frame, _c: framing.eventsource(frame),
        lambda _c: framing.EVENTSOURCE_PRELUDE,
    ),
    "htmlfile": ReceivingTransport(
        "htmlfile",
        "GET",
        HTML,
        True,
        lambda frame, callback: framing.htmlfile(frame),
        framing.htmlfile_prelude,
        needs_callback=True,
    ),
    "jsonp": ReceivingTransport(
        "jsonp-polling",
        "GET",
        JAVASCRIPT,
        False,
        lambda frame, callback: framing.jsonp(callback, frame),
        needs_callback=True,
    ),
}


class HttpReceiving(EndpointPart):
    """Serves the receiving session URLs of one endpoint (``SockJSEndpoint.session_url`` routes them here)."""

    async def receive(
        self, request: web.Request, kind: ReceivingTransport, session_id: str, owner: Hashable | None
    ) -> web.StreamResponse:
        """Answer a receiving request of ``owner`` for ``session_id`` (opening the session if ``owner`` has none)."""
        callback = ""
        if kind.needs_callback:
            callback = request.query.get("c", "")
            if not callback:
                return plain_error('"callback" parameter required', cors_headers(request))
            if not framing.CALLBACK.match(callback):
                return plain_error('invalid "callback" parameter', cors_headers(request))
        session = self.manager.get(session_id, owner)
        if session is None:
            session = self.manager.create(session_id, kind.name, owner=owner)
        headers = session_headers(request, kind.content_type, cookie_needed=self.options.cookie_needed)
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
        self, request: web.Request, session: Session, kind: ReceivingTransport, callback: str, out: _Output
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


def _close_text(session: Session) -> str:
    pending = session.next_frame()
    assert pending is not None and pending.kind is FrameKind.CLOSE
    return pending.text
