"""Hostile or broken input over STOMP/SockJS: a clear ERROR for the sender, and the node keeps serving others."""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import Node
from tests.support.stomp_client import StompClient
from tests.test_chat import online


async def expect_error(client: StompClient, reason: str) -> str:
    frame = await client.next_frame()
    assert frame.command == "ERROR", frame
    assert frame.headers["message"] == reason, frame.headers
    code, _ = await client.received.closed
    assert 4000 <= code < 5000
    return frame.body.decode()


async def still_serving(node: Node, make_user: Callable[[str], str], clients: list[StompClient]) -> None:
    carol, dave = make_user("carol"), make_user("dave")
    c = await online(node, carol, clients)
    d = await online(node, dave, clients)
    await c.send_chat(dave, "still here?")
    assert (await d.next_message())["content"] == "still here?"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("NOPE\n\n\x00", "protocol-error"),
        ("send\n\n\x00", "malformed-frame"),
        ("SEND\nbroken header\n\n\x00", "malformed-frame"),
        ("SEND\ndestination:/topic/everyone\n\n{}\x00", "protocol-error"),
        ("SUBSCRIBE\nid:1\ndestination:/queue/other\n\n\x00", "protocol-error"),
        ("SEND\ncontent-length:99999999\n\n", "malformed-frame"),
        ("SEND\ndestination:/message/chat\n\n\ud800\x00", "invalid-utf8"),
        ("BEGIN\ntransaction:t\n\n\x00", "protocol-error"),
    ],
    ids=[
        "unknown-command",
        "lowercase",
        "bad-header",
        "unknown-send-destination",
        "unknown-subscription",
        "oversized-frame",
        "invalid-utf8",
        "transactions",
    ],
)
async def test_bad_frames_get_error_and_close(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient], wire: str, reason: str
) -> None:
    alice = make_user("alice")
    client = await node.client(alice)
    stomp_clients.append(client)
    assert (await client.connect()).command == "CONNECTED"
    await client.send_raw(wire)
    await expect_error(client, reason)
    await still_serving(node, make_user, stomp_clients)


async def test_frames_before_connect_are_refused(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    client = await node.client(make_user("alice"))
    stomp_clients.append(client)
    await client.open()
    await client.send_frame("SUBSCRIBE", {"destination": "/user/topic/reply", "id": "0"})
    assert "send CONNECT first" in await expect_error(client, "protocol-error")


async def test_anonymous_connection_gets_error_and_is_closed(node: Node, stomp_clients: list[StompClient]) -> None:
    http = aiohttp.ClientSession()
    client = StompClient(http, node.url)
    stomp_clients.append(client)
    frame = await client.connect()
    assert frame.command == "ERROR" and frame.headers["message"] == "not-signed-in"
    assert (await client.received.closed)[0] == 4001


async def test_cannot_subscribe_to_another_users_destination(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    client = await node.client(alice)
    stomp_clients.append(client)
    await client.connect()
    await client.send_frame("SUBSCRIBE", {"destination": f"/user/{bob}/topic/reply", "id": "0"})
    assert "another user's destination" in await expect_error(client, "protocol-error")


async def test_own_explicit_user_destination_is_allowed(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    client = await node.client(alice)
    stomp_clients.append(client)
    await client.connect()
    await client.subscribe(f"/user/{alice}/topic/reply")
    await client.send_chat(alice, "self")
    frame = await client.next_frame()
    assert frame.command == "MESSAGE" and json.loads(frame.body)["content"] == "self"


async def test_oversized_message_is_refused_but_connection_stays(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    await a.subscribe("/user/queue/errors", sub_id="errors")
    await a.send_chat(bob, "x" * (64 * 1024 + 1), receipt="big")
    frame = await a.next_frame()
    error = json.loads(frame.body)
    assert error["error"] == "too-large" and "MAX_MESSAGE_BYTES" in error["message"]
    await a.send_chat(bob, "x" * (64 * 1024), receipt="ok")
    assert (await a.next_frame()).headers.get("receipt-id") == "ok"


async def test_not_json_body_is_refused_clearly(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    a = await online(node, alice, stomp_clients)
    await a.subscribe("/user/queue/errors", sub_id="errors")
    for body in (b"not json", b"[1,2]", b'{"receiver": 5, "msg": "x"}'):
        await a.send_frame("SEND", {"destination": "/message/chat"}, body)
        assert json.loads((await a.next_frame()).body)["error"] == "invalid-message"


async def test_odd_usernames_only_get_their_own_mail(
    node: Node, directory: object, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    """``.``, ``*`` and ``#`` never act as routing wildcards: each of these users gets exactly their own mail."""
    from tests.conftest import PASSWORD

    suffix = make_user("x").rsplit("-", 1)[1]
    names = [f"a.b{suffix}", f"a*{suffix}", f"#{suffix}", f"*.x{suffix}", f"ü{suffix}", f"a_2e_b{suffix}", "#", "*"]
    for name in names:
        directory.add(name, PASSWORD)  # type: ignore[attr-defined]
    sender = make_user("sender")
    clients = {name: await online(node, name, stomp_clients) for name in names}
    s = await online(node, sender, stomp_clients)
    for name in names:
        await s.send_chat(name, f"for {name}")
    for name, client in clients.items():
        got = await client.next_message()
        assert (got["to"], got["content"]) == (name, f"for {name}")
        assert not client.take_buffered(), f"{name} received someone else's mail"
