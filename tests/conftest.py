"""Fixtures: a user directory, Warren nodes on real loopback sockets, and the backplane parameter.

``backplane_kind`` runs a test against both backplanes: ``memory`` and ``rabbitmq`` (the broker at
127.0.0.1:5672; skipped with a reason when it is not reachable, so a machine without RabbitMQ still runs the
rest — CI always starts it). Usernames get a random suffix per test: mailboxes on the broker are durable, so
tests must never share a receiver.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.auth.users import UserDirectory
from app.config import Settings, generate_secret_key
from app.server import create_app
from tests.support.stomp_client import StompClient, sign_in

PASSWORD = "correct-horse-battery"
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def broker_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return tmp_path / "users.json"


@pytest.fixture
def directory(users_file: Path) -> UserDirectory:
    return UserDirectory(users_file)


@pytest.fixture
def make_user(directory: UserDirectory) -> Callable[[str], str]:
    """Add a user with a per-test unique name (``alice`` → ``alice-3f9c1a``) and return the name."""

    def make(base: str) -> str:
        return directory.add(f"{base}-{uuid.uuid4().hex[:6]}", PASSWORD)

    return make


@pytest.fixture
def secret_key() -> bytes:
    return generate_secret_key()


@pytest.fixture(params=["memory", "rabbitmq"])
def backplane_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "rabbitmq":
        try:
            import app.backplane.rabbitmq  # noqa: F401
        except ImportError:
            pytest.skip("the RabbitMQ backplane is not built yet")
        if not broker_reachable():
            pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672 (make test starts it)")
    return kind


@dataclass
class Node:
    url: str
    app: web.Application
    server: TestServer

    async def client(self, user: str, password: str = PASSWORD) -> StompClient:
        http = await sign_in(self.url, user, password)
        return StompClient(http, self.url)

    async def http_for(self, user: str, password: str = PASSWORD) -> aiohttp.ClientSession:
        return await sign_in(self.url, user, password)


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def node_factory(
    backplane_kind: str, users_file: Path, secret_key: bytes, directory: UserDirectory
) -> AsyncIterator[NodeFactory]:
    servers: list[TestServer] = []
    clients: list[StompClient] = []

    async def start(**overrides: object) -> Node:
        settings = Settings(
            port=0,
            host="127.0.0.1",
            secret_keys=(secret_key,),
            amqp_url=AMQP_URL if backplane_kind == "rabbitmq" else None,
            node_id=f"test-{uuid.uuid4().hex[:8]}",
            users_file=users_file,
        )
        settings = replace(settings, **overrides)  # type: ignore[arg-type]
        # The node shares the test's directory: users the test adds exist at once (another process would see them
        # within a second).
        app = create_app(settings, directory=directory)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Node(str(server.make_url("")).rstrip("/"), app, server)

    yield start
    for client in clients:
        await client.close()
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def node(node_factory: NodeFactory) -> Node:
    return await node_factory()


@pytest.fixture
async def stomp_clients() -> AsyncIterator[list[StompClient]]:
    """Register clients here to have them (and their HTTP sessions) closed after the test."""
    clients: list[StompClient] = []
    yield clients
    for client in clients:
        await client.close()
        await client.http.close()
