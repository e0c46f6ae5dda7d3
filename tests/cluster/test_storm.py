"""Reconnect storm: a node restarts and its 2,000 clients reconnect at once to the remaining node."""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.cluster.conftest import Cluster
from tests.conftest import PASSWORD
from tests.support.stomp_client import StompClient, sign_in

pytestmark = pytest.mark.rabbitmq

CLIENTS = int(__import__("os").environ.get("STORM_CLIENTS", "2000"))
USERS = 100  # 20 connections each: sign-in is deliberately slow (scrypt), connections are what is measured


#: GET the URL every 50 ms until interrupted; print each answer's time in ms.
PROBE = """
import sys, time, urllib.request
try:
    while True:
        t0 = time.monotonic()
        urllib.request.urlopen(sys.argv[1], timeout=5).read()
        print((time.monotonic() - t0) * 1000, flush=True)
        time.sleep(0.05)
except KeyboardInterrupt:
    pass
"""


async def connect(client: StompClient) -> None:
    frame = await client.connect()
    assert frame.command == "CONNECTED", frame
    await client.subscribe()


async def test_two_thousand_clients_reconnect_to_the_remaining_node(cluster: Cluster) -> None:
    env = {"MAX_SESSIONS_PER_USER": "100", "LOG_LEVEL": "WARNING"}
    leaving = await cluster.start_node("leaving", **env)
    staying = await cluster.start_node("staying", **env)
    users = [cluster.user(f"u{i}") for i in range(USERS)]
    connector = aiohttp.TCPConnector(limit=0)
    cookies = {}
    for user in users:
        http = await sign_in(leaving.url, user, PASSWORD)
        cookies[user] = {c.key: c.value for c in http.cookie_jar}
        await http.close()
    http_sessions = [
        aiohttp.ClientSession(connector=connector, connector_owner=False, cookies=cookies[users[i % USERS]])
        for i in range(CLIENTS)
    ]
    clients = [StompClient(http, leaving.url) for http in http_sessions]
    try:
        for start in range(0, CLIENTS, 200):
            await asyncio.gather(*(connect(c) for c in clients[start : start + 200]))

        leaving.signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.gather(*(asyncio.wait_for(c.received.closed, 30) for c in clients))
        moved = [StompClient(http, staying.url) for http in http_sessions]
        # The probe runs in a process of its own: this one is busy being 2,000 clients.
        prober = subprocess.Popen(
            [sys.executable, "-c", PROBE, f"{staying.url}/healthz"], stdout=subprocess.PIPE, text=True
        )
        results = await asyncio.gather(*(connect(c) for c in moved), return_exceptions=True)
        elapsed = time.monotonic() - started
        prober.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(prober.communicate, timeout=10)
        health = [float(line) for line in out.split()]
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} clients failed to reconnect: {errors[:3]}"
        # Everyone is bound on the staying node: a message to each user reaches all 20 of their connections.
        sender = moved[0]
        await sender.send_chat(users[1], "after the storm", receipt="storm")
        receivers = [c for i, c in enumerate(moved) if i % USERS == 1]
        for client in receivers:
            assert (await client.next_message(timeout=30))["content"] == "after the storm"
        health_ms = sorted(health)
        print(
            f"reconnect storm: {CLIENTS} clients re-bound in {elapsed:.1f} s; /healthz during it: "
            f"median {statistics.median(health_ms):.1f} ms, p90 {health_ms[int(len(health_ms) * 0.9)]:.1f} ms, "
            f"max {health_ms[-1]:.1f} ms over {len(health_ms)} probes"
        )
        assert elapsed < 30
        # Responsive throughout: nine probes in ten answered within 100 ms (the machine's two cores are shared
        # with the 2,000 clients and the broker, so the very last probe is left to the report above).
        assert health_ms[int(len(health_ms) * 0.9)] < 100
    finally:
        for client in clients:
            await client.close()
        for http in http_sessions:
            await http.close()
        await connector.close()
