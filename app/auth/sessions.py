"""Cookie sessions: sign-in, sign-out, and who is asking.

The session lives in an encrypted cookie (aiohttp-session ``EncryptedCookieStorage``, Fernet): nothing is stored on
the server, so any node with the same ``SECRET_KEY`` reads it. Several keys may be configured; the first encrypts,
all decrypt (key rotation). The cookie is HttpOnly, SameSite=Lax, Secure when the request came over HTTPS (directly
or per ``X-Forwarded-Proto`` from the balancer), and expires after ``SESSION_MAX_AGE`` (enforced inside the
encrypted token too, so a copied cookie cannot outlive it).

An encrypted cookie cannot be revoked by itself. Each session therefore carries the user's *session generation*
from the user directory; ``python -m app users add`` (password change) and ``users remove`` bump or drop it, and
every node compares it on every request, so such a change ends every older session on every node. Signing out
removes the cookie from the browser; a copy taken before sign-out stays valid until its max age or the next
generation bump (``python -m app users logout NAME``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp_session import SESSION_KEY, Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet, MultiFernet

from .users import UserDirectory

COOKIE_NAME = "WARREN_SESSION"
_USER = "user"
_GENERATION = "gen"
_SIGNED_IN_AT = "at"
#: A random name for one sign-in: SockJS sessions belong to the sign-in that opened them (``SignIn``).
_SIGN_IN_ID = "sid"


class RotatingCookieStorage(EncryptedCookieStorage):
    """``EncryptedCookieStorage`` with key rotation and a Secure flag decided per request."""

    def __init__(self, keys: tuple[bytes, ...], max_age: int) -> None:
        super().__init__(Fernet(keys[0]), cookie_name=COOKIE_NAME, max_age=max_age, httponly=True, samesite="Lax")
        self._fernet: Any = MultiFernet([Fernet(key) for key in keys])

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        # No await between setting the flag and writing the cookie: safe on one event loop.
        self._cookie_params["secure"] = True if request.secure or forwarded == "https" else None
        await super().save_session(request, response, session)


def session_middleware_for(keys: tuple[bytes, ...], max_age: int) -> Any:
    return session_middleware(RotatingCookieStorage(keys, max_age))


async def start_session(request: web.Request, user: str, generation: int) -> None:
    """A fresh session at every sign-in: whatever cookie came with the request is discarded (no fixation)."""
    session = await new_session(request)
    session[_USER] = user
    session[_GENERATION] = generation
    session[_SIGNED_IN_AT] = int(time.time())
    session[_SIGN_IN_ID] = secrets.token_urlsafe(12)


async def end_session(request: web.Request) -> None:
    session = await get_session(request)
    session.invalidate()


def forget_session(request: web.Request) -> None:
    """Drop the session aiohttp-session keeps on ``request`` once read (nothing is saved: only for requests that
    did not change it). A WebSocket's request lives as long as its connection, and would hold it all that time."""
    request.pop(SESSION_KEY, None)


async def session_user(request: web.Request, directory: UserDirectory) -> str | None:
    """The signed-in user, or None: no cookie, a cookie that does not decrypt, expired, or a stale generation."""
    session = await get_session(request)
    user = session.get(_USER)
    if not isinstance(user, str):
        return None
    if directory.generation(user) != session.get(_GENERATION):
        return None
    return user


@dataclass(frozen=True, slots=True)
class SignIn:
    """One sign-in, as its cookie names it: who, under which session generation, which sign-in, since when
    (seconds since the epoch). Equal for every request carrying that cookie, different for any other sign-in."""

    user: str
    generation: int
    sign_in_id: str
    signed_in_at: int


async def current_sign_in(request: web.Request, directory: UserDirectory) -> SignIn | None:
    """The sign-in of the request's cookie, or None whenever ``session_user`` would answer None. Cookies issued
    before sign-ins had an id are named by their sign-in time."""
    session = await get_session(request)
    user, generation = session.get(_USER), session.get(_GENERATION)
    if not isinstance(user, str) or not isinstance(generation, int) or directory.generation(user) != generation:
        return None
    signed_in_at = session.get(_SIGNED_IN_AT)
    if not isinstance(signed_in_at, int):
        signed_in_at = session.created
    sign_in_id = session.get(_SIGN_IN_ID)
    if not isinstance(sign_in_id, str):
        sign_in_id = f"at-{signed_in_at}"
    return SignIn(user, generation, sign_in_id, signed_in_at)
