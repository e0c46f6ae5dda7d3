"""The RabbitMQ backplane's publishes: batched writes keep order and confirms; returns and cancellations."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.backplane.topology import routing_key
from app.core.errors import BackplaneUnavailable

from .conftest import RabbitFactory, envelope, read_mailbox

pytestmark = pytest.mark.rabbitmq


async def test_publishes_of_one_turn_arrive_in_call_order(make_rabbit: RabbitFactory) -> None:
    node, inbox = await make_rabbit()
    sender, _ = await make_rabbit()
    await node.bind("dee")
    sent = [f"m{i:03}" for i in range(400)]
    # All 400 are queued in one turn of the loop and written together.
    await asyncio.gather(*(sender.publish(envelope("dee", content)) for content in sent))
    assert [e.content for e in await inbox.wait_for(len(sent))] == sent


async def test_a_burst_to_a_user_without_a_mailbox_comes_back_and_is_stored_in_order(
    make_rabbit: RabbitFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Every message of the burst is returned (no mailbox yet); one declare, then all resent in their order."""
    sender, _ = await make_rabbit(mailbox_max=5000)
    sent = [f"m{i:03}" for i in range(300)]
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*(sender.publish(envelope("eve", content)) for content in sent))
    assert await read_mailbox(sender, "eve") == sent
    assert sender._mailbox_declared == {}
    assert "Unhandled message" not in caplog.text


async def test_a_publish_abandoned_before_its_write_is_never_sent(make_rabbit: RabbitFactory) -> None:
    node, inbox = await make_rabbit()
    await node.bind("fay")
    publisher = await node._publisher()
    exchange = node._topology.messages_exchange
    dropped = envelope("fay", "abandoned")
    kept = envelope("fay", "kept")
    abandoned = publisher.publish(exchange, routing_key("fay"), dropped.body, message_id=dropped.id)
    abandoned.cancel()
    publisher.forget(dropped.id, abandoned)
    await node.publish(kept)
    await inbox.wait_for(1)
    await asyncio.sleep(0.2)
    assert inbox.contents() == ["kept"]
    assert publisher.channel.message_id_delivery_tag == {}


async def test_a_publish_on_a_closed_channel_fails_and_the_next_one_uses_the_reopened_channel(
    make_rabbit: RabbitFactory,
) -> None:
    node, inbox = await make_rabbit(reconnect_interval=0.2)
    await node.bind("gus")
    old = await node._publisher()
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
    assert (await node._publisher()) is not old
    assert "after" in [e.content for e in await inbox.wait_for(1)]
