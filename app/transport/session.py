"""SockJS sessions: the outgoing queue between the application and whichever request currently carries it.

Warren owns this code instead of using the ``sockjs`` package's ``Session``/``SessionManager`` because the
package's versions lose messages and leak sessions in ways a thin subclass cannot fix (measured against the
official sockjs-protocol suite and in Chromium; see ``app/transport/__init__.py`` for the list). What this module
guarantees:

* **A frame leaves the queue only once it was written.** A transport *peeks* at the next frame
  (``Session.next_frame``), writes it, and only then ``commit``\\ s it. A request that finds its client gone does
  not take anything: the package popped the frame first, so a message sent just after a client went away was
  written into a dead socket and lost. A polling answer counts as delivered only when the next poll arrives
  (a polling client asks again only after handling the answer); until then its messages stay with the session.
* **One receiver at a time, and a refused one changes nothing.** A second polling request for a session that
  already has a live one gets ``c[2010,"Another connection still open"]`` and leaves the session alone (the
  package closed the first, healthy request and dropped the message sent meanwhile).
* **Aborted requests end the session promptly.** aiohttp ≥ 3.9 does not cancel a handler whose client went away
  (``handler_cancellation`` is off by default, and Warren leaves it off: cancelling every handler mid-await on a
  disconnect would also cancel half-done publishes). Instead the manager notices a receiving request whose
  connection is closed (its transport is closing) in three places: when the next request for the session
  arrives, before any write, and in a sweep every ``SWEEP_INTERVAL``. The session then ends with
  ``c[1002,"Connection interrupted"]`` as the protocol says, and the application hears of it at once. With
  handler cancellation switched on (aiohttp's test server does), a cancelled receiver does the same.
* **Sessions of vanished clients expire.** When a receiving request ends, a timer of ``disconnect_delay``
  starts; unless another receiving request arrives first, the session ends and is forgotten. A session that
  ended keeps answering with its close frame until then.
* **The application hears of the end exactly once** (``on_close``), and can take the messages that were queued
  but never written (``take_undelivered``) — for Warren, chat messages to hand back to the hub.
* **The queue is measured** (``queued_bytes``): the application decides how much a slow client may hold.
* **Pushed receivers cost no task and no timer.** A WebSocket is a ``PushReceiver``: nothing waits for its frames.
  Queuing a frame marks the session, and one callback per loop tick (``loop.call_soon``, one per manager) writes
  every marked session's frames, so what was queued in one tick leaves in one write. A session whose connection
  holds more than its high-water mark of unsent bytes is skipped (its frames stay queued, counted by
  ``queued_bytes``) and written again when that connection drained. SockJS heart-beats of pushed receivers come
  from the manager's periodic sweep, not from a timer per session.
* **A session belongs to its owner.** ``SessionManager.identify`` names who a request comes from (for Warren, the
  sign-in of its cookie); sessions are registered under owner and id, so a request finds only its own owner's
  sessions. Someone else using the same id meets what an unused id gives (a new session of their own, or 404
  for a send), and the owner's session is neither read nor written by them.
* **Nothing waits without a reason.** The asyncio objects a waiter needs (``wait_for_frames``, ``wait_flushed``)
  are made when someone waits, not per session: an idle session is a few plain objects, which keeps memory and
  the work of the garbage collector's full collections proportional to what is actually happening.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from aiohttp import web

from . import framing

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How often receiving requests are checked for a client that went away without the handler noticing (at most;
#: the sweep also sends the heart-beats of pushed receivers, so it runs at least four times per heart-beat delay).
SWEEP_INTERVAL = 1.0
INTERRUPTED = (1002, "Connection interrupted")
GO_AWAY = (3000, "Go away!")
#: Where a session is registered: its owner (``SessionManager.identify``) and its id. Two owners may use one id
#: without ever meeting: each request finds only the session of its own owner.
SessionKey = tuple[Hashable, str]
#: The owner part of WebSocket sessions' keys: equal to no owner a request can have, so no URL reaches them.
_UNADDRESSABLE = object()


class SessionState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    #: The application closed the session; the close frame waits behind the queued messages.
    CLOSING = "closing"
    #: Nothing more will be delivered; requests are answered with the close frame until the session expires.
    CLOSED = "closed"


class FrameKind(enum.Enum):
    OPEN = "open"
    MESSAGES = "messages"
    CLOSE = "close"
    #: Written when nothing else was for ``heartbeat_delay``; never queued, so never committed.
    HEARTBEAT = "heartbeat"



@dataclass(frozen=True, slots=True)
class Pending:
    """The next frame to write, not yet taken off the queue (see ``Session.commit``)."""

    text: str
    kind: FrameKind
    count: int = 0


HEARTBEAT_FRAME = Pending(framing.HEARTBEAT, FrameKind.HEARTBEAT)


class SessionExists(Exception):
    """A session of this owner and id is registered already."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"SockJS session {session_id!r} exists already")


def peer_gone(request: web.BaseRequest) -> bool:
    """True once the client's connection is closed or half-closed (what aiohttp no longer reports by itself)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class Receiver:
    """The request currently carrying a session; compared by identity, so a stale request knows it is stale.

    A plain ``Receiver`` is a request whose handler writes the session's frames itself, waiting for them with
    ``Session.wait_for_frames`` (the HTTP transports).
    """

    __slots__ = ("request",)

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request

    def frames_ready(self, session: Session) -> None:
        """Something was queued on ``session`` (its handler is woken by ``Session._wake``; nothing to do here)."""


class PushReceiver(Receiver):
    """A receiver whose frames are written from the event loop rather than by a task of its own (a WebSocket).

    When frames are queued the manager calls ``flush`` in the next loop tick, once however many were queued; the
    manager's sweep calls ``heartbeat`` when nothing was written for ``heartbeat_delay``. ``flush`` must write what
    it can without waiting and ``commit`` only what it wrote.
    """

    __slots__ = ("last_write", "manager")

    def __init__(self, request: web.BaseRequest, manager: SessionManager[Any]) -> None:
        super().__init__(request)
        self.manager = manager
        #: ``time.monotonic()`` of the last write, for the heart-beat sweep.
        self.last_write = time.monotonic()

    def frames_ready(self, session: Session) -> None:
        self.manager.schedule_flush(session)

    def flush(self, session: Session) -> bool:
        """Write the session's queued frames now. False when flow control holds the connection: nothing (more) was
        written, and ``drained`` tells when to try again."""
        raise NotImplementedError

    def heartbeat(self, session: Session) -> None:
        """Write a heart-beat if the connection can take one now (skipped otherwise: it carries nothing)."""
        raise NotImplementedError

    async def drained(self) -> None:
        """Return once the connection's write buffer fell below its low-water mark (or the connection is gone)."""
        raise NotImplementedError


class Session:
    """One SockJS session: its state and the frames waiting for a receiving request."""

    __slots__ = (
        "_close",
        "_ended",
        "_expiry",
        "_flushed",
        "_in_flight",
        "_messages",
        "_open_pending",
        "_queued",
        "_sealed",
        "_unflushed",
        "_wakeup",
        "addressable",
        "id",
        "key",
        "owner",
        "receiver",
        "state",
        "transport_name",
    )

    def __init__(self, session_id: str, transport_name: str) -> None:
        self.id = session_id
        #: The transport that opened the session (``xhr-polling``, ``websocket``, …), for metrics and logs.
        self.transport_name = transport_name
        self.state = SessionState.NEW
        self._open_pending = False
        # A list, not a deque: a transport takes the whole queue at once in the usual case, and an empty list is a
        # tenth of an empty deque's size (most sessions are idle most of the time).
        self._messages: list[str] = []
        #: Messages of the last polling answer, kept until the client's next poll shows it read them (None: none;
        #: WebSocket sessions never have any).
        self._in_flight: list[str] | None = None
        self._queued = 0
        self._close: tuple[int, str] | None = None
        self._sealed = False
        #: True while queued frames (or the open or close frame) wait to be written: what ``wait_flushed`` waits
        #: out. The events below exist only while somebody waits.
        self._unflushed = False
        self._flushed: asyncio.Event | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self.receiver: Receiver | None = None
        #: False for WebSocket sessions: no session URL reaches them.
        self.addressable = True
        #: Who opened the session (``SessionManager.identify``); only requests of the same owner reach it.
        self.owner: Hashable | None = None
        #: Where the manager registered it.
        self.key: SessionKey = (None, session_id)
        self._expiry: asyncio.TimerHandle | None = None
        self._ended: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.transport_name} {self.state.value} queued={len(self._messages)}>"

    # -- the application's side (also the STOMP layer's ``Wire``) --------------------------------------------

    def send(self, message: str) -> bool:
        """Queue one message; False (and nothing queued) once the application closed the session, or once it
        ended and its undelivered messages were taken (``take_undelivered``).

        Between the end of a session and ``take_undelivered`` messages are still accepted: they join the
        undelivered ones in order, so the application can hand all of them on in the order they were sent.
        """
        if self.state is not SessionState.OPEN and not (self.state is SessionState.CLOSED and not self._sealed):
            return False
        self._messages.append(message)
        self._queued += len(message)
        self._unflushed = True
        self._wake()
        return True

    def queued_bytes(self) -> int:
        """Characters of messages queued and not yet written (what a slow or absent client is holding up)."""
        return self._queued

    def close(self, code: int = GO_AWAY[0], reason: str = GO_AWAY[1]) -> None:
        """Close from the application: the client gets the queued messages, then ``c[code,reason]``."""
        if self.state not in (SessionState.NEW, SessionState.OPEN):
            return
        self.state = SessionState.CLOSING
        self._close = (code, reason)
        self._unflushed = True
        self._wake()

    def peek_messages(self, count: int) -> list[str]:
        """The first ``count`` queued messages, left in the queue (a raw WebSocket writes them one by one)."""
        return [self._messages[index] for index in range(count)]

    @property
    def close_reason(self) -> tuple[int, str]:
        """The code and reason of the close frame (once closing or closed)."""
        return self._close or GO_AWAY

    def take_undelivered(self) -> list[str]:
        """Remove and return the messages the client may not have: those of the last polling answer it never
        confirmed by polling again, then those never written. From now on ``send`` refuses.

        Meant for ``on_close``: the session has ended, so nothing queued can reach the client any more.
        """
        self._sealed = True
        messages = (self._in_flight or []) + self._messages
        self._in_flight = None
        self._messages = []
        self._queued = 0
        return messages

    @property
    def ended(self) -> bool:
        return self._ended is not None

    # -- the manager's side: state changes, each in one place ------------------------------------------------

    def expire_later(self, handle: asyncio.TimerHandle | None) -> None:
        """Replace the expiry timer (None: the session does not expire while a request carries it)."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = handle

    def set_receiver(self, receiver: Receiver | None) -> None:
        """``receiver`` carries the session from now on (None: nobody does). A new receiver shows that the client
        handled everything written before it (``polled``) and gets what is already queued."""
        self.receiver = receiver
        if receiver is not None:
            self.polled()
            self._wake()

    def begin_open(self) -> None:
        """The session opens: the application may queue messages (they follow the open frame)."""
        self.state = SessionState.OPEN

    def queue_open_frame(self) -> None:
        """The application has seen the session: the open frame goes first, before anything it queued."""
        self._open_pending = True
        self._unflushed = True
        self._wake()

    def mark_ended(self, close: tuple[int, str] | None, notify: Callable[[], asyncio.Task[None]]) -> asyncio.Task[None]:
        """The session will deliver nothing more: from now on every request gets the close frame (``close``, else
        the application's, else 3000). ``notify`` starts the application's ``on_close``, once; its task is returned
        every time."""
        if close is not None:
            self._close = close
        elif self._close is None:
            self._close = GO_AWAY
        if self._ended is not None:
            return self._ended
        self.state = SessionState.CLOSED
        self._set_flushed()
        self._wake()
        self._ended = notify()
        return self._ended

    # -- the transports' side ---------------------------------------------------------------------------------

    def next_frame(self) -> Pending | None:
        """The frame a receiver should write next, or None when there is nothing to send yet."""
        if self.state is SessionState.CLOSED:
            return Pending(framing.close_frame(*(self._close or GO_AWAY)), FrameKind.CLOSE)
        if self._open_pending:
            return Pending(framing.OPEN, FrameKind.OPEN)
        if self._messages:
            return Pending(framing.message_frame(self._messages), FrameKind.MESSAGES, len(self._messages))
        if self.state is SessionState.CLOSING:
            assert self._close is not None
            return Pending(framing.close_frame(*self._close), FrameKind.CLOSE)
        return None

    def commit(self, pending: Pending, *, await_next_poll: bool = False) -> None:
        """``pending`` was written: take it off the queue.

        ``await_next_poll``: the frame answered a poll. A polling client asks again only after it handled the
        answer, so the messages count as delivered only when its next poll arrives (``Session.polled``). A tab
        closed while the answer was on its way (Chrome lets a closing tab's JSONP request complete and drops
        the answer) then loses nothing: the messages are among ``take_undelivered``.
        """
        if pending.kind is FrameKind.OPEN:
            self._open_pending = False
        elif pending.kind is FrameKind.MESSAGES:
            if pending.count == len(self._messages):
                taken, self._messages = self._messages, []
            else:
                taken = self._messages[: pending.count]
                del self._messages[: pending.count]
            self._queued -= sum(map(len, taken))
            if await_next_poll:
                if self._in_flight is None:
                    self._in_flight = []
                self._in_flight.extend(taken)
        if not self._open_pending and not self._messages:
            self._set_flushed()

    def polled(self) -> None:
        """A new receiving request arrived: the client handled everything written before it."""
        self._in_flight = None

    def is_receiver(self, receiver: Receiver) -> bool:
        return self.receiver is receiver

    async def wait_for_frames(self, timeout: float) -> bool:
        """Wait until something may be ready to write (or the receiver changed); False after ``timeout``.

        For receivers that write from their own handler (HTTP); one waiter at a time, as there is one receiver.
        """
        waiter = self._wakeup = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        finally:
            if self._wakeup is waiter:
                self._wakeup = None
        return True

    async def wait_flushed(self) -> None:
        """Wait until everything queued so far (and the close frame, if any) was written."""
        if not self._unflushed:
            return
        if self._flushed is None:
            self._flushed = asyncio.Event()
        await self._flushed.wait()

    def _set_flushed(self) -> None:
        self._unflushed = False
        if self._flushed is not None:
            # Wakes every waiter; the next one to wait gets a new event.
            self._flushed.set()
            self._flushed = None

    def _wake(self) -> None:
        """Frames may be ready, or the session ended: tell whoever writes them."""
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.receiver is not None:
            self.receiver.frames_ready(self)


SessionT = TypeVar("SessionT", bound=Session)


class SessionManager(Generic[SessionT]):
    """The sessions of one SockJS endpoint, their receivers, timers and the application's hooks.

    Subclass and override ``on_open``, ``on_message`` and ``on_close``; ``SessionT`` is the class of the sessions
    (``session_factory`` makes them), so the hooks get that class. Every hook runs in the event loop; a
    hook that raises is logged and does not break the transport.
    """

    def __init__(
        self,
        *,
        heartbeat_delay: float = 25.0,
        disconnect_delay: float = 5.0,
        session_factory: Callable[[str, str], SessionT] | None = None,
    ) -> None:
        self.heartbeat_delay = heartbeat_delay
        self.disconnect_delay = disconnect_delay
        self.session_factory: Callable[[str, str], SessionT] = session_factory or cast(
            Callable[[str, str], SessionT], Session
        )
        #: Every session, by owner and id (``SessionKey``).
        self.sessions: dict[SessionKey, SessionT] = {}
        self._unique = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: Sessions of pushed receivers with frames to write, in the order they became ready (a dict as an ordered
        #: set), and the one callback that writes them.
        self._to_flush: dict[SessionT, None] = {}
        self._flush_handle: asyncio.Handle | None = None
        #: Sessions whose connection is over its high-water mark, with the task waiting for it to drain.
        self._held: dict[SessionT, asyncio.Task[None]] = {}

    # -- application hooks -------------------------------------------------------------------------------------

    async def identify(self, request: web.Request) -> Hashable | None:
        """Who is asking (for Warren: the sign-in of the request's cookie), or None. Every request of a session
        must come from the owner that opened it: a request finds only sessions opened by its own owner, so one of
        another owner answers exactly as if the session did not exist. By default everyone is the same nobody."""
        return None

    async def on_open(self, session: SessionT, request: web.Request) -> None:
        """A new session, before its open frame is written (so no message can arrive before this returns)."""

    async def on_message(self, session: SessionT, message: str) -> None:
        """One message from the client, in order."""

    async def on_close(self, session: SessionT) -> None:
        """The session will deliver nothing more (closed, interrupted, expired, or its WebSocket ended)."""

    # -- registry --------------------------------------------------------------------------------------------

    def get(self, session_id: str, owner: Hashable | None = None) -> SessionT | None:
        """``owner``'s HTTP session named ``session_id``; never a WebSocket session (no URL may reach those)."""
        return self.sessions.get((owner, session_id))

    def create(
        self, session_id: str, transport_name: str, *, owner: Hashable | None = None, addressable: bool = True
    ) -> SessionT:
        """A new session of ``owner`` under ``session_id`` (HTTP transports: the id names the session across
        requests). Raises ``SessionExists`` if ``owner`` already has one of that id."""
        key: SessionKey = (owner if addressable else _UNADDRESSABLE, session_id)
        if key in self.sessions:
            raise SessionExists(session_id)
        session = self.session_factory(session_id, transport_name)
        session.addressable = addressable
        session.owner = owner
        session.key = key
        self.sessions[key] = session
        self._ensure_sweeper()
        if addressable:
            # Expires unless a request attaches: a client that vanished before that must not leave it behind.
            # (A WebSocket's handler attaches at once and releases the session when it returns, whatever happens.)
            self._schedule_expiry(session)
        return session

    def create_unique(self, session_id: str, transport_name: str, *, owner: Hashable | None = None) -> SessionT:
        """A WebSocket session: it lives as long as its connection, two connections may reuse one id
        (sockjs-protocol ``test_reuseSessionId``), and it is not addressable: ``xhr_send`` to its id is a 404,
        so nobody can slip messages into another client's WebSocket session."""
        self._unique += 1
        return self.create(f"{session_id}#{self._unique}", transport_name, owner=owner, addressable=False)

    def remove(self, session: SessionT) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        session.expire_later(None)

    # -- receivers ---------------------------------------------------------------------------------------------

    def attach(
        self, session: SessionT, request: web.BaseRequest, receiver: Receiver | None = None
    ) -> Receiver | None:
        """Make ``request`` the session's receiver (``receiver``, by default a plain one); None if another live
        request already is."""
        if session.receiver is not None:
            return None
        session.expire_later(None)
        attached = receiver or Receiver(request)
        # A pushed receiver writes what is already queued (the open frame, at least) without waiting for more.
        session.set_receiver(attached)
        return attached

    def receiver_gone(self, session: SessionT) -> bool:
        """True when the session's receiver is a request whose client already went away."""
        return session.receiver is not None and peer_gone(session.receiver.request)

    def detach(self, session: SessionT, receiver: Receiver) -> None:
        """``receiver`` finished normally: start the disconnect countdown (unless it was replaced)."""
        if session.receiver is not receiver:
            return
        session.set_receiver(None)
        self._schedule_expiry(session)

    def release(self, session: SessionT, receiver: Receiver) -> asyncio.Task[None]:
        """``receiver``'s connection ended and the session cannot be resumed (a WebSocket): nothing more is written
        to it, the session is forgotten and ends; returns the task in which the application hears of it."""
        if session.receiver is receiver:
            session.set_receiver(None)
        self._to_flush.pop(session, None)
        held = self._held.pop(session, None)
        if held is not None:
            held.cancel()
        self.remove(session)
        return self.end(session)

    def written(self, session: SessionT, pending: Pending, *, await_next_poll: bool = False) -> None:
        """A receiver wrote ``pending``: take it off the queue; a close frame ends the session."""
        session.commit(pending, await_next_poll=await_next_poll)
        if pending.kind is FrameKind.CLOSE:
            self.end(session)

    # -- pushed receivers -----------------------------------------------------------------------------------------

    def schedule_flush(self, session: SessionT) -> None:
        """Write ``session``'s frames in the next loop tick, with those of every other session that gets some
        before then. A session held by flow control is written when its connection drains instead."""
        if session in self._held or session in self._to_flush:
            return
        self._to_flush[session] = None
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        sessions, self._to_flush = self._to_flush, {}
        for session in sessions:
            receiver = session.receiver
            if not isinstance(receiver, PushReceiver):
                continue  # released meanwhile
            try:
                if receiver.flush(session):
                    continue
            except Exception:
                log.exception("SockJS session %s: writing its frames failed", session.id)
                self.interrupt(session)
                continue
            self._held[session] = self.spawn(self._flush_when_drained(session, receiver))

    async def _flush_when_drained(self, session: SessionT, receiver: PushReceiver) -> None:
        try:
            await receiver.drained()
        except ConnectionError:
            pass  # the flush finds the connection closed and interrupts the session
        finally:
            if self._held.get(session) is asyncio.current_task():
                del self._held[session]
        if session.receiver is receiver:
            self.schedule_flush(session)

    async def open(self, session: SessionT, request: web.Request) -> None:
        """First receiving request of a new session: call ``on_open``, then queue the open frame."""
        if session.state is not SessionState.NEW:
            return
        session.begin_open()
        try:
            await self.on_open(session, request)
        except Exception:
            log.exception("SockJS session %s: the open handler failed", session.id)
            session.close(3000, "Internal error")
        session.queue_open_frame()

    async def receive(self, session: SessionT, messages: list[str]) -> None:
        """Hand the client's messages to the application, in order (ignored once the session is closing)."""
        for message in messages:
            if session.state is not SessionState.OPEN:
                return
            try:
                await self.on_message(session, message)
            except Exception:
                log.exception("SockJS session %s: the message handler failed", session.id)

    # -- ending ------------------------------------------------------------------------------------------------

    def end(self, session: SessionT, close: tuple[int, str] | None = None) -> asyncio.Task[None]:
        """The session will deliver nothing more; ``on_close`` runs (once) in a task, which is returned.

        ``close`` replaces the close frame later requests get (default: the application's, else 3000).
        Synchronous on purpose: it is called from cancelled handlers and timer callbacks.
        """
        return session.mark_ended(close, lambda: self.spawn(self._notify_close(session)))

    def interrupt(self, session: SessionT) -> asyncio.Task[None]:
        """The receiving request's client went away mid-request: end the session with 1002 (sockjs-protocol)."""
        log.debug("SockJS session %s interrupted: its receiving request was aborted", session.id)
        session.set_receiver(None)
        task = self.end(session, None if session.ended else INTERRUPTED)
        if self.sessions.get(session.key) is session:
            self._schedule_expiry(session)
        return task

    async def end_all(self) -> None:
        """End every session now (shutdown) and wait for the application to hear of each."""
        tasks = [self.end(session) for session in list(self.sessions.values())]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self, _app: web.Application | None = None) -> None:
        """Forget every session (app cleanup): timers and the sweep stop, the application hears of each end."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for held in self._held.values():
            held.cancel()
        await self.end_all()
        for session in list(self.sessions.values()):
            self.remove(session)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _notify_close(self, session: SessionT) -> None:
        try:
            await self.on_close(session)
        except Exception:
            log.exception("SockJS session %s: the close handler failed", session.id)

    # -- timers --------------------------------------------------------------------------------------------------

    def _schedule_expiry(self, session: SessionT) -> None:
        session.expire_later(asyncio.get_running_loop().call_later(self.disconnect_delay, self._expired, session))

    def _expired(self, session: SessionT) -> None:
        session.expire_later(None)
        if session.receiver is not None:
            return
        log.debug("SockJS session %s expired", session.id)
        self.remove(session)
        self.end(session)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    @property
    def sweep_interval(self) -> float:
        """Seconds between two sweeps: ``SWEEP_INTERVAL``, or a quarter of the heart-beat delay if that is shorter
        (a heart-beat leaves between ``heartbeat_delay`` and ``heartbeat_delay`` plus this after the last write)."""
        return max(0.01, min(SWEEP_INTERVAL, self.heartbeat_delay / 4))

    async def _sweep(self) -> None:
        # A periodic check rather than an event: aiohttp offers no callback for "this request's client went
        # away" unless handler cancellation is on. One pass is a dictionary walk; only heart-beats are written.
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

    def sweep(self) -> None:
        """Interrupt sessions whose receiving request lost its client; heart-beat idle pushed receivers."""
        quiet_since = time.monotonic() - self.heartbeat_delay
        for session in list(self.sessions.values()):
            if session.ended:
                continue
            if self.receiver_gone(session):
                self.interrupt(session)
                continue
            receiver = session.receiver
            if (
                isinstance(receiver, PushReceiver)
                and receiver.last_write <= quiet_since
                and session not in self._held
                and session not in self._to_flush
            ):
                try:
                    receiver.heartbeat(session)
                except Exception:
                    # One broken connection must not stop the sweep (and every other session's heart-beats).
                    log.exception("SockJS session %s: the heart-beat failed", session.id)
                    self.interrupt(session)

    def spawn(self, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``coroutine`` in a task the manager keeps until it is done (``stop`` waits for it)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
