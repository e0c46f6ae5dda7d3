"""Fixtures for the SockJS tests: the conformance services and Warren nodes, on real loopback sockets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import Settings
from app.conformance import create_conformance_app
from app.server import create_app
from tests.support.stomp_client import StompClient
from tests.transport.support import Http, Running, start_app

ServerFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    client = Http()
    yield client
    await client.close()


@pytest.fixture
async def servers() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for server in reversed(started):
        await server.close()


@pytest.fixture
def conformance_factory(servers: list[Running]) -> ServerFactory:
    """Start ``python -m app.conformance``'s services: ``await conformance_factory(handler_cancellation=...)``."""

    async def start(*, handler_cancellation: bool = False, **settings: object) -> Running:
        app = create_conformance_app(replace(Settings(), **settings))  # type: ignore[arg-type]
        server = await start_app(app, handler_cancellation=handler_cancellation)
        servers.append(server)
        return server

    return start


@pytest.fixture
async def conformance(conformance_factory: ServerFactory) -> str:
    """The base URL of the conformance services, served as in production (no handler cancellation)."""
    server = await conformance_factory()
    return server.url


@pytest.fixture
def warren_factory(servers: list[Running], users_file: Path, secret_key: bytes) -> ServerFactory:
    """Start a Warren node (memory backplane) with short SockJS timers; keyword arguments override settings."""

    async def start(*, handler_cancellation: bool = False, **overrides: object) -> Running:
        settings = Settings(
            port=0,
            host="127.0.0.1",
            secret_keys=(secret_key,),
            node_id=f"transport-{uuid.uuid4().hex[:6]}",
            users_file=users_file,
            heartbeat_seconds=1.0,
            disconnect_delay_seconds=0.5,
        )
        app = create_app(replace(settings, **overrides))  # type: ignore[arg-type]
        server = await start_app(app, handler_cancellation=handler_cancellation)
        servers.append(server)
        return server

    return start


@pytest.fixture
async def clients() -> AsyncIterator[list[StompClient]]:
    """STOMP clients a test opened; closed, with their HTTP sessions, afterwards."""
    opened: list[StompClient] = []
    yield opened
    for client in opened:
        await client.close()
        await client.http.close()
