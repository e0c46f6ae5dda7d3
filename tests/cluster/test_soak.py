"""Soak: steady cross-node traffic with connections churning; memory flat, nothing leaked, nothing lost.

Not part of ``make test``: ``make soak`` runs it (``SOAK_SECONDS``, default 600).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from urllib.parse import quote

import pytest

from app.backplane.topology import mailbox_queue_name, node_queue_name
from tests.cluster.conftest import Cluster, eventually, management
from tests.support.processes import NodeProcess
from tests.support.stomp_client import StompClient

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
USERS = 20
RATE = 40  # messages per second, all cross-node


def rss_kib(node: NodeProcess) -> int:
    assert node.process is not None
    with open(f"/proc/{node.process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_soak(cluster: Cluster) -> None:
    nodes = [await cluster.start_node("a", LOG_LEVEL="WARNING"), await cluster.start_node("b", LOG_LEVEL="WARNING")]
    users = [cluster.user(f"soak{i}") for i in range(USERS)]
    home = {user: nodes[i % 2] for i, user in enumerate(users)}
    senders = {user: await cluster.http(nodes[(i + 1) % 2], user) for i, user in enumerate(users)}
    receivers: dict[str, StompClient] = {}
    received: set[str] = set()
    accepted: set[str] = set()
    rng = random.Random(7)

    async def connect(user: str) -> None:
        receivers[user] = await cluster.online(home[user], user, ack="client-individual")

    def collect() -> None:
        for client in receivers.values():
            for frame in client.take_buffered():
                if frame.command == "MESSAGE":
                    received.add(frame.headers["message-id"])

    for user in users:
        await connect(user)
    memory_start: list[int] = []
    started = time.monotonic()
    churned = 0
    next_churn = started + 2
    while time.monotonic() - started < SOAK_SECONDS:
        sender, receiver = rng.sample(users, 2)
        node = nodes[(users.index(sender) + 1) % 2]
        async with senders[sender].post(f"{node.url}/api/messages", json={"to": receiver, "content": "x" * 200}) as r:
            assert r.status == 202, await r.text()
            accepted.add((await r.json())["id"])
        collect()
        now = time.monotonic()
        if now >= next_churn:
            # A user drops and comes back on the other node: mail meanwhile waits in their mailbox.
            user = rng.choice(users)
            await receivers[user].close()
            collect()
            home[user] = nodes[1] if home[user] is nodes[0] else nodes[0]
            await connect(user)
            churned += 1
            next_churn = now + 2
        if not memory_start and now - started > min(60, SOAK_SECONDS / 5):
            memory_start = [rss_kib(n) for n in nodes]  # after warm-up
        await asyncio.sleep(1 / RATE)

    async def all_arrived() -> bool:
        collect()
        return accepted <= received

    await eventually(all_arrived, timeout=60, what="every accepted message to arrive")
    memory_end = [rss_kib(n) for n in nodes]
    for client in receivers.values():
        await client.close()

    async def unbound() -> bool:
        for node in nodes:
            bindings = await management(f"/queues/%2F/{quote(node_queue_name(node.env['NODE_ID']), safe='')}/bindings")
            if [b for b in bindings or [] if b["source"]]:
                return False
        return True

    await eventually(unbound, timeout=30, what="every binding to go once everyone left")
    waiting = 0
    for user in users:
        queue = await management(f"/queues/%2F/{quote(mailbox_queue_name(user), safe='')}")
        waiting += (queue or {}).get("messages", 0)
    print(
        f"soak {SOAK_SECONDS:.0f} s: accepted {len(accepted)}, received {len(accepted & received)}, "
        f"lost {len(accepted - received)}, reconnections {churned}; RSS KiB start {memory_start} end {memory_end}; "
        f"mail left in mailboxes {waiting}"
    )
    assert waiting == 0
    for start, end in zip(memory_start, memory_end, strict=True):
        assert end < start * 1.25 + 10_240, f"memory grew from {start} KiB to {end} KiB"
