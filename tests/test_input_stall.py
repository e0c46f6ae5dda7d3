"""The node keeps answering everybody while one client sends crafted input (issue #11, "one small input stalls
everyone").

Each test starts a real node (``python -m app``, its own process and event loop), probes ``/healthz`` from this
process every 10 ms while a signed-in client sends the attack, and asserts that the slowest answer stayed far
below what the attack cost before (seconds): the node examines each byte a bounded number of times, bounds the
SockJS messages per frame and per request, and yields to the event loop between parts of a big batch.

The bound asserted (``STALL_LIMIT``) is generous because this machine's cores are shared with other test runs, and
an attack is tried up to three times (a fresh connection each) before a stall counts: a busy machine can
deschedule the node for a moment, but before the fix every try stalled for seconds. The figures measured are
printed (``-s``) and quoted in the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from app.auth.users import UserDirectory
from app.config import generate_secret_key
from tests.conftest import PASSWORD
from tests.support.processes import NodeProcess
from tests.support.stomp_client import sign_in

#: The slowest /healthz answer allowed while an attack runs (the target is 50 ms of loop time; the rest is slack
#: for a shared machine). Before the fix the same attacks held /healthz for 1.9 s to about a minute.
STALL_LIMIT = 0.25
#: A STOMP frame's header block that never ends: 31 lines of 4,000 bytes (about 124 KiB, under the 132 KiB bound
#: of a connected client's headers).
UNTERMINATED_HEAD = "SEND\n" + "".join(f"x-{n:02d}:{'a' * 3995}\n" for n in range(31))
#: The largest WebSocket message the node reads (``MAX_MESSAGE_BYTES`` * 8 + 64 KiB) and the largest request body.
LARGEST_WEBSOCKET_MESSAGE = 64 * 1024 * 8 + 64 * 1024
LARGEST_REQUEST_BODY = 1024 * 1024
#: 40 STOMP ACK frames that acknowledge nothing: valid input that costs the node a little work each.
ACKS = "ACK\nid:none\n\n\x00" * 40


def batch(message: str, size: int) -> str:
    """A SockJS batch (compact JSON array) of copies of ``message``, as many as fit in ``size`` bytes."""
    count = (size - 2) // (len(json.dumps(message)) + 1)
    return json.dumps([message] * count, separators=(",", ":"))


class HealthProbe:
    """``GET /healthz`` every 10 ms; the answer times of each probe, in seconds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> HealthProbe:
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.1)  # a few probes before the attack starts
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.sleep(0.1)  # and a few after it was handled
        assert self._task is not None
        # The probe in flight may be the one the attack holds up: it finishes and counts.
        self._stopping = True
        await asyncio.wait_for(self._task, 120)
        await self._http.close()

    async def _run(self) -> None:
        while not self._stopping:
            started = time.perf_counter()
            async with self._http.get(self.url + "/healthz") as reply:
                assert reply.status == 200
                await reply.read()
            self.times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)  # the probe interval

    def report(self, what: str) -> float:
        worst = max(self.times)
        print(
            f"\n{what}: /healthz worst {worst * 1000:.1f} ms, median {statistics.median(self.times) * 1000:.1f} ms "
            f"over {len(self.times)} probes"
        )
        return worst


@pytest.fixture
async def warren(tmp_path: Path) -> AsyncIterator[tuple[NodeProcess, str]]:
    users = tmp_path / "users.json"
    user = UserDirectory(users).add(f"mallory-{uuid.uuid4().hex[:6]}", PASSWORD)
    node = NodeProcess(
        {"USERS_FILE": str(users), "SECRET_KEY": generate_secret_key().decode(), "NODE_ID": "stall"},
        tmp_path / "node.log",
    )
    await node.start()
    try:
        yield node, user
    finally:
        node.kill()


async def connected_websocket(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(
        f"{url.replace('http', 'ws', 1)}/chat-websocket/000/{uuid.uuid4().hex}/websocket",
        headers={"Origin": url},
        max_msg_size=0,
    )
    assert (await ws.receive_str()) == "o"
    await ws.send_str(json.dumps(["CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"]))
    connected = await ws.receive_str(timeout=5)
    assert connected.startswith('a["CONNECTED'), connected
    return ws


async def until_closed_or_quiet(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
    """Read what the node answers until it closes the connection or says nothing for ``seconds``."""
    with contextlib.suppress(TimeoutError):
        while not ws.closed:
            message = await ws.receive(timeout=seconds)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return
            if message.type is aiohttp.WSMsgType.TEXT and message.data.startswith("c"):
                return


Strike = Callable[[], Awaitable[None]]
#: Sets an attack up on a signed-in HTTP session (outside the probe's window); returns the strike itself.
Prepare = Callable[[aiohttp.ClientSession, str], Awaitable[Strike]]


async def assert_node_keeps_answering(node: NodeProcess, user: str, prepare: Prepare, what: str) -> None:
    worst: list[float] = []
    for _ in range(3):
        http = await sign_in(node.url, user, PASSWORD)
        try:
            strike = await prepare(http, node.url)
            async with HealthProbe(node.url) as probe:
                await strike()
            worst.append(probe.report(what))
        finally:
            await http.close()
        if worst[-1] < STALL_LIMIT:
            return
    raise AssertionError(f"{what}: /healthz stalled for {worst} s in three tries (limit {STALL_LIMIT} s)")


async def xhr_session(http: aiohttp.ClientSession, url: str) -> str:
    session = f"{url}/chat-websocket/000/{uuid.uuid4().hex}"
    async with http.post(session + "/xhr", headers={"Origin": url}) as reply:
        assert (await reply.text()).strip() == "o"
    await xhr_send(http, session, url, ["CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"])
    async with http.post(session + "/xhr", headers={"Origin": url}) as reply:
        assert "CONNECTED" in await reply.text()
    return session


async def xhr_send(http: aiohttp.ClientSession, session: str, url: str, messages: list[str] | str) -> int:
    body = messages if isinstance(messages, str) else json.dumps(messages)
    async with http.post(session + "/xhr_send", data=body, headers={"Origin": url}) as reply:
        await reply.read()
        return reply.status


async def test_the_node_keeps_answering_while_a_websocket_sends_10000_tiny_messages_after_a_huge_header(
    warren: tuple[NodeProcess, str],
) -> None:
    async def prepare(http: aiohttp.ClientSession, url: str) -> Strike:
        ws = await connected_websocket(http, url)
        await ws.send_str(json.dumps([UNTERMINATED_HEAD]))

        async def strike() -> None:
            await ws.send_str(json.dumps(["a"] * 10_000))  # a 50 KB frame
            await until_closed_or_quiet(ws, 2.0)

        return strike

    await assert_node_keeps_answering(*warren, prepare, "10,000 tiny messages after a 124 KiB header")


async def test_the_node_keeps_answering_while_a_websocket_sends_the_largest_frame_allowed(
    warren: tuple[NodeProcess, str],
) -> None:
    async def prepare(http: aiohttp.ClientSession, url: str) -> Strike:
        ws = await connected_websocket(http, url)
        await ws.send_str(json.dumps([UNTERMINATED_HEAD]))

        async def strike() -> None:
            await ws.send_str(batch("a", LARGEST_WEBSOCKET_MESSAGE))  # 147,000 one-byte messages
            await until_closed_or_quiet(ws, 2.0)

        return strike

    await assert_node_keeps_answering(*warren, prepare, "the largest WebSocket frame after a 124 KiB header")


async def test_the_node_keeps_answering_while_a_websocket_sends_frames_of_many_small_stomp_frames(
    warren: tuple[NodeProcess, str],
) -> None:
    async def prepare(http: aiohttp.ClientSession, url: str) -> Strike:
        ws = await connected_websocket(http, url)

        async def strike() -> None:
            # Valid input as large as allowed, three WebSocket frames of it: about 80,000 STOMP frames.
            for _ in range(3):
                await ws.send_str(batch(ACKS, LARGEST_WEBSOCKET_MESSAGE))
            await ws.send_str(json.dumps(["SEND\ndestination:/nowhere\nreceipt:done\n\n\x00"]))
            await until_closed_or_quiet(ws, 10.0)

        return strike

    await assert_node_keeps_answering(*warren, prepare, "three WebSocket frames of 26,000 ACK frames each")


async def test_the_node_keeps_answering_while_an_xhr_send_carries_thousands_of_tiny_messages(
    warren: tuple[NodeProcess, str],
) -> None:
    async def prepare(http: aiohttp.ClientSession, url: str) -> Strike:
        session = await xhr_session(http, url)
        await xhr_send(http, session, url, [UNTERMINATED_HEAD])

        async def strike() -> None:
            await xhr_send(http, session, url, ["a"] * 6_000)  # 25 KB

        return strike

    await assert_node_keeps_answering(*warren, prepare, "a 25 KB xhr_send after a 124 KiB header")


async def test_the_node_keeps_answering_while_an_xhr_send_carries_the_largest_body_allowed(
    warren: tuple[NodeProcess, str],
) -> None:
    async def prepare(http: aiohttp.ClientSession, url: str) -> Strike:
        session = await xhr_session(http, url)

        async def strike() -> None:
            # Valid input as large as allowed: about 47,000 ACK frames.
            assert await xhr_send(http, session, url, batch(ACKS, LARGEST_REQUEST_BODY)) == 204

        return strike

    await assert_node_keeps_answering(*warren, prepare, "a 1 MiB xhr_send of 47,000 ACK frames")


async def test_the_node_keeps_answering_while_a_jsonp_send_carries_a_body_of_escapes(
    warren: tuple[NodeProcess, str],
) -> None:
    async def prepare(http: aiohttp.ClientSession, url: str) -> Strike:
        session = await xhr_session(http, url)
        # The form field's value URL-encoded as a browser form does it: every byte an escape, 1 MiB in all.
        frames = "".join(f"%{byte:02X}" for byte in batch(ACKS, LARGEST_REQUEST_BODY // 3 - 16).encode())

        async def strike() -> None:
            async with http.post(
                session + "/jsonp_send",
                data=("d=" + frames).encode(),
                headers={"Origin": url, "Content-Type": "application/x-www-form-urlencoded"},
            ) as reply:
                assert (reply.status, await reply.text()) == (200, "ok")

        return strike

    await assert_node_keeps_answering(*warren, prepare, "a 1 MiB jsonp_send of URL escapes")
