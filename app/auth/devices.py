"""Device cookies: "this browser has signed in as alice before", so guessing at alice cannot lock her out here.

At every successful sign-in the browser gets ``WARREN_DEVICE``: an encrypted token (Fernet, the ``SECRET_KEY``
keys, so any node reads it) holding a random device id and the names that signed in from it (the last 8). It is
HttpOnly, SameSite=Strict, scoped to ``/login`` and lasts ``DEVICE_MAX_AGE``. It grants nothing by itself — it is
not a session and carries no password — it only selects which failure bucket a sign-in attempt is counted in:
the device's own (5 failures, one back every 12 s) instead of the account's and the address's. Someone who steals
the cookie gets that one bucket's guessing rate, no more. See ``app.auth.throttle``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

DEVICE_COOKIE = "WARREN_DEVICE"
#: How long a browser stays known without signing in again.
DEVICE_MAX_AGE = 180 * 86400
_MAX_NAMES = 8
_MAX_COOKIE_CHARS = 4096


@dataclass(frozen=True)
class Device:
    id: str
    names: tuple[str, ...]

    def knows(self, name: str) -> bool:
        return name in self.names


class DeviceCookies:
    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def read(self, request: web.Request) -> Device | None:
        """The device the request's cookie names, or None (no cookie, expired, forged, other keys)."""
        token = request.cookies.get(DEVICE_COOKIE)
        if not token or len(token) > _MAX_COOKIE_CHARS:
            return None
        try:
            data = json.loads(self._fernet.decrypt(token.encode(), ttl=DEVICE_MAX_AGE))
            device_id, names = data["d"], data["u"]
        except (InvalidToken, ValueError, TypeError, KeyError):
            return None
        if not isinstance(device_id, str) or not isinstance(names, list):
            return None
        return Device(device_id, tuple(name for name in names if isinstance(name, str)))

    def remember(self, request: web.Request, response: web.StreamResponse, device: Device | None, name: str) -> None:
        """Set a cookie that knows ``name`` (most recent last), keeping the device id if there was one."""
        device_id = device.id if device is not None else os.urandom(16).hex()
        names = [other for other in (device.names if device else ()) if other != name][-(_MAX_NAMES - 1) :]
        token = self._fernet.encrypt(json.dumps({"d": device_id, "u": [*names, name]}).encode()).decode()
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        response.set_cookie(
            DEVICE_COOKIE,
            token,
            max_age=DEVICE_MAX_AGE,
            path="/login",
            httponly=True,
            samesite="Strict",
            secure=request.secure or forwarded == "https",
        )
