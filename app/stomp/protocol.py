"""One client connection's STOMP state: frames in, core calls, frames out.

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
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.budget import INPUT_BUDGET
from ..core.envelope import Envelope
from ..core.errors import RateLimited, WarrenError
from ..core.hub import Hub
from ..core.limits import TokenBucket
from .frames import Frame, FrameError, FrameParser, Limits, encode

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("1.2", "1.1", "1.0")
SERVER_NAME = "Warren/0.1"
#: What the server offers: it can send a heart-beat every 10 s and wants one from the client every 10 s.
SERVER_HEARTBEAT_MS = (10_000, 10_000)
MAX_SUBSCRIPTIONS = 16
#: SUBSCRIBE and UNSUBSCRIBE frames one connection may send per second, and the burst above that. A page subscribes
#: two or three times when it connects; every subscribe and unsubscribe of the chat channel can bind or unbind
#: the user on the broker, so a client that churns them (250 pairs a second, measured) is refused. The hub also
#: limits them per user (``Hub.subscription_limits``), so reconnecting does not buy a fresh allowance.
SUBSCRIPTION_RATE = 2.0
SUBSCRIPTION_BURST = 20
#: Commands that set a connection up; they pass the hub's pacer.
_SET_UP = frozenset({"CONNECT", "STOMP", "SUBSCRIBE"})
#: Seconds a mailbox drain waits for a client to read or acknowledge before calling it a slow consumer.
SEND_TIME_LIMIT = 10.0
#: Envelopes one subscription may hold unacknowledged in a client-ack mode before it is a slow consumer.
MAX_UNACKED = 1_000
#: What an unfinished frame may hold before the connection is CONNECTed (a CONNECT frame is a few hundred bytes;
#: 8 KiB leaves room for a token in a header): connections that have not signed in cannot pin the ~0.5 MiB a
#: connected client's frame may hold.
PRE_CONNECT_LIMITS = Limits(max_headers=16, max_header_line=4096, max_body=1024, max_head=8192)
#: Input held unparsed: several requests of one session may queue their messages while one is handled.
MAX_PENDING_FRAMES = 2
_connection_ids = itertools.count(1)
# Strong references to fire-and-forget tasks (the event loop keeps only weak ones).
_background: set[asyncio.Task[None]] = set()


class Channel(enum.Enum):
    """The destinations a client may subscribe to, by code (the seed's channel enum)."""

    REPLY = "/user/topic/reply"
    ERRORS = "/user/queue/errors"


SEND_DESTINATIONS = frozenset({"/message/chat", "/app/chat"})


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

    def send_text(self, text: str) -> bool:
        """Queue ``text`` as one SockJS message; False if the session cannot take it."""
        ...

    def queued_bytes(self) -> int: ...

    async def wait_flushed(self) -> None:
        """Return when everything queued so far was written to the client."""
        ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class _Subscription:
    id: str
    channel: Channel
    ack: str  # auto | client | client-individual
    unacked: OrderedDict[str, Envelope] = field(default_factory=OrderedDict)


class StompConnection:
    """Implements the core's ``Subscriber`` for one client.

    An idle connection holds no asyncio objects: the lock that keeps overlapping requests' frames in order and the
    event a mailbox drain waits on are made when they are first needed (most connections never need the lock: a
    WebSocket hands over its messages one at a time).
    """

    __slots__ = (
        "_busy",
        "_closed",
        "_frame_limits",
        "_last_received",
        "_last_sent",
        "_lock",
        "_online",
        "_parser",
        "_progress",
        "_receive_timeout",
        "_send_bucket",
        "_send_buffer_bytes",
        "_send_interval",
        "_subscription_bucket",
        "_subscriptions",
        "_timer",
        "_user",
        "hub",
        "session_id",
        "transport",
        "version",
        "wire",
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
        self.hub = hub
        self._user = user
        self.wire = wire
        self.transport = transport
        self.session_id = f"{next(_connection_ids):x}"
        self.version: str | None = None
        self._frame_limits = _limits(max_frame_body)
        self._parser = FrameParser(PRE_CONNECT_LIMITS)
        self._send_buffer_bytes = send_buffer_bytes
        self._subscriptions: dict[str, _Subscription] = {}
        self._online = False
        self._closed = False
        #: True while frames of this connection are handled; ``_lock`` exists from the first overlap on.
        self._busy = False
        self._lock: asyncio.Lock | None = None
        self._send_interval = 0.0
        self._receive_timeout = 0.0
        self._last_sent = time.monotonic()
        self._last_received = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        #: Set when an ACK arrives or the connection closes: what a drain waiting on this client waits for. Made
        #: by the first waiter (``_progress_event``).
        self._progress: asyncio.Event | None = None
        rate, burst = hub.connection_message_rate, hub.connection_message_burst
        self._send_bucket = TokenBucket(rate, burst) if rate > 0 else None
        self._subscription_bucket: TokenBucket | None = None

    # -- Subscriber -----------------------------------------------------------------------------------------

    @property
    def user(self) -> str:
        assert self._user is not None
        return self._user

    def push(self, envelope: Envelope) -> bool:
        if self._closed:
            return False
        if self.wire.queued_bytes() > self._send_buffer_bytes:
            self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", "the client is not reading its messages fast enough")
            return False
        body = envelope.text
        taken = False
        for sub in self._subscriptions.values():
            if sub.channel is not Channel.REPLY:
                continue
            if sub.ack != "auto":
                if len(sub.unacked) >= MAX_UNACKED:
                    self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", f"more than {MAX_UNACKED} unacknowledged")
                    return False
                sub.unacked[envelope.id] = envelope
            headers = {
                "destination": Channel.REPLY.value,
                "subscription": sub.id,
                "message-id": envelope.id,
                "content-type": "application/json",
            }
            if sub.ack != "auto":
                headers["ack"] = envelope.id
            if self._write(self._message_frame(headers, body)):
                taken = True
        return taken

    async def ready_for_more(self) -> None:
        # Below half the bounds, so a drain never trips the slow-consumer checks in push(). A client that does not
        # catch up within SEND_TIME_LIMIT is a slow consumer (as Spring's sendTimeLimit).
        try:
            async with asyncio.timeout(SEND_TIME_LIMIT):
                if self.wire.queued_bytes() > self._send_buffer_bytes // 2:
                    await self._until_closed_or(self.wire.wait_flushed())
                while not self._closed and any(
                    len(s.unacked) > MAX_UNACKED // 2 for s in self._subscriptions.values()
                ):
                    await self._progress_event().wait()
        except TimeoutError:
            self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", f"no progress for {SEND_TIME_LIMIT:g} s")

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

    def take_unacknowledged(self) -> Sequence[Envelope]:
        seen: dict[str, Envelope] = {}
        for sub in self._subscriptions.values():
            for message_id, envelope in sub.unacked.items():
                seen.setdefault(message_id, envelope)
            sub.unacked.clear()
        # In delivery order (of the first subscription that holds each).
        return list(seen.values())

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
            client_send, client_receive = _parse_heartbeat(frame.get("heart-beat"))
            server_send, server_receive = SERVER_HEARTBEAT_MS
            send_ms = max(server_send, client_receive) if client_receive and server_send else 0
            receive_ms = max(server_receive, client_send) if client_send and server_receive else 0
            headers["heart-beat"] = f"{server_send},{server_receive}"
            self._send_interval = send_ms / 1000
            # Allow twice the interval: SockJS polling transports deliver in bursts.
            self._receive_timeout = 2 * receive_ms / 1000
            self._arm_timer()
        self._write(encode("CONNECTED", headers, version=version))

    def _subscription_allowed(self, frame: Frame) -> bool:
        """Take a token for a SUBSCRIBE/UNSUBSCRIBE; past the limit the connection is refused (ERROR, 4009)."""
        bucket = self._subscription_bucket
        if bucket is None:
            bucket = self._subscription_bucket = TokenBucket(SUBSCRIPTION_RATE, SUBSCRIPTION_BURST)
        user_bucket = self.hub.subscription_limits.bucket(self.user)
        if bucket.available() and user_bucket.take():
            bucket.take()
            return True
        limit = bucket if not bucket.available() else user_bucket
        self._fail(
            CloseCode.REFUSED,
            "rate-limited",
            f"subscribing and unsubscribing too fast: at most {limit.rate:g} a second"
            f"{'' if limit is bucket else ' for one user'}; reconnect in {max(1.0, limit.retry_after()):.0f} s",
            frame,
        )
        return False

    async def _on_subscribe(self, frame: Frame) -> None:
        if not self._subscription_allowed(frame):
            return
        destination = frame.get("destination")
        if not destination:
            raise FrameError("SUBSCRIBE needs a destination header")
        channel = _channel_for(destination, self.user)
        sub_id = frame.get("id") or (destination if self.version == "1.0" else None)
        if sub_id is None:
            raise FrameError("SUBSCRIBE needs an id header")
        if sub_id in self._subscriptions:
            raise FrameError(f"subscription id {sub_id!r} is already in use")
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            raise FrameError(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        ack = frame.get("ack") or "auto"
        if ack not in ("auto", "client", "client-individual"):
            raise FrameError(f"unknown ack mode {ack[:30]!r}: use auto, client or client-individual")
        self._subscriptions[sub_id] = _Subscription(sub_id, channel, ack)
        if channel is Channel.REPLY and not self._online:
            # Online before the await: a close during the bind must still take this connection out of the hub.
            self._online = True
            try:
                await self.hub.subscribe(self)
            except WarrenError as exc:
                self._online = False
                del self._subscriptions[sub_id]
                self._fail(CloseCode.REFUSED, exc.reason, str(exc), frame)
                return
        # After the bind and the mailbox drain: a receipt means "you are online, waiting mail is in front of it".
        self._receipt(frame)

    async def _on_unsubscribe(self, frame: Frame) -> None:
        if not self._subscription_allowed(frame):
            return
        sub_id = frame.get("id") or (frame.get("destination") if self.version == "1.0" else None)
        sub = self._subscriptions.get(sub_id or "")
        if sub is None:
            raise FrameError(f"no subscription with id {sub_id!r}")
        self._receipt(frame)
        if self._online and not any(
            s.channel is Channel.REPLY for s in self._subscriptions.values() if s is not sub
        ):
            # Leave the hub first: it takes the unacknowledged envelopes of every subscription back to the mailbox.
            self._online = False
            await self.hub.unsubscribe(self)
        del self._subscriptions[sub.id]

    async def _on_send(self, frame: Frame) -> None:
        destination = frame.get("destination")
        if destination not in SEND_DESTINATIONS:
            raise FrameError(f"cannot SEND to {str(destination)[:60]!r}: use /message/chat")
        receipt = frame.get("receipt")
        try:
            if self._send_bucket is not None and not self._send_bucket.take():
                raise RateLimited(
                    f"this connection sends too fast: at most {self._send_bucket.rate:g} messages per second",
                    self._send_bucket.retry_after(),
                )
            receiver, content = _chat_fields(frame.body)
            await self.hub.send(self.user, receiver, content)
        except WarrenError as exc:
            self._refuse(exc, receipt)
            return
        self._receipt(frame)

    async def _on_ack(self, frame: Frame) -> None:
        self._settle(frame)
        self._signal_progress()
        self._receipt(frame)

    async def _on_nack(self, frame: Frame) -> None:
        refused = self._settle(frame)
        # NACK: the client will not process these now; keep them in its mailbox for a later delivery, through the
        # hub (behind mail already on its way back there).
        for index, (_sub, envelope) in enumerate(refused):
            try:
                await self.hub.give_back(envelope)
            except WarrenError:
                # Not stored (a full mailbox, the broker away): what was not given back stays unacknowledged here,
                # as if this NACK had not come, and goes back when the connection ends. The client is told.
                for kept_sub, kept in reversed(refused[index:]):
                    kept_sub.unacked[kept.id] = kept
                    kept_sub.unacked.move_to_end(kept.id, last=False)
                raise
        self._signal_progress()
        self._receipt(frame)

    async def _on_disconnect(self, frame: Frame) -> None:
        self._receipt(frame)
        self.wire.close(CloseCode.NORMAL, "disconnected")
        await self.on_close()

    async def _unsupported(self, frame: Frame) -> None:
        raise FrameError(f"{frame.command}: transactions are not supported")

    # -- helpers --------------------------------------------------------------------------------------------

    def _settle(self, frame: Frame) -> list[tuple[_Subscription, Envelope]]:
        message_id = frame.get("id") if self.version == "1.2" else frame.get("message-id")
        if not message_id:
            raise FrameError(f"{frame.command} needs an {'id' if self.version == '1.2' else 'message-id'} header")
        sub_id = frame.get("subscription")
        subs = [self._subscriptions[sub_id]] if sub_id in self._subscriptions else list(self._subscriptions.values())
        settled: list[tuple[_Subscription, Envelope]] = []
        for sub in subs:
            if message_id not in sub.unacked:
                continue
            if sub.ack == "client":
                # Cumulative: this message and every earlier one of the subscription.
                while sub.unacked:
                    key, envelope = sub.unacked.popitem(last=False)
                    settled.append((sub, envelope))
                    if key == message_id:
                        break
            else:
                settled.append((sub, sub.unacked.pop(message_id)))
        return settled

    def _message_frame(self, headers: dict[str, str], body: str) -> str:
        assert self.version is not None
        return encode("MESSAGE", headers, version=self.version)[:-2] + f"content-length:{_utf8_len(body)}\n\n{body}\x00"

    def _receipt(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        if receipt is not None:
            self._write(encode("RECEIPT", {"receipt-id": receipt}, version=self.version or "1.2"))

    def _refuse(self, exc: WarrenError, receipt: str | None) -> None:
        errors = next((s for s in self._subscriptions.values() if s.channel is Channel.ERRORS), None)
        if errors is None:
            self._fail(CloseCode.PROTOCOL_ERROR, exc.reason, str(exc), receipt=receipt)
            return
        payload: dict[str, str] = {"error": exc.reason, "message": str(exc)}
        if receipt is not None:
            payload["receipt-id"] = receipt
        headers = {
            "destination": Channel.ERRORS.value,
            "subscription": errors.id,
            "message-id": f"error-{self.session_id}-{time.monotonic_ns()}",
            "content-type": "application/json",
        }
        self._write(self._message_frame(headers, json.dumps(payload, ensure_ascii=False)))

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
        if self._online:
            # Stop deliveries and queue what the client did not get now, in order; unbind from a task, since
            # _fail is called from synchronous paths such as push().
            self._online = False
            self.hub.leave_now(self)
            task = asyncio.get_running_loop().create_task(self.hub.unsubscribe(self))
            _background.add(task)
            task.add_done_callback(_background.discard)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _progress_event(self) -> asyncio.Event:
        """The event the next progress sets, not set yet (shared by everyone waiting now)."""
        if self._progress is None or self._progress.is_set():
            self._progress = asyncio.Event()
        return self._progress

    def _signal_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None  # its waiters hold it; the next one makes a new one

    def _write(self, text: str) -> bool:
        # Every frame counts toward the send bound, as push() counts MESSAGEs: a client that sends receipted frames
        # and never reads is a slow consumer too (issue #11). The ERROR of _fail is written after _closed is set.
        if not self._closed and self.wire.queued_bytes() > self._send_buffer_bytes:
            self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", "the client is not reading what it is sent")
            return False
        self._last_sent = time.monotonic()
        return self.wire.send_text(text)

    def _arm_timer(self) -> None:
        intervals = [i for i in (self._send_interval, self._receive_timeout) if i]
        if not intervals or self._closed:
            return
        self._timer = asyncio.get_running_loop().call_later(min(intervals) / 2, self._on_timer)

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self._receive_timeout and now - self._last_received > self._receive_timeout:
            self._fail(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat-timeout", "no data or heart-beat from the client")
            return
        if self._send_interval and now - self._last_sent >= self._send_interval * 0.9:
            self._write("\n")
        self._arm_timer()


@functools.lru_cache(maxsize=4)
def _limits(max_body: int) -> Limits:
    """The parser limits, one object for every connection with the same bound (they are immutable)."""
    return Limits(max_body=max_body)


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


def _channel_for(destination: str, user: str) -> Channel:
    for channel in Channel:
        if destination == channel.value:
            return channel
    # Spring-style explicit user destinations: /user/<name>/topic/reply, only for oneself.
    if destination.startswith("/user/"):
        rest = destination[len("/user/") :]
        for channel in Channel:
            suffix = channel.value[len("/user") :]
            if rest.endswith(suffix):
                owner = rest[: -len(suffix)]
                if owner == user:
                    return channel
                raise FrameError("cannot subscribe to another user's destination")
    raise FrameError(f"unknown destination {destination[:60]!r}: subscribe to /user/topic/reply")


def _chat_fields(body: bytes) -> tuple[str, str]:
    from ..core.errors import InvalidMessage

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nested deeper than the interpreter's stack ("[[[[..."), a crafted body.
        raise InvalidMessage('the body must be JSON like {"receiver": "bob", "msg": "hi"}') from None
    if not isinstance(data, dict):
        raise InvalidMessage('the body must be a JSON object like {"receiver": "bob", "msg": "hi"}')
    receiver = data.get("receiver", data.get("to"))
    content = data.get("msg", data.get("content"))
    if not isinstance(receiver, str) or not isinstance(content, str):
        raise InvalidMessage('the body needs "receiver" and "msg", both strings')
    return receiver, content


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8")) if not text.isascii() else len(text)
