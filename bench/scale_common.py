"""What the scale scenarios share: their parameters, Warren nodes on the run's own topology, client generators on
their own loopback source addresses, and readings of the broker (bindings of a queue, memory, CPU).

Every name the scale bench makes on the broker starts with its prefix ``bench<run id>`` (exchanges
``<prefix>.messages`` / ``<prefix>.mailbox``, node queues ``<prefix>.node.<id>``, mailboxes
``<prefix>.mailbox.<user>``, policies ``<prefix>-…``), and ``cleanup_prefix`` deletes all of it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from .common import Child, CpuMeter, Management, broker_pid, log, rss_bytes, warren_node
from .runner import Context, Proc


@dataclass
class ScaleParams:
    #: Idle sessions on one node at each step of the curve.
    steps: tuple[int, ...] = (1000, 5000, 10000, 18000)
    reps: int = 3
    #: Client processes, each on its own source address 127.0.0.(2 + i).
    generators: int = 4
    #: Handshakes in flight per generator while connecting.
    connect_concurrency: int = 10
    #: Users who chat during the latency run (part of the step's sessions); the rest stay idle.
    active: int = 200
    rate: int = 1000
    paced_warmup: float = 1.0
    paced_duration: float = 10.0
    #: CPU of idle sessions: two SockJS heart-beat periods (25 s each), so every session's heart-beats count.
    idle_window: float = 50.0
    baseline_window: float = 10.0
    settle: float = 5.0
    #: /healthz probes at each step after the idle window (the event loop's responsiveness with N sessions).
    probe_seconds: float = 10.0
    probe_interval: float = 0.1
    storm_clients: int = 15000
    storm_reps: int = 3
    #: Full-jitter reconnect backoff of the storm's clients: first delay and cap, seconds.
    storm_backoff: tuple[float, float] = (0.05, 0.5)
    storm_timeout: float = 300.0
    mailboxes: tuple[int, ...] = (10_000, 100_000)
    mailbox_reps: int = 1
    mailbox_idle_window: float = 20.0
    #: Stop creating mailboxes when the broker's memory reaches this share of its high watermark.
    broker_memory_guard: float = 0.6

    @classmethod
    def quick(cls) -> ScaleParams:
        return cls(
            steps=(500, 1000, 2000),
            reps=1,
            generators=3,
            paced_duration=4.0,
            idle_window=25.0,
            baseline_window=5.0,
            settle=3.0,
            probe_seconds=4.0,
            storm_clients=1500,
            storm_reps=1,
            mailboxes=(1000, 2000),
            mailbox_idle_window=10.0,
        )

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


@dataclass
class ScaleRun:
    """The run's names on the broker and the processes the scale scenarios share."""

    ctx: Context
    prefix: str
    nodes_started: int = 0
    generators: list[Proc] = field(default_factory=list)

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.messages"

    def node_queue(self, node: Child) -> str:
        return f"{self.prefix}.node.{node.env['NODE_ID']}"

    def user(self, i: int) -> str:
        return self.ctx.user("k", i)

    def partner(self, i: int) -> str:
        """The users on the curve's second node, who chat with the first active users of the node under test."""
        return self.ctx.user("p", i)

    async def start_node(self, label: str) -> Child:
        assert self.ctx.users_file is not None
        self.nodes_started += 1
        node = warren_node(
            f"{self.prefix}-{label}{self.nodes_started}",
            self.ctx.workdir,
            self.ctx.users_file,
            self.ctx.secret_key,
            BENCH_TOPOLOGY_PREFIX=self.prefix,
        )
        node.argv = [sys.executable, "-m", "bench.noderun"]
        self.ctx.track_child(node)
        await node.start("/readyz")
        return node

    async def start_generators(self, count: int) -> list[Proc]:
        """Client processes on 127.0.0.2, 127.0.0.3, …; kept for the whole run (started once)."""
        while len(self.generators) < count:
            i = len(self.generators)
            source = f"127.0.0.{2 + i}"
            proc = self.ctx.track_proc(
                Proc(
                    f"gen{i}@{source}",
                    [sys.executable, "-m", "bench.scale_loadgen", source],
                    self.ctx.workdir / f"gen{i}.log",
                )
            )
            await proc.start()
            self.generators.append(proc)
        return self.generators[:count]

    async def bindings(self, queue: str, missing: int | None = 0) -> Any:
        """Users bound to ``queue`` from the run's exchange; ``missing`` when the queue is gone."""
        mgmt = await self.ctx.management()
        try:
            data = await mgmt.get(f"queues/%2F/{quote(queue, safe='')}/bindings?columns=source")
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                return missing
            raise
        return sum(1 for b in data if b.get("source") == self.exchange)

    async def wait_bound(self, queue: str, n: int, stall: float = 30.0, limit: float = 600.0) -> int:
        """Until ``n`` users are bound to ``queue``, or the count stops growing for ``stall`` seconds."""
        started = last_change = time.monotonic()
        last = -1
        while True:
            with contextlib.suppress(Exception):
                count: int = await self.bindings(queue)
                if count >= n:
                    return count
                if count != last:
                    last, last_change = count, time.monotonic()
            now = time.monotonic()
            if now - last_change > stall or now - started > limit:
                return max(last, 0)
            await asyncio.sleep(0.25 if n < 5000 else 0.5)

    async def wait_unbound(self, queue: str, limit: float = 60.0) -> None:
        """Until no user is bound to ``queue`` (sessions closed by their clients have left the hub)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await self.bindings(queue) == 0:
                    return
            await asyncio.sleep(0.25)


def cpu_seconds_fine(pid: int) -> float:
    """CPU time of a process in seconds at nanosecond resolution: the run time of each of its threads
    (/proc/<pid>/task/*/schedstat), where utime + stime count in 10 ms ticks, which over a 50 s window is 0.2 ms/s
    of noise, as much as 100 idle sessions cost. Threads that ended during the window are not counted."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return float("nan")
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total / 1e9


class FineCpuMeter(CpuMeter):
    """``CpuMeter`` with ``cpu_seconds_fine`` for the processes (the machine's total stays in ticks)."""

    def start(self) -> None:
        super().start()
        self._start.update({name: cpu_seconds_fine(pid) for name, pid in self.pids.items()})

    def stop(self) -> dict[str, float]:
        fine = {name: cpu_seconds_fine(pid) for name, pid in self.pids.items()}
        used = super().stop()
        for name, value in fine.items():
            used[name] = value - self._start[name]
        self.used = used
        return used


def spread_specs(specs: list[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """Round-robin: active users (the first ones) land on every generator, so each sends its share of the rate."""
    return [specs[i::parts] for i in range(parts)]


async def connect_all(
    gens: list[Proc], specs: list[dict[str, Any]], concurrency: int, timeout: float = 1800
) -> dict[str, Any]:
    answers = await asyncio.gather(
        *(
            g.call("connect", kind="warren", clients=part, concurrency=concurrency, timeout=timeout)
            for g, part in zip(gens, spread_specs(specs, len(gens)), strict=True)
        )
    )
    return {
        "connected": sum(a["connected"] for a in answers),
        "failed": sum(a["failed"] for a in answers),
        "errors": [e for a in answers for e in a["errors"]][:5],
    }


async def close_all(gens: list[Proc]) -> None:
    await asyncio.gather(*(g.call("close", timeout=300) for g in gens), return_exceptions=True)


# -- the broker ---------------------------------------------------------------------------------------------


async def broker_memory(mgmt: Management) -> dict[str, float]:
    """The broker's memory: its RSS now (/proc), and the management API's ``mem_used`` / watermark."""
    out: dict[str, float] = {}
    pid = broker_pid()
    if pid is not None:
        with contextlib.suppress(OSError):
            out["rss"] = float(rss_bytes(pid))
    with contextlib.suppress(Exception):
        nodes = await mgmt.get("nodes?columns=name,mem_used,mem_limit,mem_alarm")
        if nodes:
            out["mem_used"] = float(nodes[0].get("mem_used", 0))
            out["mem_limit"] = float(nodes[0].get("mem_limit", 0))
            out["mem_alarm"] = 1.0 if nodes[0].get("mem_alarm") else 0.0
            # Where bindings and queue metadata live (Mnesia tables and the routing ETS tables): less disturbed by
            # other clients of a shared broker than its RSS, which their connections and queues move too.
            breakdown = (await mgmt.get(f"nodes/{quote(nodes[0]['name'], safe='')}/memory")).get("memory", {})
            out["tables"] = float(breakdown.get("mnesia", 0)) + float(breakdown.get("other_ets", 0))
    return out


async def queues_memory(mgmt: Management, prefix: str) -> tuple[int, float]:
    """How many queues named ``prefix``… exist and the memory of their processes (management stats, 5 s old)."""
    data = await mgmt.get("queues/%2F?columns=name,memory")
    mine = [q for q in data if q["name"].startswith(prefix)]
    return len(mine), float(sum(int(q.get("memory") or 0) for q in mine))


async def cleanup_prefix(mgmt: Management, prefix: str) -> int:
    """Delete every queue, exchange and policy whose name starts with ``prefix``; how many objects."""
    deleted = 0
    with contextlib.suppress(Exception):
        queues = await mgmt.get("queues/%2F?columns=name")
        for q in queues:
            if q["name"].startswith(prefix):
                await mgmt.delete(f"queues/%2F/{quote(q['name'], safe='')}")
                deleted += 1
    with contextlib.suppress(Exception):
        for e in await mgmt.get("exchanges/%2F?columns=name"):
            if e["name"].startswith(prefix):
                await mgmt.delete(f"exchanges/%2F/{quote(e['name'], safe='')}")
                deleted += 1
    with contextlib.suppress(Exception):
        for pol in await mgmt.get("policies/%2F"):
            if pol["name"].startswith(prefix):
                await mgmt.delete(f"policies/%2F/{quote(pol['name'], safe='')}")
                deleted += 1
    if deleted:
        log(f"cleanup: deleted {deleted} broker objects named {prefix}*")
    return deleted
