"""Faults on a private RabbitMQ node (its own name, ports and data dir): the shared broker is never touched."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from app.config import generate_secret_key
from tests.cluster.conftest import Cluster, HttpStream, drain_message_ids, eventually
from tests.support.processes import ROOT, NodeProcess, PrivateBroker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow_broker]


async def ready(node: NodeProcess) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/readyz") as resp:
        return resp.status


async def test_broker_restart_mid_stream_loses_nothing_accepted(
    private_broker: PrivateBroker, private_cluster: Cluster
) -> None:
    cluster = private_cluster
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    receiver = await cluster.online(node_b, bob)
    stream = HttpStream(await cluster.http(node_a, alice), node_a.url, bob, total=400, retry_unavailable=True)
    sending = asyncio.create_task(stream.run())
    await stream.reached(100).wait()

    await private_broker.stop()

    async def both_not_ready() -> bool:
        return {await ready(node_a), await ready(node_b)} == {503}

    await eventually(both_not_ready, timeout=20, what="/readyz to answer 503 while the broker is down")
    await private_broker.start()

    async def both_ready() -> bool:
        return {await ready(node_a), await ready(node_b)} == {200}

    await eventually(both_ready, timeout=60, what="/readyz to answer 200 after the broker is back")
    await asyncio.wait_for(sending, 120)
    assert not receiver.received.closed.done(), "the receiver's session must stay open through a broker restart"
    received: set[str] = set()

    async def all_arrived() -> bool:
        received.update(drain_message_ids(receiver))
        return set(stream.accepted) <= received

    await eventually(all_arrived, timeout=60, what="every accepted message to arrive after the broker restart")
    print(f"broker restart: sent 400, refused with 503 while down {stream.unavailable}, lost 0")


async def test_release_phase_fails_early_without_a_broker_and_succeeds_with_one(private_broker: PrivateBroker) -> None:
    secret_key = generate_secret_key().decode()  # a weak key would be refused before the broker is tried

    def release() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", "broker", "setup"],
            env={"AMQP_URL": private_broker.url, "SECRET_KEY": secret_key, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    ok = await asyncio.to_thread(release)
    assert ok.returncode == 0, ok.stderr
    again = await asyncio.to_thread(release)  # idempotent
    assert again.returncode == 0, again.stderr
    await private_broker.stop()
    refused = await asyncio.to_thread(release)
    assert refused.returncode != 0
    assert "broker" in refused.stderr.lower() or "rabbitmq" in refused.stderr.lower()
