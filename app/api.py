"""HTTP routes: sign-in, the seed's ``/wsTemplate/*`` API (unchanged for old clients), the JSON API and health.

Every refusal is JSON ``{"error": <reason>, "message": <what to do>}`` with a status that says the same, except
on the seed's routes, whose old clients only look at the status and at ``{"code": ...}``. Every 429 and 503 says
when to come back (``Retry-After``). A body that is not the JSON or form a route expects — including JSON nested
too deeply for the parser — is a 400, never a 500.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .auth.addresses import client_address
from .auth.devices import DeviceCookies
from .auth.hashing import SignInBusy
from .auth.origins import origin_allowed
from .auth.sessions import end_session, session_user, start_session
from .auth.signin import MAX_PASSWORD_CHARS, SignIn
from .auth.throttle import SignInThrottled
from .core.abc import PublishResult
from .core.envelope import Envelope
from .core.errors import (
    BackplaneUnavailable,
    InvalidMessage,
    MailboxFull,
    MailboxShareFull,
    MessageTooLarge,
    RateLimited,
    ShuttingDown,
    UnknownUser,
    WarrenError,
)
from .keys import BACKPLANE, DIRECTORY, HUB, SETTINGS

#: Sign-in: throttles and the password worker pool (``app.auth.signin``), and the device cookies.
SIGN_IN: web.AppKey[SignIn] = web.AppKey("sign_in")
DEVICES: web.AppKey[DeviceCookies] = web.AppKey("devices")
#: Seconds a client is told to wait when the node is not ready (``/readyz`` 503).
NOT_READY_RETRY_AFTER = 5

log = logging.getLogger(__name__)

ADD_USER_HINT = "python -m app users add NAME"
PULL_MAX = 1000

_STATUS: dict[type[WarrenError], int] = {
    InvalidMessage: 400,
    MessageTooLarge: 413,
    UnknownUser: 404,
    MailboxFull: 507,
    MailboxShareFull: 507,
    BackplaneUnavailable: 503,
    ShuttingDown: 503,
    RateLimited: 429,
    SignInThrottled: 429,
    SignInBusy: 503,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(headers or {})
    if status in (429, 503):
        headers.setdefault("Retry-After", "1")
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def warren_error_response(exc: WarrenError) -> web.Response:
    status = _STATUS.get(type(exc), 400)
    headers = {}
    if isinstance(exc, ShuttingDown):
        headers["Retry-After"] = str(BackplaneUnavailable.retry_after)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return error_response(status, exc.reason, str(exc), headers)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse state-changing requests from pages of other origins (CSRF); see ``app.auth.origins``."""
    if request.method not in ("GET", "HEAD", "OPTIONS") and not request.path.startswith("/chat-websocket"):
        if not origin_allowed(request, request.app[SETTINGS].allowed_origins):
            return error_response(403, "origin-not-allowed", "requests from other sites are refused")
    return await handler(request)


async def _form_or_json(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError, LookupError, RecursionError):
            # LookupError: an unknown charset; RecursionError: JSON nested deeper than the parser can go.
            raise InvalidMessage("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidMessage("the body must be a JSON object")
        return data
    try:
        return dict(await request.post())
    except (ValueError, UnicodeDecodeError, LookupError):
        # LookupError: an unknown charset.
        raise InvalidMessage("the form is not valid") from None


async def _require_user(request: web.Request) -> str:
    user = await session_user(request, request.app[DIRECTORY])
    if user is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "not-signed-in", "message": "sign in first: POST /login"}),
            content_type="application/json",
        )
    return user


# -- sign-in ---------------------------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    try:
        data = await _form_or_json(request)
    except InvalidMessage as exc:
        return warren_error_response(exc)
    typed, password = data.get("username"), data.get("password")
    if not isinstance(typed, str) or not isinstance(password, str) or not typed or not password:
        return error_response(400, "invalid-message", "send a username and a password")
    if len(password) > MAX_PASSWORD_CHARS:
        return error_response(400, "invalid-message", f"a password has at most {MAX_PASSWORD_CHARS} characters")
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    devices = request.app[DEVICES]
    device = devices.read(request)
    try:
        # The same answer for an unknown user and a wrong password, after the same amount of work.
        name = await request.app[SIGN_IN].attempt(typed, password, address, device)
    except (SignInThrottled, SignInBusy) as exc:
        log.info("sign-in %s for %r from %s", exc.reason, typed[:64], address)
        return warren_error_response(exc)
    if name is None:
        log.info("sign-in refused for %r from %s", typed[:64], address)
        return error_response(401, "bad-credentials", "wrong username or password")
    await start_session(request, name, request.app[DIRECTORY].generation(name) or 0)
    log.info("%s signed in from %s", name, address)
    response = web.json_response({"user": name})
    devices.remember(request, response, device, name)
    return response


async def logout(request: web.Request) -> web.Response:
    await end_session(request)
    return web.json_response({"user": None})


async def me(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY]
    user = await session_user(request, directory)
    return web.json_response(
        {"user": user, "users_configured": len(directory.names()), "add_user_hint": ADD_USER_HINT}
    )


# -- the seed's API --------------------------------------------------------------------------------------------


def _refusals_answered(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Handler:
    """A route whose ``WarrenError`` refusals are answered as JSON with their status (``warren_error_response``)."""

    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except WarrenError as exc:
            return warren_error_response(exc)

    return answer


async def _send_from_body(
    request: web.Request, sender: str, fields: tuple[str, str], hint: str
) -> tuple[Envelope, PublishResult]:
    """Send the message whose receiver and content are the body's ``fields``, from ``sender`` (the session's user,
    never a body field); ``hint`` tells a client what to send instead when they are not both strings."""
    data = await _form_or_json(request)
    receiver, content = data.get(fields[0]), data.get(fields[1])
    if not isinstance(receiver, str) or not isinstance(content, str) or not receiver:
        raise InvalidMessage(hint)
    return await request.app[HUB].send(sender, receiver, content)


async def _pull_own_mail(request: web.Request) -> list[Envelope]:
    """The signed-in user's waiting mail (``PULL_MAX`` at most), removed as it is returned."""
    user = await _require_user(request)
    return await request.app[HUB].pull_mail(user, PULL_MAX)


@_refusals_answered
async def send_to_user(request: web.Request) -> web.Response:
    """``POST /wsTemplate/sendToUser`` (form ``receiver``, ``msg``); the sender is the session's user."""
    sender = await _require_user(request)
    envelope, result = await _send_from_body(
        request, sender, ("receiver", "msg"), "send the form fields receiver and msg"
    )
    return web.json_response({"code": "200", "id": envelope.id, "status": result.value})


@_refusals_answered
async def pull_unread_message(request: web.Request) -> web.Response:
    """``POST /wsTemplate/pullUnreadMessage``: the user's waiting mail, removed as it is returned."""
    envelopes = await _pull_own_mail(request)
    return web.json_response({"code": "200", "result": [envelope.text for envelope in envelopes]})


# -- the JSON API ----------------------------------------------------------------------------------------------


@_refusals_answered
async def post_message(request: web.Request) -> web.Response:
    """``POST /api/messages`` ``{"to", "content"}`` → 202 ``{"id", "status"}``."""
    sender = await _require_user(request)
    if request.content_type != "application/json":
        raise InvalidMessage('send JSON: {"to": "bob", "content": "hi"}')
    envelope, result = await _send_from_body(
        request, sender, ("to", "content"), 'send JSON: {"to": "bob", "content": "hi"}, both strings'
    )
    return web.json_response({"id": envelope.id, "status": result.value}, status=202)


@_refusals_answered
async def pull_mail(request: web.Request) -> web.Response:
    """``POST /api/mail/pull``: like the seed's pull, as objects."""
    envelopes = await _pull_own_mail(request)
    return web.json_response({"messages": [json.loads(envelope.body) for envelope in envelopes]})


# -- health ----------------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node": request.app[SETTINGS].node_id})


async def readyz(request: web.Request) -> web.Response:
    backplane = request.app[BACKPLANE]
    ready = backplane.ready
    body = {
        "status": "ready" if ready else "not-ready",
        "backplane": backplane.name,
        "node": request.app[SETTINGS].node_id,
    }
    headers = None if ready else {"Retry-After": str(NOT_READY_RETRY_AFTER)}
    return web.json_response(body, status=200 if ready else 503, headers=headers)


async def _warn_about_legacy_names(app: web.Application) -> None:
    try:
        problems = app[DIRECTORY].legacy_names()
    except WarrenError as exc:
        log.error("%s", exc)
        return
    for name, problem in problems:
        log.warning(
            "user %r: %s; it still signs in, but consider renaming it (python -m app users check)", name, problem
        )


async def _start_sign_in(app: web.Application) -> None:
    await app[SIGN_IN].start()


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[SIGN_IN] = SignIn(app[DIRECTORY], workers=settings.signin_workers, queue=settings.signin_queue)
    app[DEVICES] = DeviceCookies(settings.secret_keys)
    app.on_startup.append(_warn_about_legacy_names)
    app.on_startup.append(_start_sign_in)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_post("/api/messages", post_message)
    app.router.add_post("/api/mail/pull", pull_mail)
    app.router.add_post("/wsTemplate/sendToUser", send_to_user)
    app.router.add_post("/wsTemplate/pullUnreadMessage", pull_unread_message)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
