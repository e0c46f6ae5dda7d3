"""Memory a user can fill, and mailboxes one sender can fill (issue #11), as a user notices them:

* "the node runs out of memory": escaped messages to an offline user, a pull of a huge mailbox, receipts queued for
  a client that never reads, request bodies that never finish;
* "one sender fills my mailbox and my friends can't write to me".

On both backplanes where a backplane is involved.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import pytest
from yarl import URL

from app.backplane.topology import mailbox_queue_name
from app.bodies import BODY_BUDGET
from app.core.hub import BATCH_BYTES
from app.keys import SOCKJS
from tests.conftest import Node, NodeFactory
from tests.support.stomp_client import StompClient
from tests.test_api import set_policy
from tests.test_chat import online

#: 10,000 control characters: 10,000 bytes of UTF-8, but 60,000 bytes once stored as JSON escapes.
ESCAPED = "\x01" * 10_000


async def post_message(http: aiohttp.ClientSession, node: Node, to: str, content: str) -> tuple[int, str | None]:
    async with http.post(f"{node.url}/api/messages", json={"to": to, "content": content}) as resp:
        body = await resp.json()
        return resp.status, body.get("error")


async def pull(http: aiohttp.ClientSession, node: Node) -> list[dict[str, object]]:
    async with http.post(f"{node.url}/api/mail/pull") as resp:
        assert resp.status == 200
        messages: list[dict[str, object]] = (await resp.json())["messages"]
        return messages


# -- escaped content and mailbox bytes --------------------------------------------------------------------------


async def test_escaped_messages_to_an_offline_user_cannot_fill_the_node(
    node_factory: NodeFactory, backplane_kind: str, make_user: Callable[[str], str]
) -> None:
    limit = 1024 * 1024
    node = await node_factory(mailbox_max_bytes=limit, mailbox_sender_share=1.0, message_rate=0)
    alice, bob = make_user("alice"), make_user("bob")
    if backplane_kind == "rabbitmq":
        # The shared broker's policy is the operators'; give bob's mailbox the policy Warren creates for this bound.
        await set_policy(
            f"test-{bob}",
            mailbox_queue_name(bob),
            {"max-length": 1000, "max-length-bytes": limit, "overflow": "reject-publish"},
        )
    http = await node.http_for(alice)
    try:
        # 64 KiB of control characters is 384 KiB as stored: too large, though its UTF-8 is within the limit.
        assert await post_message(http, node, bob, "\x01" * 64 * 1024) == (413, "too-large")
        statuses = [await post_message(http, node, bob, f"{i:03d}{ESCAPED}") for i in range(40)]
    finally:
        await http.close()
        if backplane_kind == "rabbitmq":
            await set_policy(f"test-{bob}", None, None)
    accepted = [s for s in statuses if s == (202, None)]
    # Refused once the mailbox holds its MAILBOX_MAX_BYTES, and from then on: never by dropping old mail.
    assert 10 <= len(accepted) <= limit // 60_000
    assert statuses == accepted + [(507, "mailbox-full")] * (40 - len(accepted))
    reader = await node.http_for(bob)
    got = [m["content"] for m in await pull(reader, node)]
    await reader.close()
    assert got == [f"{i:03d}{ESCAPED}" for i in range(len(accepted))]


async def test_a_pull_of_a_big_mailbox_returns_a_bounded_part_and_the_rest_waits(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    node = await node_factory(mailbox_max_bytes=64 * 1024 * 1024, mailbox_sender_share=1.0, message_rate=0)
    alice, bob = make_user("alice"), make_user("bob")
    http = await node.http_for(alice)
    body = "x" * 60_000
    total = 80  # 4.8 MB waiting for bob
    for i in range(total):
        assert await post_message(http, node, bob, f"{i:03d}{body}") == (202, None)
    await http.close()
    reader = await node.http_for(bob)
    first = await pull(reader, node)
    second = await pull(reader, node)
    await reader.close()
    assert sum(len(json.dumps(m)) for m in first) <= BATCH_BYTES + 2 * 60_100
    assert 0 < len(first) < total
    assert [str(m["content"])[:3] for m in first + second] == [f"{i:03d}" for i in range(total)]


# -- a sender's share -------------------------------------------------------------------------------------------


async def test_one_sender_cannot_fill_my_mailbox_and_my_friends_can_still_write(
    node_factory: NodeFactory, backplane_kind: str, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    if backplane_kind == "rabbitmq":
        pytest.skip("MAILBOX_SENDER_SHARE is not enforced on the RabbitMQ backplane yet (README: Known limits)")
    node = await node_factory(mailbox_max=8, mailbox_sender_share=0.25)  # two messages per sender
    mallory, alice, bob = make_user("mallory"), make_user("alice"), make_user("bob")
    flood = await node.http_for(mallory)
    assert [await post_message(flood, node, bob, f"spam {i}") for i in range(3)] == [
        (202, None),
        (202, None),
        (507, "mailbox-share-full"),
    ]
    async with flood.post(f"{node.url}/api/messages", json={"to": bob, "content": "more"}) as resp:
        refusal = await resp.json()
    assert "share" in refusal["message"] and "others can still write" in refusal["message"]
    # Over STOMP the refusal arrives on the errors channel, and the connection stays.
    sender = await online(node, mallory, stomp_clients)
    await sender.subscribe("/user/queue/errors", "errors")
    await sender.send_chat(bob, "spam over stomp")
    error = json.loads((await sender.next_frame()).body)
    assert error["error"] == "mailbox-share-full"

    friend = await node.http_for(alice)
    assert await post_message(friend, node, bob, "hi bob, it's alice") == (202, None)
    reader = await node.http_for(bob)
    got = [(m["from"], m["content"]) for m in await pull(reader, node)]
    assert got == [(mallory, "spam 0"), (mallory, "spam 1"), (alice, "hi bob, it's alice")]
    # Read mail gives the share back.
    assert await post_message(flood, node, bob, "sorry") == (202, None)
    for http in (flood, friend, reader):
        await http.close()


async def test_a_senders_share_counts_bytes_too(
    node_factory: NodeFactory, backplane_kind: str, make_user: Callable[[str], str]
) -> None:
    if backplane_kind == "rabbitmq":
        pytest.skip("MAILBOX_SENDER_SHARE is not enforced on the RabbitMQ backplane yet (README: Known limits)")
    # A quarter of 320 KiB: 80 KiB per sender; two messages of 45 KB are more.
    node = await node_factory(mailbox_max_bytes=320 * 1024, mailbox_sender_share=0.25)
    mallory, alice, bob = make_user("mallory"), make_user("alice"), make_user("bob")
    flood, friend = await node.http_for(mallory), await node.http_for(alice)
    big = "y" * 45_000
    assert await post_message(flood, node, bob, big) == (202, None)
    assert await post_message(flood, node, bob, big) == (507, "mailbox-share-full")
    assert await post_message(friend, node, bob, big) == (202, None)
    await flood.close()
    await friend.close()


# -- everything queued for a client counts ----------------------------------------------------------------------


async def test_a_client_that_never_reads_its_receipts_is_closed_as_a_slow_consumer(
    node_factory: NodeFactory, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    bound = 64 * 1024
    node = await node_factory(send_buffer_bytes=bound)
    alice = make_user("alice")
    client = await online(node, alice, stomp_clients)
    assert client._reader is not None and client.ws is not None
    client._reader.cancel()  # alice's client stops reading its socket, and keeps sending
    receipt = "r" * 4000
    for i in range(3000):  # 12 MB of RECEIPT frames: far beyond the socket buffers and the bound
        await client.send_frame("ACK", {"id": "nothing", "receipt": f"{i}-{receipt}"})
        # Paced like a client sending one frame at a time (not a whole batch in one read of the node's), so that
        # the node writes what it can and the socket buffers fill first: the bound is what waits behind them.
        await asyncio.sleep(0.001)
    manager = node.app[SOCKJS]

    def queued_for_alice() -> int:
        return sum(
            s.queued_bytes() for s in manager.sessions.values() if s.stomp is not None and s.stomp._user == alice
        )

    assert queued_for_alice() <= bound + 4200
    # Reading again, the client finds the close: 4008, slow consumer.
    async with asyncio.timeout(30):
        async for message in client.ws:
            assert isinstance(message.data, str)
            if message.data.startswith("c"):
                assert json.loads(message.data[1:])[0] == 4008
                break
            if message.data.startswith("a"):
                texts = json.loads(message.data[1:])
                errors = [t for t in texts if t.startswith("ERROR")]
                assert not errors or "message:slow-consumer" in errors[0]


# -- request bodies ---------------------------------------------------------------------------------------------


async def raw_post(url: URL, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
    """Send a POST's headers and ``body`` (maybe less than its Content-Length), then wait for the answer."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        answer: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            answer[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), answer, time.monotonic() - started
    finally:
        writer.close()


@pytest.mark.parametrize("backplane_kind", ["memory"])
async def test_stalled_request_bodies_cannot_hold_the_node_memory(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    node = await node_factory(request_body_budget=2 * 1024 * 1024, request_body_timeout=1.0)
    alice, bob = make_user("alice"), make_user("bob")
    http = await node.http_for(alice)
    cookie = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)
    url = URL(node.url)
    headers = {
        "Origin": node.url,
        "Cookie": cookie,
        "Content-Type": "application/json",
        "Content-Length": "1000000",
    }
    # 12 clients each send 300 KB of a 1 MB body, then stop: 3.6 MB, more than the 2 MiB budget.
    answers = await asyncio.gather(
        *(raw_post(url, "/api/messages", headers, b'{"to": "' + b"x" * 300_000) for _ in range(12))
    )
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) == {408, 503}, statuses
    assert statuses.count(408) <= 2 * 1024 * 1024 // 300_000
    for status, answer, elapsed in answers:
        assert "retry-after" in answer
        if status == 408:
            assert elapsed < 5  # the deadline (1 s), not for ever
    # What they held is given back: the node takes new bodies again.
    assert node.app[BODY_BUDGET].held == 0
    assert await post_message(http, node, bob, "still here") == (202, None)
    # A body over the size bound is refused on its Content-Length alone.
    status, _, elapsed = await raw_post(url, "/api/messages", {**headers, "Content-Length": "900000000"}, b"")
    assert status == 413 and elapsed < 5
    await http.close()
