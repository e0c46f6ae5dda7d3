"""The SockJS endpoint (``/chat-websocket``): the ``sockjs`` package, configured and corrected for Warren.

Each SockJS session carries one STOMP connection. The user is read from the cookie session once, when the SockJS
session opens (the request that opens it carries the cookie on every transport, same-origin iframes included);
an anonymous session still speaks STOMP but its CONNECT is answered with ERROR and the session closes.

Corrections to the package, each needed for a guarantee:

* **Bounded outgoing queue.** The package's per-session queue is unbounded; ``WarrenSession`` counts the bytes
  queued and the STOMP layer closes a session past ``SEND_BUFFER_BYTES`` as a slow consumer (close code 4008).
* **Sessions of vanished clients expire.** The package never sets an expiry when a polling or streaming request
  ends, so a client that stops polling would stay "online" forever and its mail would go nowhere. A released
  session now expires after ``disconnect_delay`` unless the client polls again, and the STOMP connection leaves
  the hub then.
* **A closed WebSocket leaves at once.** A WebSocket session cannot be resumed, so when its socket ends the STOMP
  connection leaves the hub immediately instead of after the package's disconnect delay: mail sent in that window
  goes to the mailbox instead of into a dead socket.
* **No CDN.** The iframe page loads sockjs-client from this server (``/vendor/...``), the same file as the page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import sockjs
from aiohttp import web
from sockjs import MsgType, SessionManager, SessionState, SockjsMessage
from sockjs.protocol import Frame

from ..auth.origins import origin_allowed
from ..auth.sessions import session_user
from ..auth.users import UserDirectory
from ..config import Settings
from ..core.hub import Hub
from ..stomp.protocol import CloseCode, StompConnection

log = logging.getLogger(__name__)

PREFIX = "/chat-websocket"
SOCKJS_CLIENT_PATH = "/vendor/sockjs-client/dist/sockjs.min.js"
_WEBSOCKET_TRANSPORTS = frozenset({"websocket", "websocket-raw"})


class WarrenSession(sockjs.Session):  # type: ignore[misc]
    """A SockJS session that carries one STOMP connection and counts its queued bytes."""

    def __init__(self, session_id: str, **kwargs: Any) -> None:
        super().__init__(session_id, **kwargs)
        self.stomp: StompConnection | None = None
        self.transport_name = ""
        self._queued = 0

    # Wire (what the STOMP connection writes through)
    def send_text(self, text: str) -> bool:
        return bool(self.send(text))

    def queued_bytes(self) -> int:
        return self._queued

    def feed(self, frame: Frame, data: Any) -> None:
        if frame is Frame.MESSAGE:
            self._queued += len(data)
        super().feed(frame, data)

    async def get_frame(self, pack: bool = True) -> tuple[Frame, Any]:
        frame, payload = await super().get_frame(pack=False)
        if frame is Frame.MESSAGE:
            self._queued -= sum(len(message) for message in payload)
        if pack:
            if frame is Frame.CLOSE:
                return frame, sockjs.protocol.close_frame(*payload)
            if frame is Frame.MESSAGE:
                return frame, sockjs.protocol.messages_frame(payload)
        return frame, payload

    def acquire(self, request: web.Request) -> bool:
        self.transport_name = request.get("sockjs_transport_name", "websocket-raw")
        return bool(super().acquire(request))

    def release(self) -> None:
        super().release()
        # Start the disconnect countdown; the next poll (acquire) cancels it.
        self.expire()


class WarrenSessionManager(SessionManager):  # type: ignore[misc]
    def __init__(self, app: web.Application, hub: Hub, directory: UserDirectory, settings: Settings) -> None:
        super().__init__(
            "chat",
            app,
            self._on_event,
            heartbeat_delay=settings.heartbeat_seconds,
            disconnect_delay=settings.disconnect_delay_seconds,
        )
        self.factory = WarrenSession
        self.hub = hub
        self.directory = directory
        self.settings = settings
        self.accepting = True

    async def release(self, session: WarrenSession) -> None:
        await super().release(session)
        if session.transport_name in _WEBSOCKET_TRANSPORTS:
            await self.remote_close(session)

    def open_sessions(self) -> Iterable[WarrenSession]:
        return [s for s in self.sessions.values() if s.stomp is not None and s.state is SessionState.OPEN]

    def count_by_transport(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for session in self.open_sessions():
            counts[session.transport_name] = counts.get(session.transport_name, 0) + 1
        return counts

    async def _on_event(self, _manager: SessionManager, session: WarrenSession, message: SockjsMessage) -> None:
        if message.type is MsgType.MESSAGE:
            if session.stomp is None:
                return
            if not isinstance(message.data, str):
                session.stomp._fail(CloseCode.PROTOCOL_ERROR, "malformed-frame", "SockJS messages must be strings")
                return
            await session.stomp.on_text(message.data)
        elif message.type is MsgType.OPEN:
            await self._open(session)
        elif message.type in (MsgType.CLOSE, MsgType.CLOSED):
            if session.stomp is not None:
                await session.stomp.on_close()

    async def _open(self, session: WarrenSession) -> None:
        request = session.request
        if not self.accepting:
            session.close(CloseCode.SHUTTING_DOWN, "server shutting down, reconnect")
            return
        if request is None or not origin_allowed(request, self.settings.allowed_origins):
            session.close(CloseCode.NOT_SIGNED_IN, "origin not allowed")
            return
        user = await session_user(request, self.directory)
        session.stomp = StompConnection(
            self.hub,
            user,
            session,
            # The STOMP body is JSON around the content: escapes can grow it up to six-fold.
            max_frame_body=self.settings.max_message_bytes * 6 + 1024,
            send_buffer_bytes=self.settings.send_buffer_bytes,
            transport=session.transport_name,
        )
        log.debug("session %s opened by %s over %s", session.id, user or "anonymous", session.transport_name)

    async def close_all(self) -> None:
        """Shutdown: refuse new sessions, tell every client to reconnect elsewhere, leave the hub."""
        self.accepting = False
        sessions = list(self.open_sessions())
        for session in sessions:
            assert session.stomp is not None
            await session.stomp.shutdown()
        # Let transports write the close frames before the sessions are dropped.
        for _ in range(20):
            if not any(s._queued for s in sessions):
                break
            await asyncio.sleep(0.05)


def add_sockjs_endpoint(app: web.Application, manager: WarrenSessionManager) -> None:
    sockjs.add_endpoint(
        app,
        manager.handler,
        name="chat",
        prefix=PREFIX,
        manager=manager,
        sockjs_cdn=SOCKJS_CLIENT_PATH,
        heartbeat_delay=manager.settings.heartbeat_seconds,
        disconnect_delay=manager.settings.disconnect_delay_seconds,
    )
