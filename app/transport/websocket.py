"""WebSocket receivers: a session's frames written to its WebSocket from the event loop, without a task.

A WebSocket session used to have a writer task that waited for frames (an event, a timeout for the heart-beat)
and wrote each through aiohttp's ``send_str``. Now nothing waits: queuing a frame marks the session, and the
manager's one flush per loop tick calls ``WebSocketReceiver.flush``, which writes the WebSocket frames straight to
the connection's transport. What it guarantees:

* **In order, committed only once written.** Frames are taken with ``Session.next_frame`` and committed after
  ``transport.write`` took them, one after another, so the order of the queue is the order on the wire. A
  connection found closing gets nothing: the session is interrupted and its frames stay queued, for the
  application's ``take_undelivered``.
* **One write per session per tick** in the usual case: everything queued in a tick is one SockJS ``a[...]`` frame
  (as it was with the writer task, which took the whole queue each time).
* **Flow control.** A transport above its high-water mark has paused its protocol (``writing_paused``): the flush
  writes nothing, the frames stay queued (counted by ``queued_bytes``, which is what the STOMP layer bounds with
  ``SEND_BUFFER_BYTES``), and the manager flushes again when ``drained`` returns — a task exists only while a
  connection is held like that.
* **The close frame is the last thing written**; then the WebSocket is closed (a task: the closing handshake
  awaits), and the handler's receive loop ends.

The frames are written by hand because they are simple for a server — unmasked, FIN set, opcode 1 (text), a 7-,
16- or 64-bit length — and because aiohttp's ``send_str`` is a coroutine: awaiting it per frame is what the writer
task was for. That is only correct without permessage-deflate, so these responses never negotiate it
(``WebSocketResponse(compress=False)``, checked by ``WebSocketReceiver``).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from . import framing
from .manager import SessionManager
from .receiver import PushReceiver
from .session import FrameKind, Session

#: FIN + opcode 0x1 (text): a whole text message in one frame.
_FIN_TEXT = 0x81
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
#: Payloads from this size on are handed to the transport beside their header (``writelines``: one system call on
#: uvloop) instead of being copied behind it.
_SEPARATE_WRITE = 16 * 1024


def text_frame(payload: bytes) -> bytes:
    """The header of an unmasked, unfragmented server text frame carrying ``payload``, and the payload."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(_FIN_TEXT, length) + payload
    if length < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, length) + payload
    return _LONG.pack(_FIN_TEXT, 127, length) + payload


def text_frame_header(length: int) -> bytes:
    if length < 126:
        return _SHORT.pack(_FIN_TEXT, length)
    if length < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, length)
    return _LONG.pack(_FIN_TEXT, 127, length)


HEARTBEAT = text_frame(framing.HEARTBEAT.encode())


class WebSocketReceiver(PushReceiver):
    """A WebSocket carrying a session: SockJS frames (``framed``), or one WebSocket message per SockJS message
    (the raw ``/websocket`` endpoint: no open, heart-beat or close frames; the close is the WebSocket's own)."""

    __slots__ = ("closing", "framed", "writer", "ws")

    def __init__(
        self,
        request: web.BaseRequest,
        manager: SessionManager[Any],
        ws: web.WebSocketResponse,
        writer: AbstractStreamWriter,
        *,
        framed: bool,
    ) -> None:
        # Frames are written by hand (see the module docstring): only right without compression.
        if ws.compress:
            raise ValueError("a WebSocketReceiver needs a WebSocketResponse without compression")
        super().__init__(request, manager)
        self.ws = ws
        #: The response's payload writer: what ``drained`` waits on.
        self.writer = writer
        self.framed = framed
        #: The close frame was written: nothing more is.
        self.closing = False

    def flush(self, session: Session) -> bool:
        if self.closing:
            return True
        request = self.request
        transport = request.transport
        if transport is None or transport.is_closing():
            # The client went away: what is queued stays queued (undelivered), the session ends with 1002.
            self.manager.interrupt(session)
            return True
        if request.protocol.writing_paused:
            return False
        manager = self.manager
        wrote = False
        while (pending := session.next_frame()) is not None:
            wrote = True
            if self.framed:
                data = pending.text.encode()
                if len(data) >= _SEPARATE_WRITE:
                    transport.writelines((text_frame_header(len(data)), data))
                else:
                    transport.write(text_frame(data))
            elif pending.kind is FrameKind.MESSAGES:
                transport.write(b"".join(text_frame(text.encode()) for text in session.peek_messages(pending.count)))
            manager.written(session, pending)
            if pending.kind is FrameKind.CLOSE:
                self.closing = True
                self._close(session)
                break
        if wrote:
            self.last_write = time.monotonic()
        return True

    def heartbeat(self, session: Session) -> None:
        if not self.framed or self.closing:
            return  # the raw endpoint has aiohttp's pings instead
        request = self.request
        transport = request.transport
        if transport is None or transport.is_closing() or request.protocol.writing_paused:
            return
        transport.write(HEARTBEAT)
        self.last_write = time.monotonic()

    async def drained(self) -> None:
        await self.writer.drain()

    def _close(self, session: Session) -> None:
        """After the close frame: close the WebSocket (its handshake needs a task; the handler's receive loop then
        ends). A raw WebSocket carries the session's close code and reason in its own close frame."""
        if self.framed:
            self.manager.spawn(self.ws.close())
        else:
            code, reason = session.close_reason
            self.manager.spawn(self.ws.close(code=code, message=reason.encode()))
