"""``create_app(settings)``: wiring and lifecycle.

Start: the backplane connects and declares its topology, then the node serves (``/readyz`` turns 200).
Stop (SIGTERM, as a Heroku dyno restart sends): the listening socket closes first, then every SockJS session is
told to reconnect (close code 4012) and its user leaves the hub — unbinding them, so mail sent from now on goes to
mailboxes or to the nodes they reconnect to — then the backplane closes. The whole sequence is bounded by
``SHUTDOWN_TIMEOUT`` (default 25 s, inside Heroku's 30 s grace): one budget that every step takes its share of.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from . import api
from .auth.sessions import session_middleware_for
from .auth.users import UserDirectory
from .backplane import create_backplane
from .bodies import BODY_BUDGET, BodyBudget, body_middleware
from .config import Settings
from .core.abc import Backplane
from .core.hub import Hub
from .keys import BACKPLANE, DIRECTORY, HUB, SETTINGS, SOCKJS
from .metrics import add_metrics
from .transport.sockjs import WarrenSessionManager, add_sockjs_endpoint

log = logging.getLogger(__name__)

_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(
    settings: Settings,
    *,
    backplane: Backplane | None = None,
    directory: UserDirectory | None = None,
    legacy_page_dir: Path | None = None,
) -> web.Application:
    directory = directory or UserDirectory(settings.users_file)
    backplane = backplane or create_backplane(settings)
    hub = Hub(
        backplane,
        directory,
        max_message_bytes=settings.max_message_bytes,
        message_rate=settings.message_rate,
        message_burst=settings.message_burst,
        max_sessions_per_user=settings.max_sessions_per_user,
        connection_message_rate=settings.connection_message_rate,
        connection_message_burst=settings.connection_message_burst,
    )

    # Requests carry at most one message plus form overhead.
    max_body = max(1024 * 1024, settings.max_message_bytes * 6 + 64 * 1024)
    body_budget = BodyBudget(settings.request_body_budget)
    app = web.Application(
        middlewares=[
            session_middleware_for(settings.secret_keys, settings.session_max_age),
            api.origin_middleware,
            # Innermost: requests refused on their headers (origin) never have their bodies read.
            body_middleware(body_budget, timeout=settings.request_body_timeout, max_size=max_body),
        ],
        client_max_size=max_body,
    )
    app[BODY_BUDGET] = body_budget
    app[SETTINGS] = settings
    app[DIRECTORY] = directory
    app[BACKPLANE] = backplane
    app[HUB] = hub
    manager = WarrenSessionManager(app, hub, directory, settings)
    app[SOCKJS] = manager

    api.add_routes(app)
    add_sockjs_endpoint(app, manager)
    add_metrics(app)
    _add_web_routes(app, settings.web_root, legacy_page_dir)

    app.on_startup.append(_start_backplane)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_stop_backplane)
    app.on_response_prepare.append(_security_headers)
    return app


#: The page's own files under /static/, and the npm files the pages load under /vendor/ (dist folders only:
#: nothing else in node_modules is served).
PAGE_FILES = ("app.js", "style.css")
VENDOR_DIRS = ("sockjs-client/dist", "@stomp/stompjs/bundles", "stompjs/lib", "jquery/dist")


def _add_web_routes(app: web.Application, web_root: Path, legacy_page_dir: Path | None) -> None:
    index = web_root / "index.html"

    async def page(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(index, headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    for name in PAGE_FILES:
        app.router.add_get(f"/static/{name}", _file_handler(web_root / name))
    for folder in VENDOR_DIRS:
        path = web_root / "node_modules" / folder
        if path.is_dir():
            app.router.add_static(f"/vendor/{folder}/", path, show_index=False, follow_symlinks=False)
        else:
            log.warning("web/node_modules/%s is missing: run `make deps` (npm install in web/)", folder)
    if legacy_page_dir is not None:
        app.router.add_static("/legacy/", legacy_page_dir, show_index=False)


def _file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return serve


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if response.status == 101:
        # A WebSocket upgrade: no document for these to protect, and the response keeps its headers for as long
        # as the connection lasts.
        return
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # SockJS iframe transports frame pages of this origin only.
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")


async def _start_backplane(app: web.Application) -> None:
    settings = app[SETTINGS]
    await app[BACKPLANE].start(app[HUB])
    log.info(
        "node %s ready on port %s (backplane %s, event loop %s)",
        settings.node_id,
        settings.port,
        app[BACKPLANE].name,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
    )
    if not app[DIRECTORY].names():
        log.warning(
            "no users yet in %s: add one with `python -m app users add NAME` (or `make user NAME=alice`)",
            settings.users_file,
        )


#: When the shutdown must be over (event loop time): set when it begins, read by each of its steps.
_SHUTDOWN_DEADLINE = web.AppKey("shutdown_deadline", float)


def request_grace(settings: Settings) -> float:
    """The part of ``SHUTDOWN_TIMEOUT`` aiohttp waits for requests still running before cancelling them."""
    return min(5.0, settings.shutdown_timeout_seconds * 0.2)


async def _drain(app: web.Application) -> None:
    # One budget for the whole shutdown, as uvicorn's Server.shutdown: aiohttp has stopped accepting; here every
    # client is told to reconnect and every user leaves at once; then aiohttp waits ``request_grace`` for running
    # requests and cancels them; then the backplane hands back what was routed here in what is left.
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.shutdown_timeout_seconds
    app[_SHUTDOWN_DEADLINE] = deadline
    users = len(app[HUB].online_users())
    log.info("node %s draining: closing SockJS sessions (%d users online)", settings.node_id, users)
    try:
        # A fifth of the budget stays for the backplane's hand-back.
        async with asyncio.timeout_at(deadline - request_grace(settings) - settings.shutdown_timeout_seconds * 0.2):
            await app[SOCKJS].close_all()
    except TimeoutError:
        log.warning("node %s: sessions still open at the end of their share of SHUTDOWN_TIMEOUT", settings.node_id)
    else:
        log.info(
            "node %s: every session closed and %d users unbound in %.2f s",
            settings.node_id,
            users,
            loop.time() - deadline + settings.shutdown_timeout_seconds,
        )


async def _stop_backplane(app: web.Application) -> None:
    deadline = app.get(_SHUTDOWN_DEADLINE)
    within = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
    await app[BACKPLANE].close(within=within)
    log.info("node %s stopped", app[SETTINGS].node_id)
