"""What the parts of a SockJS endpoint share: its options (frozen: every request sees one set) and its manager.

``app.transport.endpoint`` routes; the HTTP transports (``receiving``, ``sending``) and the WebSocket handler
(``websocket_handler``) are each an ``EndpointPart`` of the same manager and options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.pacing import Pacer
from .iframe import SockJSClients
from .manager import SessionManager
from .policy import OriginPolicy

#: The default: the server's own origin and no other.
_OWN_ORIGIN_ONLY = OriginPolicy()


@dataclass(frozen=True)
class EndpointOptions:
    #: The sockjs-client releases the iframe page runs, each for the pages of that release.
    sockjs_clients: SockJSClients
    origins: OriginPolicy = _OWN_ORIGIN_ONLY
    #: Report ``cookie_needed`` and set ``JSESSIONID`` (sticky load balancers).
    cookie_needed: bool = True
    websocket: bool = True
    #: Bytes a streaming response carries before it ends and the client opens the next one (frees memory).
    response_limit: int = 128 * 1024
    #: The largest WebSocket message accepted from a client.
    max_websocket_message: int = 4 * 1024 * 1024
    #: Opening a session (a WebSocket upgrade, the first poll) passes this gate when set (``app.core.pacing``).
    pacer: Pacer | None = None
    #: The status of a refused send body (broken JSON, not an array of strings): 400 on Warren (a client error,
    #: never a server error); the SockJS protocol suite expects its 500 (``app.conformance``).
    bad_payload_status: int = 400


@dataclass(frozen=True)
class EndpointPart:
    """Serves some of one endpoint's URLs, for the sessions of ``manager``, as ``options`` say."""

    manager: SessionManager[Any]
    options: EndpointOptions
