"""The session manager: an endpoint's SockJS sessions by owner and id, their receivers, timers and hooks.

The session itself (its state and queue) is ``app.transport.session``; the requests carrying it are
``app.transport.receiver``. What the manager guarantees:

* **A session belongs to its owner.** ``SessionManager.identify`` names who a request comes from (for Warren, the
  sign-in of its cookie); sessions are registered under owner and id, so a request finds only its own owner's
  sessions. Someone else using the same id meets what an unused id gives (a new session of their own, or 404
  for a send), and the owner's session is neither read nor written by them. WebSocket sessions are registered
  under an owner no request can have, so no URL reaches them.
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
* **The application hears of the end exactly once** (``on_close``, in a task the manager keeps until done); a hook
  that raises is logged and does not break the transport.
* **Pushed receivers are written once per loop tick.** One callback per loop tick (``loop.call_soon``, one per
  manager) writes every marked session's frames, so what was queued in one tick leaves in one write. A session
  whose connection is over its high-water mark is skipped (its frames stay queued, counted by ``queued_bytes``)
  and written again once that connection drained. Their heart-beats come from the sweep, not a timer each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar, cast

from aiohttp import web

from .receiver import PushReceiver, Receiver, peer_gone
from .session import FrameKind, Pending, Session, SessionKey, SessionState

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How often receiving requests are checked for a client that went away without the handler noticing (at most;
#: the sweep also sends the heart-beats of pushed receivers, so it runs at least four times per heart-beat delay).
SWEEP_INTERVAL = 1.0
INTERRUPTED = (1002, "Connection interrupted")
#: The owner part of WebSocket sessions' keys: equal to no owner a request can have, so no URL reaches them.
_UNADDRESSABLE = object()


class SessionExists(Exception):
    """A session of this owner and id is registered already."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"SockJS session {session_id!r} exists already")


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
