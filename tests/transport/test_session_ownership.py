"""A SockJS session belongs to the sign-in that opened it (issue #11, "session takeover").

Every request to ``/chat-websocket/<server>/<session>/<transport>`` must carry the cookie of the sign-in that opened
the session. Someone else — another user, or a client with no cookie — who learns or chooses a session id gets
exactly what an unused id would give them, and the owner's session goes on as if nothing happened. A page of
another site cannot make a browser open a session either (``Sec-Fetch-*``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable

import pytest

from app.keys import SOCKJS
from app.stomp.frames import encode
from tests.conftest import PASSWORD
from tests.support.stomp_client import StompClient, sign_in
from tests.transport.conftest import ServerFactory
from tests.transport.support import (
    Http,
    PollingStomp,
    Running,
    SockJSStomp,
    StreamingStomp,
    new_session_url,
)

ENDPOINT = "/chat-websocket"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
#: How each receiving transport is requested, and where its first frame ends (None: the whole answer is one frame).
RECEIVING: dict[str, tuple[str, str, int, bytes | None]] = {
    "xhr": ("POST", "/xhr", 0, None),
    "jsonp": ("GET", "/jsonp?c=cb", 0, None),
    "xhr_streaming": ("POST", "/xhr_streaming", 2049, b"\n"),
    "eventsource": ("GET", "/eventsource", 2, b"\r\n\r\n"),
    "htmlfile": ("GET", "/htmlfile?c=cb", 0, b"</script>\r\n"),
}


@pytest.fixture
async def https() -> AsyncIterator[list[Http]]:
    opened: list[Http] = []
    yield opened
    for http in opened:
        await http.close()


async def signed_in(node: Running, user: str, https: list[Http]) -> Http:
    http = Http(cookies=True)
    https.append(http)
    reply = await http.post(
        f"{node.url}/login",
        body=json.dumps({"username": user, "password": PASSWORD}),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply
    return http


def anonymous(https: list[Http]) -> Http:
    http = Http(cookies=True)
    https.append(http)
    return http


async def victim_session(node: Running, user: str, transport: str, https: list[Http]) -> SockJSStomp:
    """``user`` connected and subscribed over ``transport`` (xhr, xhr_streaming or eventsource)."""
    http = await signed_in(node, user, https)
    base = node.url + ENDPOINT
    client: SockJSStomp
    if transport == "xhr":
        client = PollingStomp(http, base, origin=node.url)
    else:
        client = StreamingStomp(http, base, transport, origin=node.url)
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    return client


async def websocket_user(node: Running, user: str, clients: list[StompClient]) -> StompClient:
    client = StompClient(await sign_in(node.url, user, PASSWORD), node.url)
    clients.append(client)
    assert (await client.connect()).command == "CONNECTED"
    await client.subscribe()
    return client


async def first_answer(http: Http, url: str, transport: str, origin: str) -> tuple[int, str]:
    """Status and first SockJS frame (as the transport writes it) of a receiving request to ``url``."""
    method, suffix, prelude, end = RECEIVING[transport]
    async with http.session.request(method, url + suffix, headers={"Origin": origin}) as response:
        if end is None or response.status != 200:
            return response.status, (await asyncio.wait_for(response.read(), 5)).decode()
        if prelude:
            await asyncio.wait_for(response.content.readexactly(prelude), 5)
        return response.status, (await asyncio.wait_for(response.content.readuntil(end), 5)).decode()


async def send_into(http: Http, url: str, transport: str, origin: str, frame: str) -> int:
    payload = json.dumps([frame])
    if transport == "xhr_send":
        return (await http.post(url + "/xhr_send", body=payload, headers={"Origin": origin})).status
    body = "d=" + urllib.parse.quote(payload)
    return (await http.post(url + "/jsonp_send", body=body, headers={**FORM, "Origin": origin})).status


def chat_send(receiver: str, msg: str) -> str:
    body = json.dumps({"receiver": receiver, "msg": msg}).encode()
    return encode("SEND", {"destination": "/message/chat", "content-type": "application/json"}, body)


@pytest.mark.parametrize("transport", list(RECEIVING))
async def test_someone_else_cannot_read_my_mail_through_my_session_id(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
    transport: str,
) -> None:
    """Another user, or a client without a cookie, who knows alice's session id and polls or streams it with
    ``transport`` gets what an unused id gives them; the message waiting for alice stays hers."""
    node = await warren_factory(disconnect_delay_seconds=10.0)
    alice, bob, mallory = make_user("alice"), make_user("bob"), make_user("mallory")
    victim = await victim_session(node, alice, "xhr", https)
    sender = await websocket_user(node, bob, clients)
    await sender.send_chat(alice, "for alice only", receipt="r")
    assert (await sender.next_frame()).command == "RECEIPT"
    for attacker in (await signed_in(node, mallory, https), anonymous(https)):
        unused = await first_answer(attacker, new_session_url(node.url + ENDPOINT), transport, node.url)
        taken = await first_answer(attacker, victim.url, transport, node.url)
        assert "for alice only" not in taken[1]
        assert taken == unused
    assert (await victim.next_message())["content"] == "for alice only"


@pytest.mark.parametrize("send_transport", ["xhr_send", "jsonp_send"])
@pytest.mark.parametrize("victim_transport", ["xhr", "xhr_streaming", "eventsource"])
async def test_someone_else_cannot_send_as_me_through_my_session_id(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
    victim_transport: str,
    send_transport: str,
) -> None:
    """A STOMP SEND posted into alice's session by another user or by a client without a cookie is refused like
    a send to an unused id, and never reaches bob; alice's own sends still do."""
    node = await warren_factory(disconnect_delay_seconds=10.0)
    alice, bob, mallory = make_user("alice"), make_user("bob"), make_user("mallory")
    victim = await victim_session(node, alice, victim_transport, https)
    receiver = await websocket_user(node, bob, clients)
    for attacker in (await signed_in(node, mallory, https), anonymous(https)):
        forged = chat_send(bob, "forged as alice")
        unused = await send_into(attacker, new_session_url(node.url + ENDPOINT), send_transport, node.url, forged)
        assert await send_into(attacker, victim.url, send_transport, node.url, forged) == unused == 404
    await victim.send_chat(bob, "really from alice", receipt="mine")
    assert (await victim.next_frame()).headers.get("receipt-id") == "mine"
    message = await receiver.next_message()
    assert (message["from"], message["content"]) == (alice, "really from alice")


async def test_a_session_opened_by_a_cross_site_link_cannot_be_driven_by_the_attacker(
    warren_factory: ServerFactory,
    make_user: Callable[[str], str],
    clients: list[StompClient],
    https: list[Http],
) -> None:
    """The reproduced attack, as an old browser without Sec-Fetch headers meets it: a page of another site sends
    alice's browser to ``jsonp`` under an id the attacker chose; the attacker then drives that id from their own
    machine. Alice's session opens, but the attacker reaches only a session of their own: no mail, no sends."""
    node = await warren_factory(disconnect_delay_seconds=10.0)
    alice, bob = make_user("alice"), make_user("bob")
    chosen = f"{node.url}{ENDPOINT}/000/attackerchosen1"
    browser = await signed_in(node, alice, https)
    # A top-level navigation: the Lax cookie goes along, neither Origin nor Referer does.
    assert (await browser.get(chosen + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    receiver = await websocket_user(node, bob, clients)
    attacker = anonymous(https)
    for frame in (
        encode("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"}),
        encode("SUBSCRIBE", {"destination": "/user/topic/reply", "id": "0"}),
        chat_send(bob, "sent by the attacker as alice"),
    ):
        assert await send_into(attacker, chosen, "jsonp_send", node.url, frame) == 404
    sender = await websocket_user(node, make_user("carol"), clients)
    await sender.send_chat(alice, "alice's mail", receipt="r")
    assert (await sender.next_frame()).command == "RECEIPT"
    answers = [(await attacker.get(chosen + "/jsonp?c=x")).text for _ in range(3)]
    assert not any("alice's mail" in answer for answer in answers)
    await sender.send_chat(bob, "first real message to bob")
    assert (await receiver.next_message())["content"] == "first real message to bob"


NAVIGATIONS = {
    "link or window.open": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
    "frame": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"},
    "sibling site": {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
}
OPENING = {"jsonp": ("GET", "/jsonp?c=x"), "htmlfile": ("GET", "/htmlfile?c=x"), "eventsource": ("GET", "/eventsource"),
           "xhr": ("POST", "/xhr"), "xhr_streaming": ("POST", "/xhr_streaming")}


@pytest.mark.parametrize("navigation", list(NAVIGATIONS))
async def test_a_page_of_another_site_cannot_open_a_session_in_my_browser(
    warren_factory: ServerFactory, make_user: Callable[[str], str], https: list[Http], navigation: str
) -> None:
    node = await warren_factory()
    browser = await signed_in(node, make_user("alice"), https)
    for transport, (method, suffix) in OPENING.items():
        url = new_session_url(node.url + ENDPOINT)
        reply = await browser.request(method, url + suffix, headers=NAVIGATIONS[navigation])
        assert reply.status == 403, (transport, reply)
        for send in ("/xhr_send", "/jsonp_send"):
            assert (await browser.post(url + send, body="d=[]", headers=NAVIGATIONS[navigation])).status == 403
    assert not node.app[SOCKJS].sessions


async def test_the_iframe_transports_and_old_browsers_still_open_sessions(
    warren_factory: ServerFactory, make_user: Callable[[str], str], https: list[Http]
) -> None:
    """What the iframe transports send (a same-origin frame for htmlfile, a same-origin form post for
    jsonp_send), a script of an allowed page, and a browser that sends no Sec-Fetch headers at all."""
    node = await warren_factory()
    browser = await signed_in(node, make_user("alice"), https)
    frame = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}
    script = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}
    for headers in (frame, script, {}):
        url = new_session_url(node.url + ENDPOINT)
        assert (await browser.get(url + "/jsonp?c=x", headers=headers)).text == '/**/x("o");\r\n'
        sent = await browser.post(url + "/jsonp_send", body="d=%5B%5D", headers={**FORM, **frame})
        assert (sent.status, sent.text) == (200, "ok")
    async with browser.stream("GET", new_session_url(node.url + ENDPOINT) + "/htmlfile?c=x", headers=frame) as page:
        assert page.status == 200
        assert b'p("o")' in await page.until(b'p("o");\n</script>\r\n')


ODD_IDS = ["abc%231", "%23", "a%25b", "a%3Fb", "a%00b", "a%0Ab", "x" * 200]


async def test_odd_session_ids_are_not_found_never_a_server_error(
    warren_factory: ServerFactory, make_user: Callable[[str], str], clients: list[StompClient], https: list[Http]
) -> None:
    node = await warren_factory()
    # A WebSocket session named "abc" is registered as "abc#1": an id with "#" once collided with it (500).
    client = StompClient(await sign_in(node.url, make_user("alice"), PASSWORD), node.url)
    clients.append(client)
    ws_url = f"{node.url}{ENDPOINT}/000/abc/websocket".replace("http", "ws", 1)
    client.ws = await client.http.ws_connect(ws_url, headers={"Origin": node.url})
    http = anonymous(https)
    for odd in ODD_IDS:
        for server, session in ((f"000/{odd}", ""), (odd, "/abc")):
            url = f"{node.url}{ENDPOINT}/{server}{session}"
            for method, suffix in (("POST", "/xhr"), ("POST", "/xhr_send"), ("GET", "/jsonp?c=x"),
                                   ("GET", "/eventsource"), ("GET", "/websocket")):
                reply = await http.request(method, url + suffix, headers={"Origin": node.url})
                assert 400 <= reply.status < 500, (odd, server, suffix, reply.status)
        assert (await http.post(f"{node.url}{ENDPOINT}/000/{odd}/xhr")).status == 404, odd
