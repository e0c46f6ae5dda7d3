"""A SockJS session: its state and the outgoing queue between the application and whichever request carries it.

Warren owns this code instead of using the ``sockjs`` package's ``Session``/``SessionManager`` because the
package's versions lose messages and leak sessions in ways a thin subclass cannot fix (measured against the
official sockjs-protocol suite and in Chromium; see ``app/transport/__init__.py`` for the list). The requests that
carry a session are its receivers (``app.transport.receiver``); the sessions of an endpoint, their timers and the
application's hooks are the manager's (``app.transport.manager``). What this module guarantees:

* **A frame leaves the queue only once it was written.** A transport *peeks* at the next frame
  (``Session.next_frame``), writes it, and only then ``commit``\\ s it. A request that finds its client gone does
  not take anything: the package popped the frame first, so a message sent just after a client went away was
  written into a dead socket and lost. A polling answer counts as delivered only when the next poll arrives
  (a polling client asks again only after handling the answer); until then its messages stay with the session.
* **The order of the queue is the order on the wire**: the open frame first, then the messages in the order the
  application queued them, then the application's close frame. A session that ended writes only its close frame
  (what was still queued is ``take_undelivered``'s).
* **An end is final and reported once.** ``mark_ended`` starts the application's ``on_close`` once, however often
  it is called; from then on every request gets the close frame. The application can take back what it attached
  to the messages that were queued but never written, or written in a polling answer never confirmed
  (``take_undelivered``) — for Warren, the envelopes of chat messages, to hand back to the hub — and after that
  ``send`` refuses, so nothing queued later is lost silently. What was written (and confirmed) is never handed
  back, and a message queued with nothing attached (a receipt, an error) is never handed back either.
* **The queue is measured** (``queued_bytes``): the application decides how much a slow client may hold.
* **Nothing waits without a reason.** The asyncio objects a waiter needs (``wait_for_frames``, ``wait_flushed``)
  are made when someone waits, not per session: an idle session is a few plain objects, which keeps memory and
  the work of the garbage collector's full collections proportional to what is actually happening.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import framing

if TYPE_CHECKING:
    from .receiver import Receiver

GO_AWAY = (3000, "Go away!")
#: Where a session is registered: its owner (``SessionManager.identify``) and its id. Two owners may use one id
#: without ever meeting: each request finds only the session of its own owner.
SessionKey = tuple[Hashable, str]


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


class _Returnables:
    """What the application attached to messages the client may not have (``Session.send``'s ``returnable``).

    Exists only while a queued or unconfirmed message has something attached: a session that never carries any,
    or whose messages were all written and confirmed, holds None instead (an idle session does not grow).
    """

    __slots__ = ("in_flight", "queued")

    def __init__(self, queued_messages: int) -> None:
        #: One entry per queued message (``Session._messages``, same order and length), None where nothing is
        #: attached: committing a frame slices both lists alike.
        self.queued: list[object | None] = [None] * queued_messages
        #: Those of the last polling answer, until the client's next poll shows it read them.
        self.in_flight: list[object] = []


class Session:
    """One SockJS session: its state and the frames waiting for a receiving request."""

    __slots__ = (
        "_close",
        "_ended",
        "_expiry",
        "_flushed",
        "_messages",
        "_open_pending",
        "_queued",
        "_returnables",
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
        #: What is attached to queued messages and to those of the last polling answer (None: nothing is, the
        #: usual case between messages; see ``_Returnables``).
        self._returnables: _Returnables | None = None
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

    def send(self, message: str, returnable: object | None = None) -> bool:
        """Queue one message; False (and nothing queued) once the application closed the session, or once it
        ended and its undelivered messages were taken (``take_undelivered``).

        ``returnable`` is what ``take_undelivered`` gives back if the client may not have the message (for
        Warren, the envelope of a chat message); the session never looks at it. None: nothing to give back.

        Between the end of a session and ``take_undelivered`` messages are still accepted: they join the
        undelivered ones in order, so the application can hand all of them on in the order they were sent.
        """
        if self.state is not SessionState.OPEN and not (self.state is SessionState.CLOSED and not self._sealed):
            return False
        returnables = self._returnables
        if returnable is not None:
            if returnables is None:
                returnables = self._returnables = _Returnables(len(self._messages))
            returnables.queued.append(returnable)
        elif returnables is not None:
            returnables.queued.append(None)
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

    def take_undelivered(self) -> Sequence[object]:
        """Empty the queue and return what was attached (``send``'s ``returnable``) to the messages the client may
        not have: those of the last polling answer it never confirmed by polling again, then those never written,
        in the order they were queued. From now on ``send`` refuses.

        Meant for ``on_close``: the session has ended, so nothing queued can reach the client any more.
        """
        self._sealed = True
        returnables = self._returnables
        self._returnables = None
        self._messages = []
        self._queued = 0
        if returnables is None:
            return []
        return returnables.in_flight + [item for item in returnables.queued if item is not None]

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
            count = pending.count
            if count == len(self._messages):
                taken, self._messages = self._messages, []
            else:
                taken = self._messages[:count]
                del self._messages[:count]
            self._queued -= sum(map(len, taken))
            returnables = self._returnables
            if returnables is not None:
                if count == len(returnables.queued):
                    written, returnables.queued = returnables.queued, []
                else:
                    written = returnables.queued[:count]
                    del returnables.queued[:count]
                if await_next_poll:
                    returnables.in_flight.extend(item for item in written if item is not None)
                if not returnables.queued and not returnables.in_flight:
                    self._returnables = None
        if not self._open_pending and not self._messages:
            self._set_flushed()

    def polled(self) -> None:
        """A new receiving request arrived: the client handled everything written before it."""
        returnables = self._returnables
        if returnables is not None and returnables.in_flight:
            if returnables.queued:
                returnables.in_flight = []
            else:
                self._returnables = None

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
