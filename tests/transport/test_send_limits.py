"""What a client may put in one WebSocket frame or one ``xhr_send``/``jsonp_send`` body on Warren's endpoint.

A batch of more than ``MAX_MESSAGES_PER_BATCH`` SockJS messages is refused whole: a WebSocket is closed with
``c[1009, ...]`` saying why, a send request answers 413. Broken JSON, JSON nested deeper than the interpreter's
stack and anything but an array of strings answer 400 (never a 500 with a traceback), and the session stays
usable. (The SockJS conformance services keep the protocol's 500: ``test_sockjs_protocol.py``.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from app.transport.framing import MAX_MESSAGES_PER_BATCH
from tests.conftest import PASSWORD
from tests.support.stomp_client import sign_in
from tests.transport.conftest import ServerFactory
from tests.transport.support import Running, new_session_url

ENDPOINT = "/chat-websocket"
CONNECT = "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"


@pytest.fixture
async def node(warren_factory: ServerFactory) -> Running:
    # Sessions outlive the pauses between the requests of a test.
    return await warren_factory(disconnect_delay_seconds=30.0)


@pytest.fixture
async def alice(node: Running, make_user: Callable[[str], str]) -> AsyncIterator[aiohttp.ClientSession]:
    http = await sign_in(node.url, make_user("alice"), PASSWORD)
    yield http
    await http.close()


async def polling_session(http: aiohttp.ClientSession, node: Running) -> str:
    url = new_session_url(node.url + ENDPOINT)
    async with http.post(url + "/xhr", headers={"Origin": node.url}) as reply:
        assert (await reply.text()) == "o\n"
    return url


async def post(http: aiohttp.ClientSession, url: str, body: str | bytes, form: bool = False) -> tuple[int, str]:
    headers = {"Origin": url.split(ENDPOINT)[0]}
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with http.post(url, data=body, headers=headers) as reply:
        return reply.status, await reply.text()


async def still_answers_connect(http: aiohttp.ClientSession, url: str) -> None:
    assert (await post(http, url + "/xhr_send", json.dumps([CONNECT])))[0] == 204
    async with http.post(url + "/xhr", headers={"Origin": url.split(ENDPOINT)[0]}) as reply:
        assert "CONNECTED" in await reply.text()


async def test_a_websocket_frame_of_10000_messages_is_refused_and_the_client_told_why(
    node: Running, alice: aiohttp.ClientSession
) -> None:
    url = new_session_url(node.url + ENDPOINT).replace("http", "ws", 1) + "/websocket"
    async with alice.ws_connect(url, headers={"Origin": node.url}) as ws:
        assert await ws.receive_str() == "o"
        await ws.send_str(json.dumps([CONNECT] + ["\n"] * 10_000))
        close = await ws.receive_str(timeout=5)
        code, reason = json.loads(close[1:])
        assert close.startswith("c") and code == 1009, close
        assert f"at most {MAX_MESSAGES_PER_BATCH}" in reason
        # Nothing of the refused batch was handled: not even its CONNECT.
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_an_xhr_send_of_10000_messages_is_refused_with_413_and_the_session_stays(
    node: Running, alice: aiohttp.ClientSession
) -> None:
    url = await polling_session(alice, node)
    status, text = await post(alice, url + "/xhr_send", json.dumps(["\n"] * 10_000))
    assert status == 413 and f"at most {MAX_MESSAGES_PER_BATCH}" in text
    status, text = await post(alice, url + "/jsonp_send", "d=" + json.dumps(["\n"] * 10_000), form=True)
    assert status == 413 and f"at most {MAX_MESSAGES_PER_BATCH}" in text
    # A batch at the bound is fine.
    assert (await post(alice, url + "/xhr_send", json.dumps(["\n"] * MAX_MESSAGES_PER_BATCH)))[0] == 204
    await still_answers_connect(alice, url)


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000, '["x"' + "]" * 10, "[" * 50_000 + "]" * 50_000, '{"a": "b"}', '["a", 1]', b'["\xff"]', "nul"],
    ids=["deep-open", "broken", "deep-array", "object", "not-strings", "bad-utf8", "not-json"],
)
async def test_a_broken_or_deeply_nested_send_body_gets_400_and_the_session_stays(
    node: Running, alice: aiohttp.ClientSession, body: str | bytes
) -> None:
    url = await polling_session(alice, node)
    status, text = await post(alice, url + "/xhr_send", body)
    assert (status, text) == (400, "Broken JSON encoding.")
    if isinstance(body, str):
        from urllib.parse import quote

        status, text = await post(alice, url + "/jsonp_send", "d=" + quote(body), form=True)
        assert (status, text) == (400, "Broken JSON encoding.")
    await still_answers_connect(alice, url)


async def test_a_deeply_nested_websocket_frame_closes_only_that_session(
    node: Running, alice: aiohttp.ClientSession
) -> None:
    url = new_session_url(node.url + ENDPOINT).replace("http", "ws", 1) + "/websocket"
    async with alice.ws_connect(url, headers={"Origin": node.url}) as ws:
        assert await ws.receive_str() == "o"
        await ws.send_str("[" * 100_000)
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    async with alice.get(node.url + "/healthz") as reply:
        assert reply.status == 200
