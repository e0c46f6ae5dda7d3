"""What one STOMP connection writes to its client: frames counted against the send bound, ERROR-and-close,
heart-beats, and the progress a mailbox drain waits for.

Guarantees:

* **Every frame counts toward the send bound.** ``_write`` refuses to queue anything once the client has more than
  ``SEND_BUFFER_BYTES`` unread (MESSAGE, RECEIPT, heart-beat alike): the connection then fails as a slow consumer
  (ERROR, close 4008). A client that sends receipted frames and never reads cannot grow the server's memory.
* **An ERROR is the last frame.** ``_fail`` marks the connection closed before it writes the ERROR (so that write
  is not counted as another failure), then closes the wire; nothing is written after it.
* **Heart-beats** follow the CONNECT negotiation: the server sends one when it has written nothing for the agreed
  interval, and fails the connection (close 4003) when the client has sent nothing for twice its interval
  (SockJS polling transports deliver in bursts). An idle connection holds one timer handle, nothing else.
* **Waiting on a client costs no task of its own**: the event a drain waits on is made by its first waiter and
  set by an ACK, a NACK or the close.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from ..core.envelope import Envelope
from .frames import Frame, FrameError, encode

log = logging.getLogger(__name__)

#: What the server offers: it can send a heart-beat every 10 s and wants one from the client every 10 s.
SERVER_HEARTBEAT_MS = (10_000, 10_000)


class CloseCode(enum.IntEnum):
    """SockJS close codes Warren uses (3000–4999 are the application's)."""

    NORMAL = 3000
    NOT_SIGNED_IN = 4001
    PROTOCOL_ERROR = 4002
    HEARTBEAT_TIMEOUT = 4003
    SLOW_CONSUMER = 4008
    REFUSED = 4009
    SHUTTING_DOWN = 4012


class Wire(Protocol):
    """How the connection reaches its client (the SockJS session)."""

    def send_text(self, text: str, envelope: Envelope | None = None) -> bool:
        """Queue ``text`` as one SockJS message; False if the session cannot take it.

        ``envelope``: the chat message the frame carries, to be handed back to the hub if the session ends before
        the client has it (``ack:auto`` MESSAGE frames only: client-ack ones are returned by the STOMP layer).
        """
        ...

    def queued_bytes(self) -> int: ...

    async def wait_flushed(self) -> None:
        """Return when everything queued so far was written to the client."""
        ...

    def close(self, code: int, reason: str) -> None: ...


class StompOutput:
    """The writing half of a STOMP connection (``app.stomp.protocol.StompConnection`` is the rest).

    ``_on_failed`` is called by ``_fail`` once the ERROR is written and the wire closed: the connection leaves the
    hub there.
    """

    __slots__ = (
        "_closed",
        "_last_received",
        "_last_sent",
        "_progress",
        "_receive_timeout",
        "_send_buffer_bytes",
        "_send_interval",
        "_timer",
        "_user",
        "transport",
        "version",
        "wire",
    )

    def __init__(self, user: str | None, wire: Wire, *, send_buffer_bytes: int, transport: str) -> None:
        self._user = user
        self.wire = wire
        self.transport = transport
        self.version: str | None = None
        self._send_buffer_bytes = send_buffer_bytes
        self._closed = False
        self._send_interval = 0.0
        self._receive_timeout = 0.0
        self._last_sent = time.monotonic()
        self._last_received = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        #: Set when an ACK arrives or the connection closes: what a drain waiting on this client waits for. Made
        #: by the first waiter (``_progress_event``).
        self._progress: asyncio.Event | None = None

    # -- frames out -----------------------------------------------------------------------------------------

    def _write(self, text: str, envelope: Envelope | None = None) -> bool:
        # Every frame counts toward the send bound, as push() counts MESSAGEs: a client that sends receipted frames
        # and never reads is a slow consumer too (issue #11). The ERROR of _fail is written after _closed is set.
        if not self._closed and self.wire.queued_bytes() > self._send_buffer_bytes:
            self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", "the client is not reading what it is sent")
            return False
        self._last_sent = time.monotonic()
        return self.wire.send_text(text, envelope)

    def _message_frame(self, headers: dict[str, str], body: str) -> str:
        assert self.version is not None
        return encode("MESSAGE", headers, version=self.version)[:-2] + f"content-length:{_utf8_len(body)}\n\n{body}\x00"

    def _receipt(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        if receipt is not None:
            self._write(encode("RECEIPT", {"receipt-id": receipt}, version=self.version or "1.2"))

    def _fail(
        self,
        code: CloseCode,
        reason: str,
        detail: str,
        frame: Frame | None = None,
        *,
        receipt: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Send ERROR and close: the STOMP way to refuse a connection-level problem."""
        if self._closed:
            return
        log.info("STOMP error for %s (%s): %s: %s", self._user or "anonymous", self.transport, reason, detail)
        headers = {"message": reason, "content-type": "text/plain"}
        if extra:
            headers.update(extra)
        if receipt is None and frame is not None:
            receipt = frame.get("receipt")
        if receipt is not None:
            headers["receipt-id"] = receipt
        # Closed before the ERROR is written: its own write must not count as another slow-consumer failure.
        self._closed = True
        self._write(encode("ERROR", headers, detail.encode(), version=self.version or "1.2"))
        self._signal_progress()
        self.wire.close(int(code), reason)
        self._on_failed()
        self._stop_timer()

    def _on_failed(self) -> None:
        """Called by ``_fail`` after the ERROR and the close (from synchronous paths such as ``push``)."""

    # -- progress: what a drain waiting on this client waits for --------------------------------------------

    def _progress_event(self) -> asyncio.Event:
        """The event the next progress sets, not set yet (shared by everyone waiting now)."""
        if self._progress is None or self._progress.is_set():
            self._progress = asyncio.Event()
        return self._progress

    def _signal_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None  # its waiters hold it; the next one makes a new one

    async def _until_closed_or(self, waiting: Coroutine[Any, Any, None]) -> None:
        done = asyncio.ensure_future(waiting)
        gone = None
        if not self._closed:
            # A fresh event: an old ACK must not end the wait; a close (or a new ACK) does.
            gone = asyncio.ensure_future(self._progress_event().wait())
        try:
            await asyncio.wait([f for f in (done, gone) if f is not None], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (done, gone):
                if future is not None and not future.done():
                    future.cancel()

    # -- heart-beats ----------------------------------------------------------------------------------------

    def _start_heartbeat(self, client_heartbeat: str | None) -> str:
        """Agree on heart-beats with the client's CONNECT header and start the timer; returns the CONNECTED
        frame's ``heart-beat`` header."""
        client_send, client_receive = _parse_heartbeat(client_heartbeat)
        server_send, server_receive = SERVER_HEARTBEAT_MS
        send_ms = max(server_send, client_receive) if client_receive and server_send else 0
        receive_ms = max(server_receive, client_send) if client_send and server_receive else 0
        self._send_interval = send_ms / 1000
        # Allow twice the interval: SockJS polling transports deliver in bursts.
        self._receive_timeout = 2 * receive_ms / 1000
        self._arm_timer()
        return f"{server_send},{server_receive}"

    def _arm_timer(self) -> None:
        intervals = [i for i in (self._send_interval, self._receive_timeout) if i]
        if not intervals or self._closed:
            return
        self._timer = asyncio.get_running_loop().call_later(min(intervals) / 2, self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self._receive_timeout and now - self._last_received > self._receive_timeout:
            self._fail(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat-timeout", "no data or heart-beat from the client")
            return
        if self._send_interval and now - self._last_sent >= self._send_interval * 0.9:
            self._write("\n")
        self._arm_timer()


def _parse_heartbeat(value: str | None) -> tuple[int, int]:
    if not value:
        return 0, 0
    try:
        send, receive = (int(part) for part in value.split(","))
    except ValueError:
        raise FrameError(f"heart-beat {value[:30]!r} is not two numbers like 10000,10000") from None
    if send < 0 or receive < 0:
        raise FrameError("heart-beat values cannot be negative")
    return send, receive


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8")) if not text.isascii() else len(text)
