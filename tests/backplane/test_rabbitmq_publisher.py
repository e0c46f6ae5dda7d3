"""The RabbitMQ backplane's publishes, with each publisher (``AMQP_PUBLISHER``: batched and plain): order and
confirms, returns, cancellations, a closed channel; and the batched one's reliance on aiormq's channel state."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import aiormq
import pytest

from app.backplane.amqp import AIORMQ_CHANNEL_STATE, IncompatibleAiormq, aiormq_state_problems, make_publisher
from app.backplane.rabbitmq.channels import open_channel
from app.backplane.topology import Topology, routing_key
from app.core.errors import BackplaneUnavailable

from .conftest import RabbitFactory, envelope, read_mailbox

pytestmark = [pytest.mark.rabbitmq, pytest.mark.parametrize("kind", ["batched", "plain"])]


async def test_publishes_of_one_turn_arrive_in_call_order(make_rabbit: RabbitFactory, kind: str) -> None:
    node, inbox = await make_rabbit()
    sender, _ = await make_rabbit(publisher=kind)
    await node.bind("dee")
    sent = [f"m{i:03}" for i in range(400)]
    # All 400 are queued in one turn of the loop (batched: and written together).
    await asyncio.gather(*(sender.publish(envelope("dee", content)) for content in sent))
    assert [e.content for e in await inbox.wait_for(len(sent))] == sent


async def test_a_burst_to_a_user_without_a_mailbox_comes_back_and_is_stored_in_order(
    make_rabbit: RabbitFactory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Every message of the burst is returned (no mailbox yet); one declare, then all resent in their order.

    Plain writes one message at a time, so the end of the burst can reach the broker after the mailbox exists and
    overtake the returned start: the "publishes that overlap in time can swap places" of the package's docstring.
    """
    sender, _ = await make_rabbit(mailbox_max=5000, publisher=kind)
    sent = [f"m{i:03}" for i in range(300)]
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*(sender.publish(envelope("eve", content)) for content in sent))
    stored = await read_mailbox(sender, "eve")
    assert (stored if kind == "batched" else sorted(stored)) == sent
    assert sender.publishing.mailboxes_created == 1
    assert sender.publishing.receivers_being_returned == 0
    assert "Unhandled message" not in caplog.text


async def test_a_publish_abandoned_before_its_write_is_never_sent(
    make_rabbit: RabbitFactory, topology: Topology, kind: str
) -> None:
    node, inbox = await make_rabbit(publisher=kind)
    await node.bind("fay")
    publisher = node.publishing.publisher()
    dropped = envelope("fay", "abandoned")
    kept = envelope("fay", "kept")
    abandoned = publisher.publish(topology.messages_exchange, routing_key("fay"), dropped.body, message_id=dropped.id)
    abandoned.cancel()
    publisher.forget(dropped.id, abandoned)
    await node.publish(kept)
    await inbox.wait_for(1)
    await asyncio.sleep(0.2)
    assert inbox.contents() == ["kept"]
    assert publisher.channel.message_id_delivery_tag == {}


async def test_a_publish_on_a_closed_channel_fails_and_the_next_one_uses_the_reopened_channel(
    make_rabbit: RabbitFactory, kind: str
) -> None:
    node, inbox = await make_rabbit(reconnect_interval=0.2, publisher=kind)
    await node.bind("gus")
    old = node.publishing.publisher()
    # A channel error (an unknown delivery tag) makes the broker close this channel alone.
    await old.channel.basic_ack(1_000_000)
    await asyncio.wait([old.channel.closing])

    async def published() -> bool:
        try:
            await node.publish(envelope("gus", "after"))
        except BackplaneUnavailable:
            await asyncio.sleep(0.05)
            return False
        return True

    async with asyncio.timeout(10):
        while not await published():
            pass
    assert node.publishing.publisher() is not old
    assert "after" in [e.content for e in await inbox.wait_for(1)]


async def test_the_installed_aiormq_has_the_channel_state_the_batched_publisher_needs(
    make_rabbit: RabbitFactory, kind: str
) -> None:
    """What ``make test-newest-deps`` is for: a new aiormq that changes these internals fails here, by name."""
    node, _ = await make_rabbit(publisher=kind)
    assert node.link.connection is not None
    channel = cast(aiormq.Channel, await open_channel(node.link.connection, 5.0, publisher_confirms=True))
    try:
        assert aiormq_state_problems(channel) == []
        assert set(AIORMQ_CHANNEL_STATE) >= {"confirmations", "delivery_tag", "write_queue"}
        make_publisher(kind, channel)
    finally:
        await channel.close()


def test_a_channel_without_that_state_is_refused_with_the_way_out(kind: str) -> None:
    class Elsewhere:
        publisher_confirms = True

    problems = aiormq_state_problems(Elsewhere())
    assert "Channel.confirmations is missing" in problems
    if kind == "batched":
        with pytest.raises(IncompatibleAiormq, match="AMQP_PUBLISHER=plain"):
            make_publisher(kind, cast(aiormq.Channel, Elsewhere()))
