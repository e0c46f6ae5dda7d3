"""The RabbitMQ backplane's consumer of its node queue (raw aiormq): acks, and coming back after channel trouble."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.abc import AbstractChannel

from app.backplane.rabbitmq import ACK_BATCH, RabbitMQBackplane
from app.backplane.rabbitmq.channels import open_channel
from app.backplane.rabbitmq.consumer import CONSUME_CHANNEL
from app.backplane.topology import Topology
from app.core.envelope import Envelope
from app.core.errors import BackplaneUnavailable

from .conftest import BrokerAdmin, RabbitFactory, envelope, eventually, unique

pytestmark = pytest.mark.rabbitmq


async def consume_channel(node: RabbitMQBackplane) -> AbstractChannel:
    return node.link.channel(CONSUME_CHANNEL)


async def test_a_short_batch_is_acknowledged_soon(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    node_id = unique("test")
    node, inbox = await make_rabbit(node_id=node_id)
    sender, _ = await make_rabbit()
    await node.bind("ada")
    count = ACK_BATCH // 2 + 3
    for i in range(count):
        await sender.publish(envelope("ada", f"m{i}"))
    assert [e.content for e in await inbox.wait_for(count)] == [f"m{i}" for i in range(count)]

    async def all_acknowledged() -> bool:
        queue = await admin.queue(topology.node_queue_name(node_id))
        return (
            queue is not None
            and queue.get("messages_unacknowledged") == 0
            and queue.get("message_stats", {}).get("ack") == count
        )

    await eventually(all_acknowledged, what="every delivery to be acknowledged")


async def test_the_consumer_comes_back_when_the_broker_closes_its_channel(make_rabbit: RabbitFactory) -> None:
    node, inbox = await make_rabbit(reconnect_interval=0.2)
    sender, _ = await make_rabbit()
    await node.bind("bea")
    await sender.publish(envelope("bea", "before"))
    await inbox.wait_for(1)
    old = await consume_channel(node)

    # An unknown delivery tag is a channel error: the broker closes this channel alone, the connection stays.
    await old.basic_ack(1_000_000)

    async def reopened() -> bool:
        try:
            channel = await consume_channel(node)
        except BackplaneUnavailable:
            return False
        return channel is not old and not channel.is_closed and node.consumer.consuming

    await eventually(reopened, what="the consume channel to be reopened with the consumer on it")
    assert node.ready
    await sender.publish(envelope("bea", "after"))

    async def arrived() -> bool:
        return "after" in inbox.contents()

    await eventually(arrived, what="a delivery through the new consumer")
    # "before" comes twice if its ack had not gone out when the channel closed (the broker requeued it); clients
    # drop such duplicates by id.
    assert list({e.id: e.content for e in inbox.envelopes}.values()) == ["before", "after"]


async def test_a_deleted_node_queue_is_declared_again_with_its_bindings(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    """The broker cancels the consumer of a deleted queue. (Only the node's own connection can delete it: the
    queue is exclusive, and the management API refuses.)"""
    node_id = unique("test")
    node, inbox = await make_rabbit(node_id=node_id)
    sender, _ = await make_rabbit()
    await node.bind("cy")
    await sender.publish(envelope("cy", "before"))
    await inbox.wait_for(1)

    # The queue is exclusive: only a channel on the node's own connection may delete it.
    assert node.link.connection is not None
    raw = await open_channel(node.link.connection, 5.0)
    await raw.queue_delete(topology.node_queue_name(node_id))
    await raw.close()

    async def bound_again() -> bool:
        return bool(await admin.binding_keys(topology.node_queue_name(node_id)))

    await eventually(bound_again, what="the queue to be declared and bound again")
    await sender.publish(envelope("cy", "after"))
    received = await inbox.wait_for(2)
    assert [e.content for e in received] == ["before", "after"]


async def test_settle_routed_returns_after_everything_routed_before_reached_the_inbox(
    make_rabbit: RabbitFactory,
) -> None:
    # What lets a user who leaves and comes straight back get their mail in order: the hub unbinds, then waits
    # for what was already in the node's queue to be moved to the mailbox before the next drain.
    node, inbox = await make_rabbit()
    sender, _ = await make_rabbit()
    await node.bind("cy")
    slow_deliver = inbox.deliver

    async def deliver_slowly(envelope: Envelope) -> None:
        await asyncio.sleep(0.002)
        await slow_deliver(envelope)

    inbox.deliver = deliver_slowly  # type: ignore[method-assign]
    count = 200
    await asyncio.gather(*(sender.publish(envelope("cy", f"m{i}")) for i in range(count)))
    await node.unbind("cy")
    await node.settle_routed()
    assert len(inbox.of("cy")) == count


async def test_message_ids_follow_send_order_within_a_millisecond() -> None:
    envelopes = [Envelope.create("alice", "bob", str(i)) for i in range(1000)]
    assert sorted(envelopes, key=lambda e: (e.ts, e.id)) == envelopes
