"""Chat end to end over real SockJS WebSockets, against both backplanes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from tests.conftest import Node
from tests.support.stomp_client import StompClient


async def online(node: Node, user: str, clients: list[StompClient], ack: str = "auto") -> StompClient:
    client = await node.client(user)
    clients.append(client)
    connected = await client.connect()
    assert connected.command == "CONNECTED", connected
    await client.subscribe(ack=ack)
    return client


async def test_two_users_chat_both_ways(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    b = await online(node, bob, stomp_clients)

    await a.send_chat(bob, "hi bob", receipt="r1")
    receipt = await a.next_frame()
    assert receipt.command == "RECEIPT" and receipt.headers["receipt-id"] == "r1"
    got = await b.next_message()
    assert got["from"] == alice and got["to"] == bob and got["content"] == "hi bob"
    assert isinstance(got["ts"], int) and len(got["id"]) == 32

    await b.send_chat(alice, 'hello alice ✓ «quotes» "and" \n newlines')
    got = await a.next_message()
    assert got["from"] == bob and got["content"] == 'hello alice ✓ «quotes» "and" \n newlines'


async def test_connected_frame_names_user_and_negotiates(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    client = await node.client(alice)
    stomp_clients.append(client)
    frame = await client.connect({"accept-version": "1.1,1.2", "heart-beat": "5000,20000"})
    assert frame.headers["version"] == "1.2"
    assert frame.headers["user-name"] == alice
    assert frame.headers["heart-beat"] == "10000,10000"


async def test_every_tab_gets_the_message(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    tabs = [await online(node, bob, stomp_clients) for _ in range(3)]
    await a.send_chat(bob, "to every tab")
    for tab in tabs:
        assert (await tab.next_message())["content"] == "to every tab"


async def test_offline_mail_arrives_in_order_on_subscribe(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    for i in range(20):
        await a.send_chat(bob, f"offline {i}", receipt=f"r{i}")
        assert (await a.next_frame()).command == "RECEIPT"
    b = await online(node, bob, stomp_clients)
    # Live messages sent while the mailbox drains come after the mailbox, in send order.
    for i in range(20, 25):
        await a.send_chat(bob, f"offline {i}")
    contents = [(await b.next_message())["content"] for _ in range(25)]
    assert contents == [f"offline {i}" for i in range(25)]


async def test_mailbox_mail_is_delivered_once(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    await a.send_chat(bob, "once", receipt="r")
    assert (await a.next_frame()).command == "RECEIPT"
    b1 = await online(node, bob, stomp_clients)
    assert (await b1.next_message())["content"] == "once"
    await b1.close()
    # A later connection and the REST pull find nothing more.
    b2 = await online(node, bob, stomp_clients)
    http = await node.http_for(bob)
    async with http.post(f"{node.url}/wsTemplate/pullUnreadMessage", data={"destination": "/user/topic/reply"}) as resp:
        assert (await resp.json()) == {"code": "200", "result": []}
    await http.close()
    await a.send_chat(bob, "live")
    assert (await b2.next_message())["content"] == "live"


async def test_rest_pull_returns_and_removes_offline_mail(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    http_a = await node.http_for(alice)
    for text in ("one", "two", "three"):
        async with http_a.post(f"{node.url}/wsTemplate/sendToUser", data={"receiver": bob, "msg": text}) as resp:
            assert resp.status == 200, await resp.text()
    http_b = await node.http_for(bob)
    async with http_b.post(
        f"{node.url}/wsTemplate/pullUnreadMessage", data={"destination": "/user/topic/reply"}
    ) as resp:
        body = await resp.json()
    assert body["code"] == "200"
    assert [json.loads(item)["content"] for item in body["result"]] == ["one", "two", "three"]
    async with http_b.post(
        f"{node.url}/wsTemplate/pullUnreadMessage", data={"destination": "/user/topic/reply"}
    ) as resp:
        assert (await resp.json())["result"] == []
    await http_a.close()
    await http_b.close()


async def test_unacknowledged_mail_comes_back_on_next_connection(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    b = await online(node, bob, stomp_clients, ack="client-individual")
    await a.send_chat(bob, "acked")
    await a.send_chat(bob, "not acked")
    first = await b.next_frame()
    second = await b.next_frame()
    await b.send_frame("ACK", {"id": first.headers["ack"], "receipt": "ack-1"})
    assert (await b.next_frame()).command == "RECEIPT"
    await b.close()
    await asyncio.sleep(0)  # let the server see the socket close
    b2 = await online(node, bob, stomp_clients, ack="client-individual")
    again = await b2.next_frame()
    assert json.loads(again.body)["content"] == "not acked"
    assert again.headers["message-id"] == second.headers["message-id"]


async def test_message_to_unknown_user_is_refused_on_errors_channel(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    a = await online(node, alice, stomp_clients)
    await a.subscribe("/user/queue/errors", sub_id="errors")
    await a.send_chat("nobody-here", "hello?", receipt="r-unknown")
    frame = await a.next_frame()
    assert frame.command == "MESSAGE" and frame.headers["destination"] == "/user/queue/errors"
    error = json.loads(frame.body)
    assert error["error"] == "unknown-user" and error["receipt-id"] == "r-unknown"
    # The connection is still usable.
    await a.send_chat(alice, "note to self")
    assert (await a.next_message())["content"] == "note to self"
