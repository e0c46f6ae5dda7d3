"""Fixtures for backplane tests: a recording inbox, the broker's management API, and backplanes on the real broker.

RabbitMQ tests run against ``TEST_AMQP_URL`` and its management API at ``TEST_MANAGEMENT_URL`` (default: the local
broker, guest/guest) and skip when it does not answer. Each test gets its own topology prefix (``t-<hex>``) and node
ids (``test-<hex>``), so tests never see each other's exchanges, queues or policy, nor those of a Warren running on
the same broker; everything under the prefix is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from app.backplane.rabbitmq import RabbitMQBackplane
from app.backplane.topology import Topology
from app.config import Settings
from app.core.envelope import Envelope

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
#: The publisher every backplane test uses unless it says otherwise (``AMQP_PUBLISHER``: batched or plain).
PUBLISHER = os.environ.get("TEST_AMQP_PUBLISHER", "batched")
#: Generous: a CI broker under load can take a while, and every wait ends as soon as its condition holds.
DEADLINE = 15.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = DEADLINE, what: str = "") -> None:
    """Poll ``check`` until it is true (for state only the broker's HTTP API can show)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        await asyncio.sleep(0.02)


def envelope(receiver: str, content: str, sender: str = "alice") -> Envelope:
    return Envelope.create(sender, receiver, content)


async def read_mailbox(backplane: RabbitMQBackplane, user: str) -> list[str]:
    """The contents of everything in ``user``'s mailbox, taken and settled."""
    contents: list[str] = []
    while True:
        batch = await backplane.fetch_mail(user, 500)
        contents.extend(e.content for e in batch.envelopes)
        await batch.settle()
        if not batch.envelopes:
            return contents


class RecordingInbox:
    """An ``Inbox`` that records what it is handed; ``fail`` makes the next deliveries raise."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.fail = 0
        self.failures = 0
        self._arrived = asyncio.Event()

    async def deliver(self, envelope: Envelope) -> None:
        if self.fail:
            self.fail -= 1
            self.failures += 1
            raise RuntimeError("inbox told to fail")
        self.envelopes.append(envelope)
        self._arrived.set()

    def of(self, user: str) -> list[Envelope]:
        return [envelope for envelope in self.envelopes if envelope.receiver == user]

    def contents(self, user: str | None = None) -> list[str]:
        return [e.content for e in (self.envelopes if user is None else self.of(user))]

    async def wait_for(self, count: int, *, user: str | None = None, timeout: float = DEADLINE) -> list[Envelope]:
        """Wait until at least ``count`` envelopes (for ``user``, if given) have arrived."""

        def have() -> list[Envelope]:
            return self.envelopes if user is None else self.of(user)

        async with asyncio.timeout(timeout):
            while len(have()) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(have())


class BrokerAdmin:
    """The few management API calls the tests need (``/api/...`` on the test broker)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, vhost: str = "/") -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.vhost = vhost

    def _url(self, *parts: str) -> str:
        return self.base + "/api/" + "/".join(quote(part, safe="") for part in parts)

    async def _get(self, *parts: str, params: dict[str, str] | None = None) -> Any:
        async with self.session.get(self._url(*parts), params=params) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            return await response.json()

    async def _delete(self, *parts: str, headers: dict[str, str] | None = None) -> None:
        async with self.session.delete(self._url(*parts), headers=headers) as response:
            if response.status != 404:
                response.raise_for_status()

    async def queues(self, prefix: str) -> list[dict[str, Any]]:
        queues = await self._get("queues", self.vhost, params={"columns": "name,exclusive,durable,arguments"})
        return [queue for queue in queues or [] if queue["name"].startswith(prefix)]

    async def queue_names(self, prefix: str) -> set[str]:
        return {queue["name"] for queue in await self.queues(prefix)}

    async def queue(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._get("queues", self.vhost, name)
        return result

    async def binding_keys(self, queue: str) -> set[str]:
        """Routing keys binding ``queue`` to exchanges other than the default one."""
        bindings = await self._get("queues", self.vhost, queue, "bindings") or []
        return {binding["routing_key"] for binding in bindings if binding["source"]}

    async def exchange(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._get("exchanges", self.vhost, name)
        return result

    async def policy(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._get("policies", self.vhost, name)
        return result

    async def put_policy(self, name: str, document: dict[str, Any]) -> None:
        async with self.session.put(self._url("policies", self.vhost, name), json=document) as response:
            response.raise_for_status()

    async def import_definitions(self, document: dict[str, Any]) -> None:
        async with self.session.post(self._url("definitions"), json=document) as response:
            response.raise_for_status()

    async def connection(self, connection_name: str) -> dict[str, Any] | None:
        """The connection whose client-provided name is ``connection_name``."""
        for connection in await self._get("connections") or []:
            if connection.get("client_properties", {}).get("connection_name") == connection_name:
                result: dict[str, Any] = connection
                return result
        return None

    async def wait_for_connection(self, connection_name: str) -> dict[str, Any]:
        """The API lists a new connection only after its first statistics (up to a few seconds)."""
        found: dict[str, Any] = {}

        async def listed() -> bool:
            found.update(await self.connection(connection_name) or {})
            return bool(found)

        await eventually(listed, what=f"connection {connection_name!r} in the management API")
        return found

    async def close_connection(self, connection_name: str) -> None:
        connection = await self.wait_for_connection(connection_name)
        await self._delete("connections", connection["name"], headers={"X-Reason": "Warren test: forced close"})

    async def delete_everything(self, topology: Topology) -> None:
        for queue in await self.queues(topology.prefix + "."):
            await self._delete("queues", self.vhost, queue["name"])
        for exchange in (topology.messages_exchange, topology.mailbox_exchange):
            await self._delete("exchanges", self.vhost, exchange)
        await self._delete("policies", self.vhost, topology.policy_name)


class TcpProxy:
    """A TCP relay to the broker that a test can cut (as if the network or the broker went away) and restore.

    Only connections made through it are affected, so a test can take "the broker" away from one node without
    touching the shared broker.
    """

    def __init__(self, target: URL) -> None:
        self.target_host = target.host or "127.0.0.1"
        self.target_port = target.port or 5672
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def amqp_url(self) -> str:
        return str(URL(AMQP_URL).with_port(self.port))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset every relayed one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, broker_writer))
        await asyncio.gather(
            self._pipe(client_reader, broker_writer), self._pipe(broker_reader, client_writer), return_exceptions=True
        )
        for writer in (client_writer, broker_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@pytest.fixture
async def proxy(rabbitmq_available: None) -> AsyncIterator[TcpProxy]:
    relay = TcpProxy(URL(AMQP_URL))
    await relay.start()
    yield relay
    await relay.cut()


def _broker_reachable() -> bool:
    url = URL(AMQP_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbitmq_available() -> None:
    if not _broker_reachable():
        pytest.skip(f"RabbitMQ is not reachable at {URL(AMQP_URL).with_password(None)}")


@pytest.fixture
async def admin(rabbitmq_available: None) -> AsyncIterator[BrokerAdmin]:
    base = URL(MANAGEMENT_URL)
    headers = {"Authorization": aiohttp.encode_basic_auth(base.user or "guest", base.password or "guest")}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield BrokerAdmin(session, str(base.with_user(None).with_password(None)))


@pytest.fixture
async def topology(admin: BrokerAdmin) -> AsyncIterator[Topology]:
    topology = Topology(prefix=unique("t"))
    yield topology
    await admin.delete_everything(topology)


RabbitFactory = Callable[..., Awaitable[tuple[RabbitMQBackplane, RecordingInbox]]]


@pytest.fixture
async def make_rabbit(topology: Topology) -> AsyncIterator[RabbitFactory]:
    """Start RabbitMQ backplanes ("nodes") in this process, each on its own connection; closed afterwards."""
    started: list[RabbitMQBackplane] = []

    async def make(
        *,
        node_id: str | None = None,
        inbox: Any = None,
        mailbox_max: int = 1000,
        mailbox_ttl: float = 3600.0,
        mailbox_max_bytes: int = 10 * 1024 * 1024,
        start: bool = True,
        publisher: str = PUBLISHER,
        **options: Any,
    ) -> tuple[RabbitMQBackplane, Any]:
        settings = Settings(
            amqp_url=options.pop("amqp_url", AMQP_URL),
            node_id=node_id or unique("test"),
            mailbox_max=mailbox_max,
            mailbox_ttl=mailbox_ttl,
            mailbox_max_bytes=mailbox_max_bytes,
            shutdown_timeout_seconds=10.0,
            amqp_publisher=publisher,
        )
        options.setdefault("management_url", MANAGEMENT_URL)
        backplane = RabbitMQBackplane(settings, topology=topology, **options)
        inbox = RecordingInbox() if inbox is None else inbox
        if start:
            await backplane.start(inbox)
            started.append(backplane)
        return backplane, inbox

    yield make
    for backplane in started:
        await backplane.close()
