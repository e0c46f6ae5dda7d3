"""Several Warren nodes (separate processes) on the shared RabbitMQ: what users on different nodes see."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import quote

import pytest

from app.backplane.topology import mailbox_queue_name, node_queue_name, routing_key
from tests.cluster.conftest import Cluster, HttpStream, drain_message_ids, eventually, management

pytestmark = pytest.mark.rabbitmq


async def node_bindings(node_id: str) -> set[str]:
    bindings = await management(f"/queues/%2F/{quote(node_queue_name(node_id), safe='')}/bindings") or []
    return {b["routing_key"] for b in bindings if b["source"]}


async def test_users_on_different_nodes_chat_both_ways(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    client_a = await cluster.online(node_a, alice)
    client_b = await cluster.online(node_b, bob)
    await client_a.send_chat(bob, "across nodes", receipt="r1")
    assert (await client_a.next_frame()).command == "RECEIPT"
    assert (await client_b.next_message())["content"] == "across nodes"
    await client_b.send_chat(alice, "and back")
    got = await client_a.next_message()
    assert (got["from"], got["content"]) == (bob, "and back")


async def test_tabs_on_two_nodes_each_get_every_message(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    node_c = await cluster.start_node("c")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    sender = await cluster.online(node_c, alice)
    tab_a = await cluster.online(node_a, bob)
    tab_b = await cluster.online(node_b, bob)
    for i in range(10):
        await sender.send_chat(bob, f"m{i}")
    for tab in (tab_a, tab_b):
        assert [(await tab.next_message())["content"] for _ in range(10)] == [f"m{i}" for i in range(10)]


async def test_offline_mail_waits_in_the_broker_and_arrives_in_order_on_any_node(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    sender = await cluster.online(node_a, alice)
    for i in range(30):
        await sender.send_chat(bob, f"offline {i}", receipt=f"r{i}")
        assert (await sender.next_frame()).command == "RECEIPT"
    mailbox = await management(f"/queues/%2F/{quote(mailbox_queue_name(bob), safe='')}")
    assert mailbox is not None and mailbox["durable"]
    receiver = await cluster.online(node_b, bob)
    for i in range(30, 40):
        await sender.send_chat(bob, f"offline {i}")
    assert [(await receiver.next_message())["content"] for _ in range(40)] == [f"offline {i}" for i in range(40)]


async def test_node_queue_bindings_are_exactly_its_online_users(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    alice, bob, carol = cluster.user("alice"), cluster.user("bob"), cluster.user("carol")
    client_alice = await cluster.online(node_a, alice)
    await cluster.online(node_a, bob)
    await cluster.online(node_b, carol)
    id_a, id_b = node_a.env["NODE_ID"], node_b.env["NODE_ID"]
    assert await node_bindings(id_a) == {routing_key(alice), routing_key(bob)}
    assert await node_bindings(id_b) == {routing_key(carol)}
    queue = await management(f"/queues/%2F/{quote(node_queue_name(id_a), safe='')}")
    assert queue is not None and (queue["exclusive"] or queue["auto_delete"])
    await client_alice.close()

    async def alice_unbound() -> bool:
        return await node_bindings(id_a) == {routing_key(bob)}

    await eventually(alice_unbound, what="alice's binding to go when her last connection closed")
    # Nobody had mail: no mailbox queues for these users.
    for user in (alice, bob, carol):
        assert await management(f"/queues/%2F/{quote(mailbox_queue_name(user), safe='')}") is None


async def test_the_connection_name_is_the_node_id(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")

    async def listed() -> bool:
        # The management UI lists connections from stats emitted every few seconds.
        connections = await management("/connections") or []
        return node_a.env["NODE_ID"] in {c.get("user_provided_name") for c in connections}

    await eventually(listed, timeout=20, what="the node's AMQP connection to be listed under its node id")


async def test_nothing_lost_when_the_receiver_moves_between_nodes_mid_stream(cluster: Cluster) -> None:
    """The leave race (mail reaching a node just after its user left) and the arrive race, under load.

    The receiver acknowledges each message (``ack:client-individual``): what its node had written to the socket
    it closed but it never read comes back from the mailbox, so nothing is lost (``ack:auto`` is at-most-once
    past the write, and a client closing its own socket mid-stream may lose what was on the wire).
    """
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    node_c = await cluster.start_node("c")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    stream = HttpStream(await cluster.http(node_a, alice), node_a.url, bob, total=600)
    receiver = await cluster.online(node_b, bob, ack="client-individual")
    sending = asyncio.create_task(stream.run())
    await stream.reached(200).wait()
    await receiver.close()  # leaves node b while messages are routed there
    await stream.reached(300).wait()
    moved = await cluster.online(node_c, bob, ack="client-individual")  # arrives while mail is being written
    await sending
    received: set[str] = set()

    async def all_arrived() -> bool:
        received.update(drain_message_ids(receiver, moved))
        return set(stream.accepted) <= received

    await eventually(all_arrived, timeout=30, what="every accepted message to arrive")
    assert len(received) == 600


async def test_sigterm_moves_everything_in_flight_and_clients_reconnect(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    node_c = await cluster.start_node("c")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    stream = HttpStream(await cluster.http(node_a, alice), node_a.url, bob, total=500)
    receiver = await cluster.online(node_b, bob)
    sending = asyncio.create_task(stream.run())
    await stream.reached(150).wait()
    node_b.signal(signal.SIGTERM)
    code, _reason = await asyncio.wait_for(receiver.received.closed, 20)
    assert code == 4012  # "server shutting down, reconnect"
    assert await node_b.wait() == 0
    moved = await cluster.online(node_c, bob)
    await sending
    received: set[str] = set()

    async def all_arrived() -> bool:
        received.update(drain_message_ids(receiver, moved))
        return set(stream.accepted) <= received

    await eventually(all_arrived, timeout=30, what="every accepted message to arrive after SIGTERM")
