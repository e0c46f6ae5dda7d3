"""The SockJS endpoint (``/chat-websocket``): one STOMP connection per SockJS session, on every transport.

Each SockJS session carries one STOMP connection, and belongs to the sign-in whose cookie opened it
(``app.auth.sessions.SignIn``: user, session generation, sign-in id): every later request of the session must
carry a cookie of that same sign-in, or it never finds the session (``SessionManager.identify``). Pages of other
origins, and other sites' navigations, never get that far: the endpoint refuses them (``app.transport.endpoint``).

* **Nothing anonymous holds a node.** A session opened without a valid sign-in gets STOMP ``ERROR
  not-signed-in`` and closes (4001) as it opens, without waiting for a frame. A user has at most
  ``MAX_SESSIONS_PER_USER`` sessions on the node, counted as they open (subscribed or not): the next one gets
  ``ERROR too-many-sessions`` (4009).
* **Sign-ins are checked while connections stay open.** Once a second the manager's sweep looks at every open
  session (one pass, no timer per session; the user directory rereads its file at most once a second): a sign-in
  whose generation changed (``users logout``, a password change, ``users remove``) or that is older than
  ``SESSION_MAX_AGE`` ends with ``ERROR not-signed-in`` (4001); a session that has not sent ``CONNECT`` within
  ``CONNECT_TIMEOUT`` ends with ``ERROR connect-timeout`` (4002).

What Warren adds on top of the generic SockJS layer (``endpoint``, ``manager`` and ``session`` in this package):

* **Bounded outgoing queue.** ``Session.queued_bytes`` measures what a client has not fetched yet; the STOMP layer
  closes a session past ``SEND_BUFFER_BYTES`` as a slow consumer (close code 4008).
* **Undelivered chat messages go back to the hub.** When a session ends with messages the client may not have
  — queued for a polling client that went away between two polls, in the answer to its last poll (it never
  polled again), behind a request aborted mid-way, behind a WebSocket that dropped — the chat messages among
  them (``MESSAGE`` frames of ``/user/topic/reply`` in ``ack:auto`` mode, each queued with its envelope beside
  it, so nothing is parsed back) are handed back to the hub *before* the connection leaves it: the hub gives
  each to the user's other connections on this node, or to the mailbox. Without this, ``ack:auto`` mail queued
  in a session whose client vanished was lost at expiry.
  Messages in a client-ack mode need nothing here: the STOMP layer returns every unacknowledged one.
  What can still be lost in ``ack:auto``: a message written to a streaming or WebSocket connection the client
  abandoned before the server could tell (no FIN seen yet) — at-most-once past the write, as ``ack:auto``
  means. A message handed back that the client did read comes again with the same id; clients drop duplicates
  by id, and those that must not lose anything use ``ack:client-individual``.
* **Shutdown.** ``close_all`` tells every client to reconnect (4012), takes every user offline at once
  (``Hub.leave_all``), gives receivers a moment to write the close, and ends every session, so mail nobody fetched
  reaches a mailbox before the backplane closes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from ..auth.sessions import SignIn, current_sign_in, forget_session
from ..auth.users import UserDirectory
from ..config import Settings
from ..core.envelope import Envelope
from ..core.errors import TooManySessions
from ..core.hub import Hub
from ..stomp.frames import encode
from ..stomp.protocol import CloseCode, StompConnection
from .endpoint import EndpointOptions, OriginPolicy, SockJSEndpoint
from .file_limit import raise_open_file_limit
from .iframe import SockJSClients
from .manager import SessionManager
from .session import Session, SessionState

log = logging.getLogger(__name__)

PREFIX = "/chat-websocket"
#: How long shutdown waits for connected receivers to write the "reconnect" close frame.
CLOSE_FLUSH_SECONDS = 1.0
#: How often sign-ins (revocation, expiry) and the CONNECT deadline are checked, at most.
POLICY_SWEEP_SECONDS = 1.0


class WarrenSession(Session):
    """A SockJS session carrying one STOMP connection; it is that connection's ``Wire``."""

    __slots__ = ("opened_at", "stomp")

    def __init__(self, session_id: str, transport_name: str) -> None:
        super().__init__(session_id, transport_name)
        self.stomp: StompConnection | None = None
        #: ``time.monotonic()`` when the session opened: the STOMP CONNECT deadline counts from here.
        self.opened_at = 0.0

    def send_text(self, text: str, envelope: Envelope | None = None) -> bool:
        return self.send(text, envelope)

    def take_undelivered(self) -> list[Envelope]:
        """The envelopes of the chat messages the client may not have, in order: only envelopes are ever attached
        to this session's messages (``send_text``), so receipts, errors and client-ack frames never come back."""
        return [item for item in super().take_undelivered() if isinstance(item, Envelope)]


class WarrenSessionManager(SessionManager[WarrenSession]):
    def __init__(self, app: web.Application, hub: Hub, directory: UserDirectory, settings: Settings) -> None:
        super().__init__(
            heartbeat_delay=settings.heartbeat_seconds,
            disconnect_delay=settings.disconnect_delay_seconds,
            session_factory=WarrenSession,
        )
        self.app = app
        self.hub = hub
        self.directory = directory
        self.settings = settings
        self.accepting = True
        #: Each user's sessions on this node that carry a STOMP connection (what ``MAX_SESSIONS_PER_USER`` counts).
        self._by_user: dict[str, set[WarrenSession]] = {}
        self._policy_due = 0.0

    def open_sessions(self) -> list[WarrenSession]:
        """Sessions with a STOMP connection that are neither closing nor closed."""
        return [
            session
            for session in self.sessions.values()
            if session.stomp is not None and session.state is SessionState.OPEN
        ]

    def count_by_transport(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for session in self.open_sessions():
            counts[session.transport_name] = counts.get(session.transport_name, 0) + 1
        return counts

    async def identify(self, request: web.Request) -> SignIn | None:
        sign_in = await current_sign_in(request, self.directory)
        # A WebSocket's request would otherwise hold the decoded cookie session for the life of the connection.
        forget_session(request)
        return sign_in

    async def on_open(self, session: WarrenSession, request: web.Request) -> None:
        if not self.accepting:
            session.close(CloseCode.SHUTTING_DOWN, "server shutting down, reconnect")
            return
        sign_in = session.owner
        if not isinstance(sign_in, SignIn):
            # Nothing anonymous holds a node: refused at once, without waiting for a CONNECT.
            refuse(session, CloseCode.NOT_SIGNED_IN, "not-signed-in", "sign in first: POST /login, then reconnect")
            return
        user = sign_in.user
        sessions = self._by_user.setdefault(user, set())
        if len(sessions) >= self.settings.max_sessions_per_user:
            refused = TooManySessions(user, self.settings.max_sessions_per_user)
            refuse(session, CloseCode.REFUSED, refused.reason, str(refused))
            return
        sessions.add(session)
        session.opened_at = time.monotonic()
        session.stomp = StompConnection(
            self.hub,
            user,
            session,
            # The STOMP body is JSON around the content: escapes can grow it up to six-fold.
            max_frame_body=self.settings.max_message_bytes * 6 + 1024,
            send_buffer_bytes=self.settings.send_buffer_bytes,
            transport=session.transport_name,
        )
        log.debug("session %s opened by %s over %s", session.id, user, session.transport_name)

    async def on_message(self, session: WarrenSession, message: str) -> None:
        if session.stomp is not None:
            await session.stomp.on_text(message)

    async def on_close(self, session: WarrenSession) -> None:
        stomp = session.stomp
        if stomp is None:
            return
        sessions = self._by_user.get(stomp.user)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[stomp.user]
        # Hand back what the client never got while the connection still counts as online. Messages pushed
        # between the end of the session and this call were queued behind the rest, so all go back in order;
        # from here on the session refuses writes and the hub gives anything newer to the user's other
        # connections or to the mailbox. Only then does the user leave the hub.
        returned = session.take_undelivered()
        for envelope in returned:
            await self.hub.deliver(envelope)
        if returned:
            log.info("%d undelivered message(s) of %s handed back to the hub", len(returned), stomp.user)
        await stomp.on_close()

    async def close_all(self) -> None:
        """Shutdown: refuse new sessions, tell every client to reconnect elsewhere, leave the hub."""
        self.accepting = False
        sessions = self.open_sessions()
        for session in sessions:
            session.close(CloseCode.SHUTTING_DOWN, "server shutting down, reconnect")
        # Every user leaves at once (one unbind of everyone, one marker), not one session after another.
        await self.hub.leave_all()
        for session in sessions:
            assert session.stomp is not None
            await session.stomp.shutdown()
        # Let connected receivers write the close frames (and what was queued before them)...
        waits = [asyncio.ensure_future(session.wait_flushed()) for session in sessions]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=CLOSE_FLUSH_SECONDS)
            for waiter in pending:
                waiter.cancel()
        # ...then end every session: mail no client came to fetch goes back to the hub while the backplane is up.
        await self.end_all()


    # -- what a sign-in allows, checked once a second for every session ---------------------------------------

    def sweep(self) -> None:
        super().sweep()
        now = time.monotonic()
        if now >= self._policy_due:
            self._policy_due = now + POLICY_SWEEP_SECONDS
            self.enforce_sign_ins(now)

    def enforce_sign_ins(self, now: float) -> None:
        """End every session whose sign-in was revoked (sign-out everywhere, password change, removal: the
        user's session generation changed) or expired (``SESSION_MAX_AGE``), and every one that has not sent
        STOMP CONNECT within ``CONNECT_TIMEOUT``. Each ends with a STOMP ERROR, then the SockJS close frame.

        One pass over the sessions, part of the manager's sweep (no timer per session); the user directory is
        asked once per user per pass, and rereads its file at most once a second.
        """
        generations: dict[str, int | None] = {}
        expired_before = int(time.time()) - self.settings.session_max_age
        connect_deadline = now - self.settings.connect_timeout_seconds
        for session in list(self.sessions.values()):
            if session.stomp is None:
                continue
            if session.state is not SessionState.OPEN:
                continue
            sign_in = session.owner
            assert isinstance(sign_in, SignIn)
            user = sign_in.user
            if user not in generations:
                generations[user] = self.directory.generation(user)
            if generations[user] != sign_in.generation:
                self._end_with_error(
                    session,
                    CloseCode.NOT_SIGNED_IN,
                    "not-signed-in",
                    "your sign-in was ended (signed out everywhere, password changed or account removed): sign in "
                    "again",
                    revoked=True,
                )
            elif sign_in.signed_in_at <= expired_before:
                self._end_with_error(
                    session,
                    CloseCode.NOT_SIGNED_IN,
                    "not-signed-in",
                    "your sign-in has expired: sign in again",
                    revoked=True,
                )
            elif session.stomp.version is None and session.opened_at <= connect_deadline:
                self._end_with_error(
                    session,
                    CloseCode.PROTOCOL_ERROR,
                    "connect-timeout",
                    f"no STOMP CONNECT within {self.settings.connect_timeout_seconds:g} s",
                    revoked=False,
                )

    def _end_with_error(
        self, session: WarrenSession, code: CloseCode, reason: str, detail: str, *, revoked: bool
    ) -> None:
        """``revoked``: the owner's cookie is no longer valid, so no request can reach the session any more."""
        stomp = session.stomp
        assert stomp is not None
        log.info("closing %s's %s session: %s", stomp.user, session.transport_name, detail)
        refuse(session, code, reason, detail, version=stomp.version)
        if revoked and session.receiver is None:
            # Between two polls: no request of the owner's can fetch the error or what was queued before it, so
            # the session ends now and its undelivered mail goes back to the hub at once, not at expiry.
            self.end(session)
        # Off the hub now: mail arriving from here on goes to the user's other connections or the mailbox.
        self.spawn(stomp.on_close())


def refuse(session: Session, code: int, reason: str, detail: str, *, version: str | None = None) -> None:
    """Queue a STOMP ERROR (``message:<reason>``, ``detail`` as its body) and close the session with ``code``:
    the client reads the error, then the SockJS close frame. Nothing queued after it reaches the client."""
    headers = {"message": reason, "content-type": "text/plain"}
    session.send(encode("ERROR", headers, detail.encode(), version=version or "1.2"))
    session.close(code, reason)


def add_sockjs_endpoint(app: web.Application, manager: WarrenSessionManager) -> None:
    settings = manager.settings
    options = EndpointOptions(
        sockjs_clients=SockJSClients.installed(settings.web_root / "node_modules", settings.sockjs_client_url),
        origins=OriginPolicy(settings.allowed_origins),
        cookie_needed=True,
        # One STOMP SEND of the largest message, its JSON escapes escaped again by SockJS, plus headers.
        max_websocket_message=settings.max_message_bytes * 8 + 64 * 1024,
        pacer=manager.hub.pacer,
    )
    SockJSEndpoint(manager, options).add_routes(app.router, PREFIX)
    app.on_startup.append(_raise_open_file_limit)
    app.on_cleanup.append(manager.stop)


async def _raise_open_file_limit(_app: web.Application) -> None:
    raise_open_file_limit()
