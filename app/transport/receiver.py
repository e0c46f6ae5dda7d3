"""Receivers: the request that currently carries a SockJS session's frames to its client.

What this module guarantees:

* **A receiver is compared by identity**, so a request that was replaced (or whose session was released) knows it
  is stale and writes nothing more.
* **A request whose client went away is recognised** (``peer_gone``) even though aiohttp ≥ 3.9 no longer cancels
  its handler: its transport is closed or closing. The manager checks it when the next request for the session
  arrives, before any write, and in its sweep.
* **Pushed receivers cost no task and no timer.** A ``PushReceiver`` (a WebSocket) has nothing waiting for its
  frames: queuing a frame asks the manager for a flush in the next loop tick, which writes whatever was queued in
  that tick at once; heart-beats come from the manager's sweep.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .manager import SessionManager
    from .session import Session


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
