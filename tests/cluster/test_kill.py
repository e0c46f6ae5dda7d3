"""A node killed with SIGKILL while messages stream to its users: what is lost, measured."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.conftest import Cluster, HttpStream, drain_message_ids, eventually

pytestmark = pytest.mark.rabbitmq

#: The documented bound: what the killed node's queue and process held (see README "Guarantees").
KILL_LOSS_BOUND = 256 + 64


async def test_sigkill_of_the_receivers_node_loses_at_most_what_it_held(cluster: Cluster) -> None:
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    node_c = await cluster.start_node("c")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    http = await cluster.http(node_a, alice)
    # Four senders at once keep the node's queue busy when the kill lands.
    streams = [HttpStream(http, node_a.url, bob, total=300) for _ in range(4)]
    receiver = await cluster.online(node_b, bob, ack="client-individual")
    sending = asyncio.gather(*(stream.run() for stream in streams))
    await streams[0].reached(100).wait()
    node_b.kill()  # SIGKILL: no drain, no unbind
    moved = await cluster.online(node_c, bob, ack="client-individual")
    await sending
    accepted = {message_id for stream in streams for message_id in stream.accepted}
    received: set[str] = set()
    quiet_polls = 0

    async def settled() -> bool:
        nonlocal quiet_polls
        before = len(received)
        received.update(drain_message_ids(receiver, moved))
        quiet_polls = quiet_polls + 1 if len(received) == before else 0
        # Everything arrived, or nothing more has come for 2 s: what is missing then is lost.
        return accepted <= received or quiet_polls >= 10

    await eventually(settled, timeout=60, what="deliveries to settle")
    lost = len(accepted - received)
    print(f"SIGKILL mid-stream: accepted {len(accepted)}, received {len(received & accepted)}, lost {lost}")
    assert lost <= KILL_LOSS_BOUND
