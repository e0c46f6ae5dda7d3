"""Typed application state (``web.AppKey``): what ``create_app`` wires and handlers read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .auth.users import UserDirectory
from .config import Settings
from .core.abc import Backplane
from .core.hub import Hub

if TYPE_CHECKING:
    # Only for the annotation: the transport imports this module at run time.
    from .transport.sockjs import WarrenSessionManager

SETTINGS = web.AppKey("settings", Settings)
DIRECTORY = web.AppKey("directory", UserDirectory)
BACKPLANE = web.AppKey("backplane", Backplane)
HUB = web.AppKey("hub", Hub)
SOCKJS: web.AppKey[WarrenSessionManager] = web.AppKey("sockjs")
