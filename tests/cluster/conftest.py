"""Warren nodes as separate processes on RabbitMQ: the shared broker, or a private one a test may restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.auth.users import UserDirectory
from app.config import generate_secret_key
from tests.conftest import AMQP_URL, PASSWORD, broker_reachable
from tests.support.processes import NodeProcess, PrivateBroker
from tests.support.stomp_client import StompClient, sign_in

MANAGEMENT_API = "http://127.0.0.1:15672/api"


@pytest.fixture
def rabbitmq_required() -> None:
    try:
        import app.backplane.rabbitmq  # noqa: F401
    except ImportError:
        pytest.skip("the RabbitMQ backplane is not built yet")
    if not broker_reachable():
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672 (make test starts it)")


class Cluster:
    def __init__(self, tmp_path: Path, amqp_url: str) -> None:
        self.tmp_path = tmp_path
        self.amqp_url = amqp_url
        self.users_file = tmp_path / "users.json"
        self.directory = UserDirectory(self.users_file)
        self.secret = generate_secret_key().decode()
        self.run_id = uuid.uuid4().hex[:6]
        self.nodes: list[NodeProcess] = []
        self.clients: list[StompClient] = []
        self.https: list[aiohttp.ClientSession] = []

    def user(self, base: str) -> str:
        return self.directory.add(f"{base}-{self.run_id}", PASSWORD)

    async def start_node(self, name: str, **env: str) -> NodeProcess:
        node = NodeProcess(
            {
                "AMQP_URL": self.amqp_url,
                "SECRET_KEY": self.secret,
                "USERS_FILE": str(self.users_file),
                "NODE_ID": f"test-{name}-{self.run_id}",
                "LOG_LEVEL": "INFO",
                "SHUTDOWN_TIMEOUT": "15",
                "MESSAGE_RATE": "0",
                "CONNECTION_MESSAGE_RATE": "0",
                **env,
            },
            self.tmp_path / f"node-{name}.log",
        )
        self.nodes.append(node)
        await node.start()
        return node

    async def http(self, node: NodeProcess, user: str) -> aiohttp.ClientSession:
        session = await sign_in(node.url, user, PASSWORD)
        self.https.append(session)
        return session

    async def online(self, node: NodeProcess, user: str, ack: str = "auto") -> StompClient:
        http = await self.http(node, user)
        client = StompClient(http, node.url)
        client.auto_ack = ack != "auto"
        self.clients.append(client)
        connected = await client.connect()
        assert connected.command == "CONNECTED", connected
        await client.subscribe(ack=ack)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for session in self.https:
            await session.close()
        for node in self.nodes:
            node.kill()


@pytest.fixture
async def cluster(rabbitmq_required: None, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, AMQP_URL)
    yield cluster
    await cluster.close()


@pytest.fixture
async def private_broker(rabbitmq_required: None, tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    if not PrivateBroker.available():
        pytest.skip("rabbitmq-server is not installed")
    broker = PrivateBroker(tmp_path / "broker")
    await broker.start()
    yield broker
    broker.kill()


@pytest.fixture
async def private_cluster(private_broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, private_broker.url)
    yield cluster
    await cluster.close()


async def management(path: str, api: str = MANAGEMENT_API) -> Any:
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("guest", "guest")) as http:
        async with http.get(f"{api}{path}") as resp:
            if resp.status == 404:
                return None
            resp.raise_for_status()
            return await resp.json()


Waiter = Callable[[], Awaitable[bool]]


async def eventually(check: Waiter, timeout: float = 15, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


class HttpStream:
    """Sends ``total`` numbered messages through ``POST /api/messages``; records accepted ids; signals milestones.

    ``retry_unavailable``: on 503 (broker away) wait ``Retry-After`` and send the same message again, as a client
    should; such a send was not accepted, so it is not counted until it is.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str, to: str, total: int, retry_unavailable: bool = False):
        self.http, self.url, self.to, self.total = http, url, to, total
        self.retry_unavailable = retry_unavailable
        self.accepted: list[str] = []
        self.unavailable = 0
        self._milestones: dict[int, asyncio.Event] = {}

    def reached(self, count: int) -> asyncio.Event:
        return self._milestones.setdefault(count, asyncio.Event())

    async def run(self) -> None:
        for i in range(self.total):
            while True:
                async with self.http.post(f"{self.url}/api/messages", json={"to": self.to, "content": str(i)}) as r:
                    if r.status == 503 and self.retry_unavailable:
                        self.unavailable += 1
                        await asyncio.sleep(min(1.0, float(r.headers.get("Retry-After", "1"))))
                        continue
                    assert r.status == 202, await r.text()
                    self.accepted.append((await r.json())["id"])
                    break
            event = self._milestones.get(len(self.accepted))
            if event is not None:
                event.set()


def drain_message_ids(*clients: StompClient) -> set[str]:
    ids: set[str] = set()
    for client in clients:
        for frame in client.take_buffered():
            if frame.command == "MESSAGE":
                ids.add(frame.headers["message-id"])
    return ids
