"""``python -m app.conformance --port 8081``: Warren's SockJS layer with the services the official suite expects.

The SockJS protocol suite (https://github.com/sockjs/sockjs-protocol, ``sockjs-protocol.py``) tests a server
through four services; this module serves them on Warren's own SockJS layer (``app.transport``) with echo
handlers instead of STOMP:

=========================== ====================================================
``/echo``                   sends every message back
``/close``                  closes each session as soon as it opens (3000 "Go away!")
``/disabled_websocket_echo`` ``/echo`` with the WebSocket transports switched off
``/cookie_needed_echo``     ``/echo`` (every service sets ``JSESSIONID``, as Warren does)
=========================== ====================================================

Heart-beat and disconnect delays come from the environment like Warren's (``SOCKJS_HEARTBEAT``,
``SOCKJS_DISCONNECT_DELAY``). Two settings differ from a Warren node, because the suite requires them: any
origin is accepted (it sends ``Origin: test``), and streaming responses end after 4096 bytes instead of 128 KiB.
Never expose this server: it echoes to any web page.

Running the suite (it is Python 2; keep it outside this repository)::

    python -m app.conformance --port 8081 &
    git clone https://github.com/sockjs/sockjs-protocol && cd sockjs-protocol
    python2 -m pip install --target deps unittest2 'websocket-client==0.59.0' 'ws4py==0.5.1'
    SOCKJS_URL=http://127.0.0.1:8081 PYTHONPATH=deps python2 sockjs-protocol.py

Expected: 68 of 69 pass; ``Websocket.test_haproxy`` fails because it speaks hixie-76, a 2010 WebSocket draft
that no browser uses and aiohttp does not implement.
"""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from .config import Settings
from .core.errors import ConfigurationError
from .transport.endpoint import EndpointOptions, OriginPolicy, SockJSEndpoint
from .transport.iframe import SockJSClients
from .transport.manager import SessionManager
from .transport.session import Session

#: What the suite expects a test server to use instead of the default 128 KiB.
SUITE_RESPONSE_LIMIT = 4096
#: The session manager of each service, by prefix (for tests that look inside).
MANAGERS = web.AppKey("sockjs_managers", dict[str, SessionManager[Session]])


class EchoManager(SessionManager[Session]):
    async def on_message(self, session: Session, message: str) -> None:
        session.send(message)


class CloseManager(SessionManager[Session]):
    async def on_open(self, session: Session, request: web.Request) -> None:
        session.close()


def create_conformance_app(settings: Settings) -> web.Application:
    app = web.Application()
    def timed(kind: type[SessionManager[Session]]) -> SessionManager[Session]:
        return kind(heartbeat_delay=settings.heartbeat_seconds, disconnect_delay=settings.disconnect_delay_seconds)

    services: list[tuple[str, SessionManager[Session], bool]] = [
        ("/echo", timed(EchoManager), True),
        ("/close", timed(CloseManager), True),
        ("/disabled_websocket_echo", timed(EchoManager), False),
        ("/cookie_needed_echo", timed(EchoManager), True),
    ]
    app[MANAGERS] = {prefix: manager for prefix, manager, _websocket in services}
    # Every service serves its iframe page the sockjs-client release of the page that frames it, as Warren does.
    clients = SockJSClients.installed(settings.web_root / "node_modules", settings.sockjs_client_url)
    for prefix, manager, websocket in services:
        options = EndpointOptions(
            sockjs_clients=clients,
            origins=OriginPolicy(any_origin=True),
            cookie_needed=True,
            websocket=websocket,
            response_limit=SUITE_RESPONSE_LIMIT,
            bad_payload_status=500,
            max_websocket_message=settings.max_message_bytes * 8 + 64 * 1024,
        )
        SockJSEndpoint(manager, options).add_routes(app.router, prefix)
        app.on_cleanup.append(manager.stop)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"SockJS conformance services on http://{args.host}:{args.port}/echo (and /close, …)", file=sys.stderr)
    web.run_app(create_conformance_app(settings), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
