"""One client connection's STOMP state: frames in, in order, dispatched to the core; CONNECT and closing.

The connection knows nothing of SockJS: it writes text through a ``Wire`` (send text, close with a code). Frames
from one connection are handled one at a time, in order, so a client's SENDs are published in the order it sent
them.

Input costs bounded work and memory: the parser keeps its place between SockJS messages (each byte is examined a
bounded number of times), the connection yields to the event loop between the parts of a big batch
(``app.core.budget``), and before ``CONNECT`` an unfinished frame may hold at most ``PRE_CONNECT_LIMITS`` (a
few KiB, not the ~0.5 MiB a connected client's frame may have).

Errors: a frame the server cannot accept as STOMP (malformed, unknown command, frame before CONNECT, bad
destination, oversized) gets an ERROR frame and the connection is closed, as STOMP requires. A SEND refused by the
application (unknown receiver, message too large, mailbox full, broker unavailable, rate limited) does not end
the connection: the refusal is sent as a MESSAGE on ``/user/queue/errors`` when the client subscribed there, and as
an ERROR frame otherwise.

The parts: ``StompConnection`` extends ``app.stomp.delivery`` (the core's ``Subscriber``: MESSAGEs and drain flow
control), which extends ``app.stomp.output`` (what is written, the send bound, ERROR-and-close, heart-beats);
subscriptions and acknowledgements are ``app.stomp.subscriptions``, SEND and its refusals ``app.stomp.sending``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time

from ..core.budget import INPUT_BUDGET
from ..core.errors import WarrenError
from ..core.hub import Hub
from ..core.limits import TokenBucket
from .delivery import StompDelivery
from .frames import Frame, FrameError, FrameParser, Limits, encode
from .output import CloseCode, Wire
from .sending import refusal_body, send_chat
from .subscriptions import SUBSCRIPTION_BURST, SUBSCRIPTION_RATE, Channel, subscription_refusal

__all__ = ["PRE_CONNECT_LIMITS", "Channel", "CloseCode", "StompConnection", "Wire"]

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("1.2", "1.1", "1.0")
SERVER_NAME = "Warren/0.1"
#: Commands that set a connection up; they pass the hub's pacer.
_SET_UP = frozenset({"CONNECT", "STOMP", "SUBSCRIBE"})
#: What an unfinished frame may hold before the connection is CONNECTed (a CONNECT frame is a few hundred bytes;
#: 8 KiB leaves room for a token in a header): connections that have not signed in cannot pin the ~0.5 MiB a
#: connected client's frame may hold.
PRE_CONNECT_LIMITS = Limits(max_headers=16, max_header_line=4096, max_body=1024, max_head=8192)
#: Input held unparsed: several requests of one session may queue their messages while one is handled.
MAX_PENDING_FRAMES = 2
_connection_ids = itertools.count(1)
# Strong references to fire-and-forget tasks (the event loop keeps only weak ones).
_background: set[asyncio.Task[None]] = set()


class StompConnection(StompDelivery):
    """Implements the core's ``Subscriber`` for one client (delivery in ``StompDelivery``), and handles its frames.

    An idle connection holds no asyncio objects: the lock that keeps overlapping requests' frames in order and the
    event a mailbox drain waits on are made when they are first needed (most connections never need the lock: a
    WebSocket hands over its messages one at a time).
    """

    __slots__ = (
        "_busy",
        "_frame_limits",
        "_lock",
        "_online",
        "_parser",
        "_send_bucket",
        "_subscription_bucket",
        "hub",
        "session_id",
    )

    def __init__(
        self,
        hub: Hub,
        user: str | None,
        wire: Wire,
        *,
        max_frame_body: int,
        send_buffer_bytes: int,
        transport: str = "",
    ) -> None:
        super().__init__(user, wire, send_buffer_bytes=send_buffer_bytes, transport=transport)
        self.hub = hub
        self.session_id = f"{next(_connection_ids):x}"
        self._frame_limits = _limits(max_frame_body)
        self._parser = FrameParser(PRE_CONNECT_LIMITS)
        self._online = False
        #: True while frames of this connection are handled; ``_lock`` exists from the first overlap on.
        self._busy = False
        self._lock: asyncio.Lock | None = None
        rate, burst = hub.connection_message_rate, hub.connection_message_burst
        self._send_bucket = TokenBucket(rate, burst) if rate > 0 else None
        self._subscription_bucket: TokenBucket | None = None

    @property
    def user(self) -> str:
        assert self._user is not None
        return self._user

    # -- input ----------------------------------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        """Handle one SockJS message from the client."""
        if self._closed:
            return
        self._last_received = time.monotonic()
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            self._fail(CloseCode.PROTOCOL_ERROR, "invalid-utf8", "the message is not valid UTF-8")
            return
        # Appended at once, parsed by whoever handles this connection's input: the stream keeps arrival order even
        # when requests overlap.
        parser = self._parser
        parser.append(data)
        limits = parser.limits
        bound = MAX_PENDING_FRAMES * (limits.head_bound + limits.max_body) + len(data)
        if parser.pending > bound:
            self._fail(
                CloseCode.PROTOCOL_ERROR,
                "input-overflow",
                f"more than {bound} bytes of STOMP input are waiting: send less at once",
            )
            return
        lock = self._lock
        if lock is None:
            if not self._busy:
                # The usual case: nothing else of this connection is being handled, so no lock is needed.
                self._busy = True
                try:
                    await self._handle_input()
                finally:
                    self._busy = False
                    if self._lock is not None:
                        self._lock.release()  # taken on this call's behalf when another one arrived meanwhile
                return
            # Another request of this session is handling its frames (HTTP sends can overlap): from now on a lock
            # keeps them in order. It is taken on behalf of the running call (a new lock: this never waits), which
            # releases it when done. That call also parses what this one appended.
            lock = self._lock = asyncio.Lock()
            await lock.acquire()
        async with lock:
            await self._handle_input()

    async def _handle_input(self) -> None:
        """Parse and handle the frames appended so far, one at a time, yielding to the loop between them."""
        budget = INPUT_BUDGET
        while not self._closed:
            try:
                frame = self._parser.next_frame()
            except FrameError as exc:
                self._fail(CloseCode.PROTOCOL_ERROR, "malformed-frame", str(exc))
                return
            if frame is None:
                break
            try:
                await self._handle(frame)
            except FrameError as exc:
                self._fail(CloseCode.PROTOCOL_ERROR, "protocol-error", str(exc), frame)
                return
            except WarrenError as exc:
                # The application refused what this frame asked for: the client is told, the frames after it in
                # the batch are still handled.
                self._refuse(exc, frame.get("receipt"))
            await budget.spend()
        # Also between SockJS messages that complete no frame (a batch of thousands of one-byte messages).
        await budget.spend()

    async def on_close(self) -> None:
        """The session is gone: leave the hub (unacknowledged mail goes back to the mailbox)."""
        self._stop_timer()
        was_closed, self._closed = self._closed, True
        self._signal_progress()  # wakes a drain waiting on this connection
        if self._online:
            self._online = False
            try:
                await self.hub.unsubscribe(self)
            except Exception:
                log.exception("could not take %s offline cleanly", self._user)
        elif not was_closed:
            return

    async def shutdown(self) -> None:
        """The node is stopping: tell the client to reconnect elsewhere."""
        if not self._closed:
            self.wire.close(CloseCode.SHUTTING_DOWN, "server shutting down, reconnect")
        await self.on_close()

    # -- frames ---------------------------------------------------------------------------------------------

    async def _handle(self, frame: Frame) -> None:
        command = frame.command
        if command in _SET_UP:
            # Set-up work is paced (app.core.pacing): a reconnect storm must not stall messages already flowing.
            await self.hub.pacer.turn()
        if command in ("CONNECT", "STOMP"):
            self._connect(frame)
            return
        if self.version is None:
            raise FrameError(f"{command} before CONNECT: send CONNECT first")
        handler = {
            "SEND": self._on_send,
            "SUBSCRIBE": self._on_subscribe,
            "UNSUBSCRIBE": self._on_unsubscribe,
            "ACK": self._on_ack,
            "NACK": self._on_nack,
            "DISCONNECT": self._on_disconnect,
            "BEGIN": self._unsupported,
            "COMMIT": self._unsupported,
            "ABORT": self._unsupported,
        }.get(command)
        if handler is None:
            raise FrameError(f"unknown command {command[:40]!r}")
        await handler(frame)

    def _connect(self, frame: Frame) -> None:
        if self.version is not None:
            raise FrameError("already connected")
        if self._user is None:
            self._fail(CloseCode.NOT_SIGNED_IN, "not-signed-in", "sign in first: POST /login, then reconnect", frame)
            return
        accepted = (frame.get("accept-version") or "1.0").split(",")
        version = next((v for v in SUPPORTED_VERSIONS if v in {a.strip() for a in accepted}), None)
        if version is None:
            self.version = "1.2"
            self._fail(
                CloseCode.PROTOCOL_ERROR,
                "unsupported-version",
                f"supported STOMP versions are {','.join(reversed(SUPPORTED_VERSIONS))}",
                frame,
                extra={"version": ",".join(reversed(SUPPORTED_VERSIONS))},
            )
            return
        self.version = version
        self._parser.version = version
        self._parser.limits = self._frame_limits
        headers = {"version": version, "server": SERVER_NAME, "session": self.session_id, "user-name": self.user}
        if version != "1.0":
            headers["heart-beat"] = self._start_heartbeat(frame.get("heart-beat"))
        self._write(encode("CONNECTED", headers, version=version))

    def _subscription_allowed(self, frame: Frame) -> bool:
        """Take a token for a SUBSCRIBE/UNSUBSCRIBE; past the limit the connection is refused (ERROR, 4009)."""
        bucket = self._subscription_bucket
        if bucket is None:
            bucket = self._subscription_bucket = TokenBucket(SUBSCRIPTION_RATE, SUBSCRIPTION_BURST)
        refusal = subscription_refusal(bucket, self.hub.subscription_limits.bucket(self.user))
        if refusal is None:
            return True
        self._fail(CloseCode.REFUSED, "rate-limited", refusal, frame)
        return False

    async def _on_subscribe(self, frame: Frame) -> None:
        if not self._subscription_allowed(frame):
            return
        sub = self._subscriptions.add(frame, self.user, self.version)
        if sub.channel is Channel.REPLY and not self._online:
            # Online before the await: a close during the bind must still take this connection out of the hub.
            self._online = True
            try:
                await self.hub.subscribe(self)
            except WarrenError as exc:
                self._online = False
                self._subscriptions.remove(sub)
                self._fail(CloseCode.REFUSED, exc.reason, str(exc), frame)
                return
        # After the bind and the mailbox drain: a receipt means "you are online, waiting mail is in front of it".
        self._receipt(frame)

    async def _on_unsubscribe(self, frame: Frame) -> None:
        if not self._subscription_allowed(frame):
            return
        sub = self._subscriptions.named(frame, self.version)
        self._receipt(frame)
        if self._online and not self._subscriptions.replies_besides(sub):
            # Leave the hub first: it takes the unacknowledged envelopes of every subscription back to the mailbox.
            self._online = False
            await self.hub.unsubscribe(self)
        self._subscriptions.remove(sub)

    async def _on_send(self, frame: Frame) -> None:
        try:
            await send_chat(self.hub, self.user, self._send_bucket, frame)
        except WarrenError as exc:
            self._refuse(exc, frame.get("receipt"))
            return
        self._receipt(frame)

    async def _on_ack(self, frame: Frame) -> None:
        self._subscriptions.settle(frame, self.version)
        self._signal_progress()
        self._receipt(frame)

    async def _on_nack(self, frame: Frame) -> None:
        refused = self._subscriptions.settle(frame, self.version)
        # NACK: the client will not process these now; keep them in its mailbox for a later delivery, through the
        # hub (behind mail already on its way back there).
        for index, (_sub, envelope) in enumerate(refused):
            try:
                await self.hub.give_back(envelope)
            except WarrenError:
                # Not stored (a full mailbox, the broker away): what was not given back stays unacknowledged here,
                # as if this NACK had not come, and goes back when the connection ends. The client is told.
                self._subscriptions.keep(refused[index:])
                raise
        self._signal_progress()
        self._receipt(frame)

    async def _on_disconnect(self, frame: Frame) -> None:
        self._receipt(frame)
        self.wire.close(CloseCode.NORMAL, "disconnected")
        await self.on_close()

    async def _unsupported(self, frame: Frame) -> None:
        raise FrameError(f"{frame.command}: transactions are not supported")

    # -- refusals -------------------------------------------------------------------------------------------

    def _refuse(self, exc: WarrenError, receipt: str | None) -> None:
        errors = self._subscriptions.errors()
        if errors is None:
            self._fail(CloseCode.PROTOCOL_ERROR, exc.reason, str(exc), receipt=receipt)
            return
        headers = {
            "destination": Channel.ERRORS.value,
            "subscription": errors.id,
            "message-id": f"error-{self.session_id}-{time.monotonic_ns()}",
            "content-type": "application/json",
        }
        self._write(self._message_frame(headers, refusal_body(exc, receipt)))

    def _on_failed(self) -> None:
        if self._online:
            # Stop deliveries and queue what the client did not get now, in order; unbind from a task, since
            # _fail is called from synchronous paths such as push().
            self._online = False
            self.hub.leave_now(self)
            task = asyncio.get_running_loop().create_task(self.hub.unsubscribe(self))
            _background.add(task)
            task.add_done_callback(_background.discard)


@functools.lru_cache(maxsize=4)
def _limits(max_body: int) -> Limits:
    """The parser limits, one object for every connection with the same bound (they are immutable)."""
    return Limits(max_body=max_body)
