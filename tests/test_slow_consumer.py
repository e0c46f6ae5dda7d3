"""A client that stops reading cannot make its node's memory grow: it is closed as a slow consumer (4008),
and what it had not acknowledged waits in its mailbox for the next connection."""

from __future__ import annotations

import json
from collections.abc import Callable

from app.keys import SOCKJS
from tests.conftest import NodeFactory
from tests.support.stomp_client import StompClient
from tests.test_chat import online


async def test_slow_consumer_is_closed_and_its_mail_kept(
    node_factory: NodeFactory, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    # 12 MB of mail from one sender waits in bob's mailbox: room for all of it, with no sender's share.
    node = await node_factory(
        send_buffer_bytes=64 * 1024,
        message_rate=0,
        connection_message_rate=0,
        mailbox_max_bytes=64 * 1024 * 1024,
        mailbox_sender_share=1.0,
    )
    alice, bob = make_user("alice"), make_user("bob")
    sender = await online(node, alice, stomp_clients)
    slow = await online(node, bob, stomp_clients, ack="client-individual")
    assert slow._reader is not None
    slow._reader.cancel()  # bob's client stops reading its socket
    body = "x" * 30_000
    total = 400  # 12 MB: far beyond the socket buffers and the 64 KiB send bound
    for i in range(total):
        await sender.send_chat(bob, f"{i:04d}{body}", receipt=f"r{i}" if i == total - 1 else None)
    last = await sender.next_frame(timeout=30)
    assert last.headers.get("receipt-id") == f"r{total - 1}"  # every send was handled
    # The node closed bob's session instead of buffering 12 MB for him.
    manager = node.app[SOCKJS]
    bob_sessions = [s for s in manager.sessions.values() if s.stomp is not None and s.stomp._user == bob]
    assert all(s.queued_bytes() <= 64 * 1024 + 31_000 for s in bob_sessions)

    # Reading again, bob's first connection sees what was written before the close, then the close code.
    first = StompClient(slow.http, node.url)
    seen: set[str] = set()
    assert slow.ws is not None
    async for message in slow.ws:
        if not isinstance(message.data, str):
            break
        if message.data.startswith("a"):
            for text in json.loads(message.data[1:]):
                for frame in first._parser.feed(text.encode()):
                    if frame.command == "MESSAGE":
                        seen.add(json.loads(frame.body)["content"][:4])
        elif message.data.startswith("c"):
            assert json.loads(message.data[1:])[0] == 4008
            break
    # Nothing acknowledged: all of it comes back, in order, on the next connection.
    again = await online(node, bob, stomp_clients, ack="client-individual")
    again.auto_ack = True
    contents = [(await again.next_message(timeout=30))["content"][:4] for _ in range(total)]
    assert contents == [f"{i:04d}" for i in range(total)]
