"""A sign-in flood does not slow the node down for everybody else.

The node runs as its own process (``python -m app``), the flood (16 clients signing in with the right password as
fast as they are answered) in another, and this test measures what a user of the node notices meanwhile: how long
``/healthz`` takes and how long a chat message takes from one user to another.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from app.auth.users import UserDirectory
from app.config import generate_secret_key
from tests.conftest import PASSWORD
from tests.support.processes import ROOT, NodeProcess, wait_until
from tests.support.stomp_client import StompClient, sign_in

FLOOD_SECONDS = 8.0
MEASURE_SECONDS = 5.0
BASELINE_SECONDS = 5.0
#: /healthz p99 and chat latency must stay below this during the flood (issue 11's bar)...
BAR = 0.050
#: ...unless this machine is so busy that even without a flood the p99 is above half the bar (other work on a
#: shared CI box): then during the flood it must stay within twice what it was without.
BUSY_MACHINE = BAR / 2
#: Floods tried before the test gives up.
ATTEMPTS = 3


@dataclass
class Latencies:
    health: list[float]
    chat: list[float]

    def describe(self) -> str:
        ms = 1000
        health, chat = self.health, self.chat
        return (
            f"/healthz n={len(health)} median {statistics.median(health) * ms:.1f} ms "
            f"p99 {percentile(health, 0.99) * ms:.1f} ms max {max(health) * ms:.1f} ms; chat n={len(chat)} "
            f"median {statistics.median(chat) * ms:.1f} ms p90 {percentile(chat, 0.9) * ms:.1f} ms "
            f"max {max(chat) * ms:.1f} ms"
        )


async def measure(url: str, alice: StompClient, bob: StompClient, seconds: float, tag: str) -> Latencies:
    """What a user notices for ``seconds``: /healthz every 20 ms, and a chat message from alice to bob every 100 ms."""
    health: list[float] = []
    chat: list[float] = []
    deadline = time.monotonic() + seconds

    async def probe_health() -> None:
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with http.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
                health.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)  # a probe every 20 ms, like a busy balancer

    async def chat_along() -> None:
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await alice.send_chat("bob", f"{tag} {i}")
            assert (await bob.next_message())["content"] == f"{tag} {i}"
            chat.append(time.perf_counter() - started)
            i += 1
            await asyncio.sleep(0.1)  # a person types slower than this

    await asyncio.gather(probe_health(), chat_along())
    return Latencies(health, chat)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_sixteen_clients_signing_in_do_not_stall_health_checks_or_chat(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    directory = UserDirectory(users)
    for name in ("alice", "bob", "flooder"):
        directory.add(name, PASSWORD)
    node = NodeProcess(
        {"USERS_FILE": str(users), "SECRET_KEY": generate_secret_key().decode(), "LOG_LEVEL": "ERROR"},
        tmp_path / "node.log",
    )
    await node.start()
    clients: list[StompClient] = []
    flood = None
    refusals: list[str] = []
    try:
        for name in ("alice", "bob"):
            client = StompClient(await sign_in(node.url, name, PASSWORD), node.url)
            clients.append(client)
            assert (await client.connect()).command == "CONNECTED"
            await client.subscribe()
        alice, bob = clients
        # A whole flood again when one was slowed by something else on a shared machine: what is judged is
        # the node's own behaviour, and one flood that meets the bar shows it.
        for attempt in range(1, ATTEMPTS + 1):
            baseline = await measure(node.url, alice, bob, BASELINE_SECONDS, f"before {attempt}")
            flood = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.support.signin_flood", node.url, "flooder", PASSWORD,
                str(FLOOD_SECONDS), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            )
            assert flood.stdout is not None
            assert (await asyncio.wait_for(flood.stdout.readline(), 30)).strip() == b"started"
            during = await measure(node.url, alice, bob, MEASURE_SECONDS, f"during {attempt}")
            answers = json.loads(await asyncio.wait_for(flood.stdout.readline(), FLOOD_SECONDS + 30))
            await flood.wait()
            flood = None
            print(f"\nflood {attempt}: answers {answers}")
            print(f"without flood: {baseline.describe()}\nduring flood:  {during.describe()}")
            assert int(answers.get("200", 0)) >= 10, f"the flood's own sign-ins must still be served: {answers}"
            refusal = slower_than_the_bar(baseline, during)
            if refusal is None:
                break
            refusals.append(refusal)
    finally:
        if flood is not None and flood.returncode is None:
            flood.kill()
            await flood.wait()
        for client in clients:
            await client.close()
            await client.http.close()
        node.signal(15)
        await node.wait()
    assert len(refusals) < ATTEMPTS, refusals


def slower_than_the_bar(baseline: Latencies, during: Latencies) -> str | None:
    """Why the node was too slow for its other users during a flood, or None when it met the bar."""
    busy = percentile(baseline.health, 0.99) > BUSY_MACHINE
    for kind in ("health", "chat"):
        before, now = getattr(baseline, kind), getattr(during, kind)
        bound = max(BAR, 2 * percentile(before, 0.99)) if busy else BAR
        if percentile(now, 0.99 if kind == "health" else 0.9) >= bound:
            return f"{kind}: {during.describe()}"
    if statistics.median(during.chat) >= BAR:
        return f"chat median: {during.describe()}"
    return None


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc: Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_node_killed_outright_leaves_no_password_workers_running(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    users = tmp_path / "users.json"
    UserDirectory(users).add("alice", PASSWORD)
    node = NodeProcess({"USERS_FILE": str(users), "LOG_LEVEL": "ERROR"}, tmp_path / "node.log")
    await node.start()
    try:
        await (await sign_in(node.url, "alice", PASSWORD)).close()
        assert node.process is not None
        helpers = descendants(node.process.pid)
        assert helpers, "the password workers run as child processes"
    finally:
        node.kill()  # SIGKILL: the node gets no chance to stop them itself
    # The kernel delivers the parent-death signal as the node's exit is processed: poll for it briefly.
    await wait_until(lambda: not any(alive(pid) for pid in helpers), 10, "the password workers to end")
