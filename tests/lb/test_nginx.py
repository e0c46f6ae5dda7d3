"""Two Warren nodes on RabbitMQ behind nginx (``tests/lb/nginx.conf.template``): sticky SockJS sessions.

nginx runs on loopback as an ordinary process (its own prefix, configuration, pid and temporary directories
under the test's temporary directory; ``daemon off``; stopped by its PID). The balancer hashes on the SockJS
session id, so each session must see one node only: every answer's ``X-Warren-Upstream`` is checked, and a
request reaching the wrong node would fail outright (404: unknown session). Alice's session is placed on one
node and Bob's on the other, and they chat over xhr-polling, xhr-streaming, eventsource and WebSocket, so every
message crosses the broker.

Skipped, with the reason, when nginx is not installed (Debian package ``nginx-light`` or ``nginx``), when the
RabbitMQ backplane is not importable, or when the broker is not reachable at 127.0.0.1:5672.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.auth.users import UserDirectory
from app.config import generate_secret_key
from tests.conftest import AMQP_URL, PASSWORD, broker_reachable
from tests.support.stomp_client import StompClient, sign_in
from tests.transport.nodes import NodeProcess, free_port
from tests.transport.support import Http, PollingStomp, SockJSStomp, StreamingStomp

pytestmark = pytest.mark.rabbitmq

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
ENDPOINT = "/chat-websocket"
TRANSPORTS = ["xhr", "xhr_streaming", "eventsource"]
START_TIMEOUT = 15.0


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


@dataclass
class Nginx:
    binary: str
    prefix: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, upstreams: list[str]) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        config = (
            TEMPLATE.read_text()
            .replace("@PREFIX@", str(self.prefix))
            .replace("@LISTEN@", f"127.0.0.1:{self.port}")
            .replace("@NODE_A@", upstreams[0])
            .replace("@NODE_B@", upstreams[1])
        )
        conf = self.prefix / "nginx.conf"
        conf.write_text(config)
        # -e: nginx opens its error log before reading the configuration; keep even that one private.
        command = [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")]
        with (self.prefix / "stdout.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)  # poll interval while nginx starts
        self.stop()
        raise AssertionError(f"nginx did not listen within {START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        logs = [self.prefix / "error.log", self.prefix / "stdout.log"]
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in logs if path.exists())

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)  # fast shutdown of the master and its worker
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass
class Cluster:
    nginx: Nginx
    nodes: list[NodeProcess]
    users: UserDirectory
    run: str

    @property
    def upstreams(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def user(self, name: str) -> str:
        """A user unique to this run: broker mailboxes are durable, so runs must never share a receiver."""
        return f"{name}-{self.run}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light); CI installs it")
    try:
        import app.backplane.rabbitmq  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the RabbitMQ backplane does not import: {exc}")
    if not broker_reachable():
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672 (make test starts it)")
    workdir = tmp_path_factory.mktemp("lb")
    run = uuid.uuid4().hex[:6]
    users = UserDirectory(workdir / "users.json")
    for transport in [*TRANSPORTS, "websocket"]:
        for name in ("alice", "bob"):
            users.add(f"{name}-{transport.replace('_', '-')}-{run}", PASSWORD)
    shared = {"AMQP_URL": AMQP_URL, "SECRET_KEY": generate_secret_key().decode(), "USERS_FILE": str(users.path)}
    nodes = [NodeProcess(f"lb-{side}-{run}", workdir, {**shared, "SHUTDOWN_TIMEOUT": "5"}) for side in "ab"]
    nginx = Nginx(binary, workdir / "nginx", free_port())
    try:
        for node in nodes:
            node.start()
        nginx.start([f"127.0.0.1:{node.port}" for node in nodes])
        yield Cluster(nginx, nodes, users, run)
    finally:
        nginx.stop()
        for node in nodes:
            node.stop()


@pytest.fixture
async def opened() -> AsyncIterator[list[SockJSStomp | StompClient | Http]]:
    things: list[SockJSStomp | StompClient | Http] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, StompClient):
            await thing.close()
            await thing.http.close()
        else:
            await thing.close()


async def signed_in(cluster: Cluster, user: str, opened: list[SockJSStomp | StompClient | Http]) -> Http:
    http = Http(cookies=True)
    opened.append(http)
    body = json.dumps({"username": user, "password": PASSWORD})
    reply = await http.post(f"{cluster.nginx.url}/login", body=body, headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply
    return http


async def session_on(
    node: str, make: Callable[[], SockJSStomp], opened: list[SockJSStomp | StompClient | Http]
) -> SockJSStomp:
    """Open sessions until the balancer puts one on ``node`` (it hashes the random session id)."""
    for _ in range(40):
        client = make()
        opened.append(client)
        await client.open()
        if client.upstreams == {node}:
            await client.send("CONNECT", {"accept-version": "1.2", "host": "warren", "heart-beat": "0,0"})
            assert (await client.next_frame()).command == "CONNECTED"
            await client.subscribe()
            return client
        await client.close()  # that session lands elsewhere; it expires on its node
    raise AssertionError(f"no session landed on {node} in 40 attempts: is the balancer hashing?")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_users_on_two_nodes_chat_through_nginx(
    cluster: Cluster, transport: str, opened: list[SockJSStomp | StompClient | Http]
) -> None:
    name = transport.replace("_", "-")
    alice, bob = cluster.user(f"alice-{name}"), cluster.user(f"bob-{name}")
    base = cluster.nginx.url + ENDPOINT
    origin = cluster.nginx.url
    node_a, node_b = cluster.upstreams

    def client_for(http: Http) -> Callable[[], SockJSStomp]:
        if transport == "xhr":
            return lambda: PollingStomp(http, base, origin=origin)
        return lambda: StreamingStomp(http, base, transport, origin=origin)

    a = await session_on(node_a, client_for(await signed_in(cluster, alice, opened)), opened)
    b = await session_on(node_b, client_for(await signed_in(cluster, bob, opened)), opened)

    for number in range(3):
        await a.send_chat(bob, f"A→B {number} ✓")
        await b.send_chat(alice, f"B→A {number} ✓")
    assert [(await b.next_message())["content"] for _ in range(3)] == [f"A→B {n} ✓" for n in range(3)]
    assert [(await a.next_message())["content"] for _ in range(3)] == [f"B→A {n} ✓" for n in range(3)]
    # Every request of each session, sends included, reached the node holding it.
    assert a.upstreams == {node_a} and b.upstreams == {node_b}


async def test_websocket_upgrade_through_nginx(
    cluster: Cluster, opened: list[SockJSStomp | StompClient | Http]
) -> None:
    alice, bob = cluster.user("alice-websocket"), cluster.user("bob-websocket")
    client = StompClient(await sign_in(cluster.nginx.url, alice, PASSWORD), cluster.nginx.url)
    opened.append(client)
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    bob_http = await signed_in(cluster, bob, opened)
    polling = PollingStomp(bob_http, cluster.nginx.url + ENDPOINT, origin=cluster.nginx.url)
    opened.append(polling)
    assert (await polling.connect()).command == "CONNECTED"
    await polling.subscribe()
    await polling.send_chat(alice, "over the upgrade")
    assert (await client.next_message())["content"] == "over the upgrade"
    await client.send_chat(bob, "and back")
    assert (await polling.next_message())["content"] == "and back"
