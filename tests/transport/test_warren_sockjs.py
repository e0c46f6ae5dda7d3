"""Warren's SockJS endpoint: the origin policy, and chat mail that must not vanish with a polling client.

The nodes run as in production (``web.AppRunner`` without handler cancellation; a few tests repeat with it on,
as aiohttp's test server has it) with short SockJS timers: heart-beat 1 s, disconnect delay 0.5 s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from app.keys import HUB, SOCKJS
from tests.conftest import PASSWORD
from tests.support.stomp_client import StompClient, sign_in
from tests.transport.conftest import ServerFactory
from tests.transport.support import Http, PollingStomp, RawRequest, Running, eventually, new_session_url

ENDPOINT = "/chat-websocket"
FOREIGN = "https://evil.example"


@pytest.fixture
async def https() -> AsyncIterator[list[Http]]:
    opened: list[Http] = []
    yield opened
    for http in opened:
        await http.close()


async def websocket_user(node: Running, user: str, clients: list[StompClient]) -> StompClient:
    client = StompClient(await sign_in(node.url, user, PASSWORD), node.url)
    clients.append(client)
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    return client


async def polling_user(node: Running, user: str, https: list[Http]) -> PollingStomp:
    http = Http(cookies=True)
    https.append(http)
    reply = await http.post(f"{node.url}/login", body=json.dumps({"username": user, "password": PASSWORD}),
                            headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply
    client = PollingStomp(http, node.url + ENDPOINT, origin=node.url)
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    return client


async def send_confirmed(client: StompClient, receiver: str, texts: list[str]) -> None:
    """Send and wait for each RECEIPT: the server has accepted (and delivered or stored) every message."""
    for number, text in enumerate(texts):
        await client.send_chat(receiver, text, receipt=f"r{number}")
        receipt = await client.next_frame()
        assert receipt.command == "RECEIPT", receipt


async def contents(client: StompClient, count: int) -> list[str]:
    return [(await client.next_message())["content"] for _ in range(count)]


# -- origin policy -------------------------------------------------------------------------------------------------


async def test_info_reports_and_enforces_the_allowed_origins(warren_factory: ServerFactory, http: Http) -> None:
    node = await warren_factory(allowed_origins=("https://chat.example.com",))
    host_port = node.url.removeprefix("http://")
    own = await http.get(f"{node.url}{ENDPOINT}/info", headers={"Origin": node.url})
    assert own.status == 200
    assert own.json()["origins"] == [host_port, "chat.example.com:443"]
    assert own.json()["cookie_needed"] is True
    listed = await http.get(f"{node.url}{ENDPOINT}/info", headers={"Origin": "https://chat.example.com"})
    assert listed.status == 200
    assert listed.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"
    foreign = await http.get(f"{node.url}{ENDPOINT}/info", headers={"Origin": FOREIGN})
    assert foreign.status == 403 and "Access-Control-Allow-Origin" not in foreign.headers
    preflight = {"Origin": FOREIGN, "Access-Control-Request-Method": "POST"}
    assert (await http.options(f"{node.url}{ENDPOINT}/1/a/xhr", headers=preflight)).status == 403
    preflight["Origin"] = "https://chat.example.com"
    allowed = await http.options(f"{node.url}{ENDPOINT}/1/a/xhr", headers=preflight)
    assert allowed.status == 204 and allowed.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"


async def test_iframe_page_may_be_framed_by_allowed_origins_only(warren_factory: ServerFactory, http: Http) -> None:
    node = await warren_factory(allowed_origins=("https://chat.example.com",))
    reply = await http.get(f"{node.url}{ENDPOINT}/iframe.html")
    assert reply.status == 200
    assert reply.headers["Content-Security-Policy"] == "frame-ancestors 'self' https://chat.example.com"


async def test_pages_of_other_origins_cannot_open_sessions(
    warren_factory: ServerFactory, make_user: Callable[[str], str]
) -> None:
    """A foreign page holding the user's cookie is refused on every transport and on the upgrade."""
    node = await warren_factory()
    alice = make_user("alice")
    http = await sign_in(node.url, alice, PASSWORD)
    try:
        url = new_session_url(node.url + ENDPOINT)
        for method, transport in (("POST", "xhr"), ("POST", "xhr_streaming"), ("GET", "eventsource"),
                                  ("GET", "htmlfile?c=x"), ("GET", "jsonp?c=x")):
            async with http.request(method, f"{url}/{transport}", headers={"Origin": FOREIGN}) as response:
                assert response.status == 403, transport
        # A <script src> carries no Origin but a Referer: that is checked too.
        async with http.get(f"{url}/jsonp?c=x", headers={"Referer": FOREIGN + "/page"}) as response:
            assert response.status == 403
        ws_url = "ws" + url.removeprefix("http") + "/websocket"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, headers={"Origin": FOREIGN})
        assert refused.value.status == 403
        raw = "ws" + node.url.removeprefix("http") + ENDPOINT + "/websocket"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(raw, headers={"Origin": FOREIGN})
        assert not node.app[SOCKJS].sessions
        # The same requests from the server's own page work.
        async with http.post(f"{url}/xhr", headers={"Origin": node.url}) as response:
            assert response.status == 200 and await response.text() == "o\n"
    finally:
        await http.close()


# -- mail that must not vanish -------------------------------------------------------------------------------------


async def test_mail_queued_for_a_client_that_stopped_polling_reaches_the_mailbox(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
) -> None:
    node = await warren_factory()
    alice, bob = make_user("alice"), make_user("bob")
    a = await polling_user(node, alice, https)
    assert node.app[SOCKJS].count_by_transport() == {"xhr-polling": 1}
    b = await websocket_user(node, bob, clients)
    # Alice's browser goes away between two polls; bob writes while her session still counts as online.
    await send_confirmed(b, alice, ["one", "two", "three"])
    [session] = [s for s in node.app[SOCKJS].sessions.values() if s.id == a.url.rsplit("/", 1)[1]]
    assert session.queued_bytes() > 0
    hub = node.app[HUB]
    await eventually(lambda: not hub.is_online(alice), "alice's idle session to expire")
    back = await websocket_user(node, alice, clients)
    assert await contents(back, 3) == ["one", "two", "three"]


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["production", "cancelling"])
async def test_mail_sent_when_a_poll_was_aborted_is_kept(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
    handler_cancellation: bool,
) -> None:
    node = await warren_factory(handler_cancellation=handler_cancellation, disconnect_delay_seconds=30.0)
    alice, bob = make_user("alice"), make_user("bob")
    a = await polling_user(node, alice, https)
    b = await websocket_user(node, bob, clients)
    cookie = "; ".join(f"{c.key}={c.value}" for c in a.http.session.cookie_jar)
    pending = await RawRequest.send(a.url + "/xhr", headers=f"Cookie: {cookie}\r\nOrigin: {node.url}\r\n")
    # Proof that the raw request holds the session: a second poll is refused.
    assert (await a.poll()).startswith("c[2010")
    await pending.close()  # the tab is closed mid-poll
    await send_confirmed(b, alice, ["during", "the", "drop"])
    back = await websocket_user(node, alice, clients)
    received = await contents(back, 3)
    assert received == ["during", "the", "drop"]


async def test_a_slow_client_is_closed_and_its_mail_kept(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
) -> None:
    """The session queue is bounded: past SEND_BUFFER_BYTES the client is closed (4008), nothing is lost."""
    node = await warren_factory(send_buffer_bytes=1024, disconnect_delay_seconds=30.0)
    alice, bob = make_user("alice"), make_user("bob")
    a = await polling_user(node, alice, https)
    b = await websocket_user(node, bob, clients)
    sent = [f"{i}:" + "x" * 400 for i in range(5)]
    await send_confirmed(b, alice, sent)
    while a.closed is None:
        await a.poll()
    got = [json.loads(frame.body)["content"] for frame in a.frames if frame.command == "MESSAGE"]
    assert a.closed[0] == 4008
    assert any(frame.command == "ERROR" and frame.headers["message"] == "slow-consumer" for frame in a.frames)
    assert 0 < len(got) < len(sent)
    # What did not fit waits in her mailbox (read it with the pull API: it would not fit a 1 KiB queue either).
    reply = await a.http.post(f"{node.url}/api/mail/pull", headers={"Origin": node.url})
    assert reply.status == 200, reply
    assert got + [message["content"] for message in reply.json()["messages"]] == sent


async def test_an_answer_counts_as_delivered_only_when_the_client_polls_again(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
) -> None:
    """The tab that closed with a poll answer on the wire (Chrome may finish a closing tab's JSONP request and
    drop it) gets that answer's messages again; what it confirmed by polling again does not come back."""
    node = await warren_factory()
    alice, bob = make_user("alice"), make_user("bob")
    a = await polling_user(node, alice, https)
    b = await websocket_user(node, bob, clients)
    await send_confirmed(b, alice, ["read, then polled again"])
    assert json.loads((await a.next_frame()).body)["content"] == "read, then polled again"
    await send_confirmed(b, alice, ["answer the tab never read"])
    # This poll confirms the first answer and carries the second; then the tab is gone.
    assert json.loads((await a.next_frame()).body)["content"] == "answer the tab never read"
    hub = node.app[HUB]
    await eventually(lambda: not hub.is_online(alice), "alice's idle session to expire")
    back = await websocket_user(node, alice, clients)
    await send_confirmed(b, alice, ["after her return"])
    assert await contents(back, 2) == ["answer the tab never read", "after her return"]
