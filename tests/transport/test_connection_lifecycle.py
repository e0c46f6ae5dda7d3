"""Connections nobody may keep: revoked or expired sign-ins, anonymous clients, sessions that never CONNECT, more
sessions than a user may have, and a node at its open-file limit (issue #11).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from app.auth.users import UserDirectory
from app.keys import SOCKJS
from app.stomp.frames import Frame
from tests.conftest import PASSWORD
from tests.support.processes import ROOT, free_port, stop_process, wait_http_ok
from tests.support.stomp_client import StompClient, sign_in
from tests.transport.conftest import ServerFactory
from tests.transport.support import Http, PollingStomp, Running, SockJSStomp, StreamingStomp, eventually

ENDPOINT = "/chat-websocket"
#: "Within a few seconds": the sweep checks sign-ins once a second, the directory rereads its file once a second.
REVOKED_WITHIN = 6.0


@pytest.fixture
async def https() -> AsyncIterator[list[Http]]:
    opened: list[Http] = []
    yield opened
    for http in opened:
        await http.close()


async def http_user(node: Running, user: str, transport: str, https: list[Http]) -> SockJSStomp:
    http = Http(cookies=True)
    https.append(http)
    reply = await http.post(
        f"{node.url}/login",
        body=json.dumps({"username": user, "password": PASSWORD}),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply
    base = node.url + ENDPOINT
    client: SockJSStomp = (
        PollingStomp(http, base, origin=node.url)
        if transport == "xhr"
        else StreamingStomp(http, base, transport, origin=node.url)
    )
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    return client


async def websocket_user(node: Running, user: str, clients: list[StompClient]) -> StompClient:
    client = StompClient(await sign_in(node.url, user, PASSWORD), node.url)
    clients.append(client)
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    return client


REVOCATIONS: dict[str, Callable[[UserDirectory, str], object]] = {
    "users logout": lambda directory, user: directory.bump_generation(user),
    "password change": lambda directory, user: directory.add(user, "a-brand-new-password"),
    "users remove": lambda directory, user: directory.remove(user),
}


@pytest.mark.parametrize("cause", list(REVOCATIONS))
@pytest.mark.parametrize("transport", ["websocket", "xhr_streaming", "eventsource"])
async def test_a_signed_out_connection_is_closed_with_an_error_the_page_shows(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    users_file: Path,
    clients: list[StompClient],
    https: list[Http],
    transport: str,
    cause: str,
) -> None:
    """After ``users logout``, a password change or ``users remove``, a connection that stayed open is closed
    within a few seconds with STOMP ERROR ``not-signed-in`` (which the page shows as "sign in again"), then 4001;
    and nothing it sends afterwards goes out."""
    node = await warren_factory()
    alice, bob = make_user("alice"), make_user("bob")
    receiver = await websocket_user(node, bob, clients)
    client: StompClient | SockJSStomp
    if transport == "websocket":
        client = await websocket_user(node, alice, clients)
    else:
        client = await http_user(node, alice, transport, https)
    # The command line, another process: it only writes USERS_FILE.
    REVOCATIONS[cause](UserDirectory(users_file), alice)
    error: Frame = await asyncio.wait_for(client.next_frame(), REVOKED_WITHIN)
    assert error.command == "ERROR" and error.headers["message"] == "not-signed-in", error
    assert "sign in again" in error.body.decode()
    if isinstance(client, StompClient):
        assert (await asyncio.wait_for(client.received.closed, 5))[0] == 4001
    else:
        await eventually(lambda: client.closed is not None, "the close frame", timeout=5)
        assert client.closed is not None and client.closed[0] == 4001
        # The tab's old cookie no longer reaches the session: a send is refused as for an unknown session.
        reply = await client.http.post(client.url + "/xhr_send", body='["x"]', headers={"Origin": node.url})
        assert reply.status == 404
    await receiver.send_chat(bob, "bob to himself", receipt="r")
    frames = [await receiver.next_frame() for _ in range(2)]
    assert {f.command for f in frames} == {"RECEIPT", "MESSAGE"}  # nothing from alice came in between


async def test_a_signed_out_polling_tab_gets_no_more_mail(
    warren_factory: ServerFactory, make_user: Callable[[str], str], clients: list[StompClient], https: list[Http]
) -> None:
    """A polling tab carries the cookie on every poll: once the sign-in is revoked its polls reach nothing of the
    old session, and the mail waiting there goes to the mailbox, for the next sign-in."""
    node = await warren_factory(disconnect_delay_seconds=10.0)
    alice, bob = make_user("alice"), make_user("bob")
    tab = await http_user(node, alice, "xhr", https)
    assert isinstance(tab, PollingStomp)
    sender = await websocket_user(node, bob, clients)
    UserDirectory(node.app[SOCKJS].directory.path).bump_generation(alice)
    await eventually(lambda: node.app[SOCKJS].directory.generation(alice) == 1, "the node to see the logout")
    await sender.send_chat(alice, "after the logout", receipt="r")
    assert (await sender.next_frame()).command == "RECEIPT"
    answers = [await tab.poll() for _ in range(3)]
    assert not any("after the logout" in answer for answer in answers)
    back = await websocket_user(node, alice, clients)
    assert (await back.next_message())["content"] == "after the logout"


async def test_a_connection_ends_when_its_cookie_expires(
    warren_factory: ServerFactory, make_user: Callable[[str], str], clients: list[StompClient]
) -> None:
    """``SESSION_MAX_AGE`` holds for open connections too, not only for new requests."""
    node = await warren_factory(session_max_age=3)
    client = await websocket_user(node, make_user("alice"), clients)
    error = await asyncio.wait_for(client.next_frame(), 3 + REVOKED_WITHIN)
    assert error.command == "ERROR" and error.headers["message"] == "not-signed-in"
    assert "expired" in error.body.decode()
    assert (await asyncio.wait_for(client.received.closed, 5))[0] == 4001


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    texts = []
    async for message in ws:
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        texts.append(message.data)
    return texts


async def test_anonymous_websocket_connections_are_closed_at_once(warren_factory: ServerFactory) -> None:
    """Cookieless connections that send nothing are told "not signed in" and closed without waiting for them;
    none of them stays on the node."""
    node = await warren_factory(heartbeat_seconds=25.0)
    async with aiohttp.ClientSession() as http:
        url = f"{node.url}{ENDPOINT}".replace("http", "ws", 1)

        async def one(number: int) -> list[str]:
            ws = await http.ws_connect(f"{url}/000/anon{number}/websocket", headers={"Origin": node.url})
            return await asyncio.wait_for(read_until_closed(ws), 10)

        transcripts = await asyncio.gather(*(one(number) for number in range(50)))
    for texts in transcripts:
        assert texts[0] == "o" and texts[-1] == 'c[4001,"not-signed-in"]', texts
        assert "message:not-signed-in" in json.loads(texts[1][1:])[0]
    manager = node.app[SOCKJS]
    await eventually(lambda: not manager.sessions, "the anonymous sessions to be gone", timeout=5)


@pytest.mark.parametrize("transport", ["xhr", "xhr_streaming", "eventsource"])
async def test_anonymous_http_sessions_are_closed_at_once(
    warren_factory: ServerFactory, https: list[Http], transport: str
) -> None:
    node = await warren_factory(heartbeat_seconds=25.0)
    http = Http()
    https.append(http)
    client: SockJSStomp = (
        PollingStomp(http, node.url + ENDPOINT, origin=node.url)
        if transport == "xhr"
        else StreamingStomp(http, node.url + ENDPOINT, transport, origin=node.url)
    )
    await client.open()
    error = await asyncio.wait_for(client.next_frame(), 5)
    assert error.command == "ERROR" and error.headers["message"] == "not-signed-in"
    if isinstance(client, PollingStomp):
        await client.poll()
    await eventually(lambda: client.closed == (4001, "not-signed-in"), "the close frame", timeout=5)
    assert not node.app[SOCKJS].open_sessions()


@pytest.mark.parametrize("transport", ["websocket", "xhr_streaming"])
async def test_a_signed_in_session_that_never_connects_is_closed(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
    transport: str,
) -> None:
    node = await warren_factory(connect_timeout_seconds=1.0, heartbeat_seconds=25.0)
    alice = make_user("alice")
    client: StompClient | StreamingStomp
    if transport == "websocket":
        client = StompClient(await sign_in(node.url, alice, PASSWORD), node.url)
        clients.append(client)
    else:
        http = Http(cookies=True)
        https.append(http)
        login = json.dumps({"username": alice, "password": PASSWORD})
        reply = await http.post(f"{node.url}/login", body=login, headers={"Content-Type": "application/json"})
        assert reply.status == 200, reply
        client = StreamingStomp(http, node.url + ENDPOINT, transport, origin=node.url)
    await client.open()  # and then nothing
    error = await asyncio.wait_for(client.next_frame(), 1 + REVOKED_WITHIN)
    assert error.command == "ERROR" and error.headers["message"] == "connect-timeout"
    if isinstance(client, StompClient):
        assert (await asyncio.wait_for(client.received.closed, 5))[0] == 4002
    else:
        await eventually(lambda: client.closed is not None and client.closed[0] == 4002, "the close frame")


async def test_one_user_cannot_hold_more_sessions_than_the_limit_subscribed_or_not(
    warren_factory: ServerFactory, make_user: Callable[[str], str], clients: list[StompClient]
) -> None:
    node = await warren_factory(max_sessions_per_user=3, heartbeat_seconds=25.0)
    alice = make_user("alice")
    held = []
    for _ in range(3):
        client = StompClient(await sign_in(node.url, alice, PASSWORD), node.url)
        clients.append(client)
        assert (await client.connect()).command == "CONNECTED"  # connected, never subscribed
        held.append(client)
    extra = StompClient(await sign_in(node.url, alice, PASSWORD), node.url)
    clients.append(extra)
    refused = await extra.connect()
    assert refused.command == "ERROR" and refused.headers["message"] == "too-many-sessions"
    assert (await asyncio.wait_for(extra.received.closed, 5))[0] == 4009
    await held[0].close()  # a tab closes: its place is free again
    manager = node.app[SOCKJS]
    await eventually(lambda: len(manager.open_sessions()) == 2, "the closed tab's session to end")
    again = StompClient(await sign_in(node.url, alice, PASSWORD), node.url)
    clients.append(again)
    assert (await again.connect()).command == "CONNECTED"


def _soft_limit_1024() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


async def test_a_thousand_open_connections_do_not_make_the_node_unreachable(tmp_path: Path) -> None:
    """A node started with the common default of 1,024 open files raises it to the hard limit and says so:
    1,100 idle connections later, ``/healthz`` still answers."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f"the hard open-file limit ({hard}) leaves no room to test above 1,024")
    port = free_port()
    log_path = tmp_path / "node.log"
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "USERS_FILE": str(tmp_path / "users.json"),
           "NODE_ID": "fd-limit"}
    env.pop("AMQP_URL", None)
    env.pop("CLOUDAMQP_URL", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log, preexec_fn=_soft_limit_1024
        )
    sockets: list[socket.socket] = []
    try:
        wait_http_ok(process, f"http://127.0.0.1:{port}/readyz", 30.0, log_path)
        for _ in range(1100):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as reply:
                assert reply.status == 200
        assert "room for about" in log_path.read_text()  # the operator is told how many connections fit
    finally:
        for sock in sockets:
            sock.close()
        stop_process(process)
