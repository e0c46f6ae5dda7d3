"""The RabbitMQ backplane's mailbox drain (a short-lived consumer per batch) and its pools of channels."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from app.backplane.rabbitmq import RabbitMQBackplane
from app.backplane.rabbitmq.channels import ChannelPool
from app.core.envelope import Envelope

from .conftest import RabbitFactory

pytestmark = pytest.mark.rabbitmq


async def fill(backplane: RabbitMQBackplane, user: str, count: int) -> list[str]:
    contents = [f"m{i}" for i in range(count)]
    for content in contents:
        await backplane.store(Envelope.create("alice", user, content))
    return contents


async def test_batches_come_oldest_first_and_release_puts_them_back_in_order(make_rabbit: RabbitFactory) -> None:
    node, _ = await make_rabbit()
    sent = await fill(node, "erin", 30)

    batch = await node.fetch_mail("erin", 12)
    assert [e.content for e in batch.envelopes] == sent[:12]
    await batch.release()

    batch = await node.fetch_mail("erin", 12)
    assert [e.content for e in batch.envelopes] == sent[:12]
    await batch.settle()

    rest: list[str] = []
    while True:
        batch = await node.fetch_mail("erin", 7)
        rest.extend(e.content for e in batch.envelopes)
        await batch.settle()
        if not batch.envelopes:
            break
    assert rest == sent[12:]


async def test_two_nodes_draining_one_mailbox_each_get_a_message_once(make_rabbit: RabbitFactory) -> None:
    node_a, _ = await make_rabbit()
    node_b, _ = await make_rabbit()
    sent = await fill(node_a, "fred", 400)

    async def drain(node: RabbitMQBackplane) -> list[str]:
        got: list[str] = []
        while True:
            batch = await node.fetch_mail("fred", 50)
            got.extend(e.content for e in batch.envelopes)
            await batch.settle()
            if not batch.envelopes:
                return got

    got_a, got_b = await asyncio.gather(drain(node_a), drain(node_b))
    assert sorted(got_a + got_b) == sorted(sent)
    # Each node's share is in send order.
    assert got_a == [c for c in sent if c in set(got_a)]
    assert got_b == [c for c in sent if c in set(got_b)]


async def test_many_users_bind_probe_and_unbind_in_parallel(make_rabbit: RabbitFactory) -> None:
    node, _ = await make_rabbit()
    sender, _ = await make_rabbit()
    users = [f"user{i}" for i in range(200)]
    await sender.store(Envelope.create("alice", "user7", "hello"))

    async def come_online(user: str) -> list[str]:
        await node.bind(user)
        batch = await node.fetch_mail(user, 500)
        await batch.settle()
        return [e.content for e in batch.envelopes]

    mail = await asyncio.gather(*(come_online(user) for user in users))
    assert mail[7] == ["hello"] and sum(map(len, mail)) == 1
    await asyncio.gather(*(node.unbind(user) for user in users))
    assert node.ready


async def test_a_timed_out_call_does_not_leave_its_channel_dead(make_rabbit: RabbitFactory) -> None:
    node, _ = await make_rabbit()
    pool = ChannelPool("test", 1, 5.0, node.link.current)
    async with pool.lend() as first:
        pass
    # A call that times out: aiormq closes its channel. The pool must not lend that channel again.
    with pytest.raises(TimeoutError):
        async with pool.lend() as channel, asyncio.timeout(0):
            await channel.queue_declare("amq.rabbitmq.trace-nope", passive=True)
    assert channel is first
    for _ in range(20):
        async with pool.lend() as channel:
            assert channel is not first and not channel.is_closed
            await channel.queue_declare(node.consumer.queue, passive=True)
    await pool.close()
    for _ in range(20):
        await node.bind("gina")
        await node.unbind("gina")
    assert node.ready


async def test_a_missing_mailbox_probe_is_replaced_without_closing_the_connection(make_rabbit: RabbitFactory) -> None:
    node, _ = await make_rabbit()
    pool = ChannelPool("test", 2, 5.0, node.link.current)
    connection = node.link.connection
    # Every probe of a missing queue makes the broker close its channel (404); numbers never come back soon.
    for i in range(300):
        with pytest.raises(ChannelNotFoundEntity):
            async with pool.lend() as channel:
                await channel.queue_declare(f"missing-{i}", passive=True)
    assert node.link.connection is connection and not connection.is_closed
    await pool.close()
