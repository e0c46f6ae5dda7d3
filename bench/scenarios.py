"""The figures of issue 7, one coroutine per scenario. Each starts its own servers and client workers and stops
them (by PID) before it returns; results go into ``ctx.results``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sionode
from .common import (
    AMQP_URL,
    Child,
    CpuMeter,
    Spread,
    bare_node,
    broker_pid,
    cookies_for,
    log,
    login_cookie,
    peer_node,
    percentile,
    rss_bytes,
    wait_for,
    warren_node,
)
from .runner import Context, Proc, ceiling_proc, loadgen


@dataclass
class Params:
    reps: int = 3
    chat_clients: int = 200
    window: int = 4
    sat_warmup: float = 1.0
    sat_duration: float = 8.0
    rates: tuple[int, ...] = (500, 1000, 2000)
    paced_warmup: float = 1.0
    paced_duration: float = 5.0
    nodes4_rate: int = 500
    nodes4_seconds: float = 4.0
    memory_sessions: int = 5000
    memory_reps: int = 1
    storm_clients: int = 2000
    storm_restarts: int = 3
    mailbox_messages: int = 10_000
    mailbox_reps: int = 3
    profile_seconds: float = 15.0
    #: Handshakes in flight per client process while connecting (two processes): a steady stream of sessions.
    connect_concurrency: int = 10
    #: The same for the burst check: a thundering herd.
    burst_concurrency: int = 100

    @classmethod
    def quick(cls) -> Params:
        return cls(
            reps=1,
            chat_clients=20,
            sat_warmup=0.5,
            sat_duration=2.0,
            rates=(500,),
            paced_warmup=0.5,
            paced_duration=2.0,
            nodes4_rate=300,
            nodes4_seconds=1.0,
            memory_sessions=300,
            storm_clients=100,
            storm_restarts=1,
            mailbox_messages=500,
            mailbox_reps=1,
            profile_seconds=5.0,
        )


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _lat_summary(lat_us: list[int]) -> dict[str, float]:
    lat = sorted(lat_us)
    return {
        "p50": percentile(lat, 50) / 1000,
        "p99": percentile(lat, 99) / 1000,
        "p999": percentile(lat, 99.9) / 1000,
        "n": len(lat),
    }


class SpreadDict(dict[str, Spread]):
    def add(self, key: str, value: float) -> None:
        self.setdefault(key, Spread()).add(value)


# -- systems under test ---------------------------------------------------------------------------------------


@dataclass
class System:
    """One deployment under test (Warren or the peer) with its client workers, or the ceiling pair."""

    name: str
    nodes: list[Child] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    node_queues: list[str] = field(default_factory=list)
    sent_total: int = 0

    def pids(self) -> dict[str, int]:
        pids = {f"node{i}": n.pid for i, n in enumerate(self.nodes)}
        pids.update({f"client{i}": w.pid for i, w in enumerate(self.workers)})
        broker = sionode.redis_pid() if self.name == "sionode" else broker_pid()
        if broker is not None:
            pids["broker"] = broker
        return pids

    def node_cpu(self, used: dict[str, float]) -> float:
        return sum(v for k, v in used.items() if k.startswith("node"))


async def start_warren_nodes(ctx: Context, label: str, count: int, **env: str) -> list[Child]:
    assert ctx.users_file is not None
    nodes = [
        ctx.track_child(
            warren_node(f"bench-{ctx.run_id}-{label}{i}", ctx.workdir, ctx.users_file, ctx.secret_key, **env)
        )
        for i in range(count)
    ]
    await asyncio.gather(*(n.start("/readyz") for n in nodes))
    return nodes


async def start_peer_nodes(ctx: Context, channel: str, count: int) -> list[Child]:
    nodes = [
        ctx.track_child(peer_node(f"sio-{ctx.run_id}-{channel[-6:]}-{i}", ctx.workdir, channel)) for i in range(count)
    ]
    await asyncio.gather(*(n.start("/healthz") for n in nodes))
    mgmt = await ctx.management()

    async def all_listening() -> bool:
        try:
            return len(await mgmt.exchange_destinations(channel)) >= count
        except Exception:
            return False

    await wait_for(all_listening, 30, f"{count} python-socketio nodes to bind their queues")
    return nodes


async def start_sionode_nodes(ctx: Context, key: str, count: int) -> list[Child]:
    nodes = [ctx.track_child(sionode.sionode_node(f"{key}-{i}", ctx.workdir, key)) for i in range(count)]
    await asyncio.gather(*(n.start("/healthz") for n in nodes))
    return nodes


#: The client protocol of each system: the Node peer speaks the same Socket.IO as python-socketio.
CLIENT_KIND = {"warren": "warren", "sio": "sio", "sionode": "sio", "bare": "bare"}


async def stop_system(system: System) -> None:
    for w in system.workers:
        with contextlib.suppress(Exception):
            await w.call("close", timeout=60)
        await w.stop()
    await asyncio.gather(*(n.stop() for n in system.nodes), return_exceptions=True)


def _pairs(ctx: Context, n_clients: int, group: str = "c") -> list[tuple[str, int, str]]:
    """(user, slot, target): the first half sends to the second half and back; slot = the sender's index."""
    half = n_clients // 2
    out = []
    for i in range(n_clients):
        target = (i + half) % n_clients
        out.append((ctx.user(group, i), i, ctx.user(group, target)))
    return out


async def setup_chat_system(ctx: Context, kind: str, p: Params, node_count: int = 2, label: str = "") -> System:
    """``node_count`` nodes; clients spread evenly over them, each sending to a user on another node."""
    n = p.chat_clients
    users = [ctx.user("c", i) for i in range(n)]
    if kind == "warren":
        nodes = await start_warren_nodes(ctx, f"{label}n", node_count)
        cookies = await cookies_for(nodes[0].url, ctx.secret_key, users)
        queues = [f"warren.node.{n.env['NODE_ID']}" for n in nodes]
    elif kind == "sionode":
        nodes = await start_sionode_nodes(ctx, f"bench-sionode{label}-{ctx.run_id}", node_count)
        cookies = {}
        queues = []
    else:
        channel = f"bench-sio{label}-{ctx.run_id}"
        nodes = await start_peer_nodes(ctx, channel, node_count)
        cookies = {}
        mgmt = await ctx.management()
        queues = await mgmt.exchange_destinations(channel)
    system = System(kind, nodes=nodes, node_queues=queues)
    per_node = n // node_count
    # User i lives on node i // per_node and sends to the user per_node places further (the next node).
    specs = []
    for i in range(n):
        target = (i + per_node) % n
        specs.append(
            {
                "url": nodes[min(i // per_node, node_count - 1)].url,
                "user": users[i],
                "cookie": cookies.get(users[i]),
                "slot": i,
                "target": users[target],
            }
        )
    for w in range(2):
        worker = loadgen(ctx, f"{kind}{label}-clients{w}")
        await worker.start()
        system.workers.append(worker)
    half = n // 2
    answers = await asyncio.gather(
        system.workers[0].call(
            "connect", kind=CLIENT_KIND[kind], clients=specs[:half], concurrency=p.connect_concurrency
        ),
        system.workers[1].call(
            "connect", kind=CLIENT_KIND[kind], clients=specs[half:], concurrency=p.connect_concurrency
        ),
    )
    failed = sum(a["failed"] for a in answers)
    if failed:
        raise RuntimeError(
            f"{kind}: {failed} clients failed to connect: {answers[0]['errors'] or answers[1]['errors']}"
        )
    return system


async def setup_ceiling(ctx: Context) -> System:
    pub, sub = ceiling_proc(ctx, "pub"), ceiling_proc(ctx, "sub")
    await pub.start()
    await sub.start()
    await sub.call("start")
    await pub.call("start")
    return System("ceiling", workers=[pub, sub])


# -- measurements ----------------------------------------------------------------------------------------------


async def saturate(system: System, p: Params, shm_name: str, duration: float | None = None) -> dict[str, Any]:
    duration = duration or p.sat_duration
    start_at = time.monotonic() + 0.3
    meter = CpuMeter(system.pids())
    if system.name == "ceiling":
        pub, sub = system.workers
        calls = [
            pub.call(
                "saturate",
                start_at=start_at,
                warmup=p.sat_warmup,
                duration=duration,
                window=p.window * p.chat_clients,
                publishers=p.chat_clients,
            ),
            sub.call("measure", start_at=start_at, warmup=p.sat_warmup, duration=duration),
        ]
    else:
        calls = [
            w.call("saturate", start_at=start_at, warmup=p.sat_warmup, duration=duration, window=p.window)
            for w in system.workers
        ]
    gathered = asyncio.gather(*calls)
    await _sleep_until(start_at + p.sat_warmup)
    meter.start()
    await _sleep_until(start_at + p.sat_warmup + duration)
    used = meter.stop()
    answers = await gathered
    if system.name == "ceiling":
        measured = answers[1]
        received, seconds, lat = measured["received"], measured["seconds"], measured["lat_us"]
        system.sent_total += answers[0]["sent"]
        server_cpu = used.get("client0", 0.0) + used.get("client1", 0.0)  # publisher + consumer
    else:
        received = sum(a["received"] for a in answers)
        seconds = statistics.mean(a["seconds"] for a in answers)
        lat = [x for a in answers for x in a["lat_us"]]
        system.sent_total += sum(a["sent"] for a in answers)
        server_cpu = system.node_cpu(used)
    result = {
        "throughput": received / seconds,
        "received": received,
        "cpu_per_10k": server_cpu / max(received, 1) * 10_000,
        "broker_cpu_per_10k": used.get("broker", 0.0) / max(received, 1) * 10_000,
        "machine_busy": used["_machine"] / used["_wall"],
        # Cores busy with processes that are not part of this measurement (other work on the machine).
        "other_cores": (used["_machine"] - sum(v for k, v in used.items() if not k.startswith("_"))) / used["_wall"],
        **{f"sat_{k}": v for k, v in _lat_summary(lat).items()},
    }
    if system.name != "ceiling":
        result["undelivered"] = sum(a["undelivered"] for a in answers)
        result["client_cpu"] = sum(v for k, v in used.items() if k.startswith("client")) / used["_wall"]
    return result


async def paced(
    system: System, p: Params, rate: int, warmup: float | None = None, duration: float | None = None
) -> dict[str, Any]:
    warmup = p.paced_warmup if warmup is None else warmup
    duration = p.paced_duration if duration is None else duration
    start_at = time.monotonic() + 0.3
    meter = CpuMeter(system.pids())
    if system.name == "ceiling":
        pub, sub = system.workers
        calls = [
            pub.call("paced", start_at=start_at, rate=rate, warmup=warmup, duration=duration),
            sub.call("measure", start_at=start_at, warmup=warmup, duration=duration),
        ]
    else:
        share = rate / len(system.workers)
        calls = [
            w.call("paced", start_at=start_at, rate=share, warmup=warmup, duration=duration) for w in system.workers
        ]
    received_before = await _received_total(system) if system.name != "ceiling" else 0
    gathered = asyncio.gather(*calls)
    await _sleep_until(start_at + warmup)
    meter.start()
    await _sleep_until(start_at + warmup + duration)
    used = meter.stop()
    answers = await gathered
    drain = 0.0
    lost_after_drain = 0
    if system.name != "ceiling":
        # Wait until everything sent has arrived, so a backlog never spills into the next measurement.
        sent_now = sum(a["sent"] for a in answers)
        t0 = time.monotonic()
        got = 0
        while time.monotonic() - t0 < 60:
            got = await _received_total(system) - received_before
            if got >= sent_now:
                break
            await asyncio.sleep(0.1)
        drain = time.monotonic() - t0
        lost_after_drain = max(0, sent_now - got)
    if system.name == "ceiling":
        sent = answers[0]["sent"]
        received = answers[1]["received"]
        lat = answers[1]["lat_us"]
        server_cpu = used.get("client0", 0.0) + used.get("client1", 0.0)
        in_window = received
    else:
        sent = sum(a["sent"] for a in answers)
        received = sum(a["received"] for a in answers)
        lat = [x for a in answers for x in a["lat_us"]]
        server_cpu = system.node_cpu(used)
        in_window = rate * duration
    system.sent_total += sent
    summary = _lat_summary(lat)
    return {
        **summary,
        "sent": sent,
        "received": received,
        # Not delivered within 3 s of the end of the run (late), and never delivered (lost, after up to 60 s).
        "late": max(0, sent - received) if system.name != "ceiling" else 0,
        "lost": lost_after_drain if system.name != "ceiling" else 0,
        "drain_seconds": drain,
        "other_cores": (used["_machine"] - sum(v for k, v in used.items() if not k.startswith("_"))) / used["_wall"],
        "expected_in_window": rate * duration,
        "cpu_per_10k": server_cpu / max(in_window, 1) * 10_000,
        "max_late_ms": max((a.get("max_late_ms", 0.0) for a in answers), default=0.0),
    }


async def _received_total(system: System) -> int:
    statuses = await asyncio.gather(*(w.call("status") for w in system.workers))
    return sum(int(st["received"]) for st in statuses)


# -- scenarios -------------------------------------------------------------------------------------------------


async def scenario_chat(ctx: Context, p: Params, systems: list[str], with_ceiling: bool, profile: bool) -> None:
    """Two nodes per system, 200 clients: saturation, open-loop latency, CPU, broker deliveries per message."""
    out: dict[str, Any] = ctx.results.setdefault("chat", {})
    running: dict[str, System] = {}
    shms: dict[str, str] = {}
    try:
        for kind in systems:
            log(f"chat: starting 2 {kind} nodes and {p.chat_clients} clients")
            running[kind] = await setup_chat_system(ctx, kind, p)
        if with_ceiling:
            log("chat: starting the ceiling publisher and consumer")
            running["ceiling"] = await setup_ceiling(ctx)
        for name, system in running.items():
            segment = ctx.shm(p.chat_clients + 1)
            shms[name] = segment.name
            for w in system.workers:
                await w.call("attach_shm", name=segment.name)
        if "warren" in running:
            out["login_rate"] = await _login_rate(ctx, running["warren"].nodes[0].url, min(24, p.chat_clients))
        # Fresh queues: deliveries start at zero; read again after the runs, once the stats have been emitted.
        names = list(running)
        sat: dict[str, SpreadDict] = {n: SpreadDict() for n in names}
        for rep in range(p.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                r = await saturate(running[name], p, shms[name])
                for key, value in r.items():
                    sat[name].add(key, value)
                log(
                    f"chat: {name} saturation rep {rep + 1}: {r['throughput']:.0f} msg/s, "
                    f"{r['cpu_per_10k']:.2f} CPU s/10k, p99 {r['sat_p99']:.1f} ms, "
                    f"machine {r['machine_busy']:.2f} cores, "
                    f"other work {r['other_cores']:.2f} cores"
                )
        lat: dict[str, dict[int, SpreadDict]] = {n: {} for n in names}
        for rate in p.rates:
            for rep in range(p.reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for name in order:
                    r = await paced(running[name], p, rate)
                    for key, value in r.items():
                        lat[name].setdefault(rate, SpreadDict()).add(key, value)
                    log(
                        f"chat: {name} at {rate}/s rep {rep + 1}: p50 {r['p50']:.2f} p99 {r['p99']:.2f} "
                        f"p99.9 {r['p999']:.2f} ms, late {r['late']}, lost {r['lost']}, "
                        f"{r['cpu_per_10k']:.2f} CPU s/10k, "
                        f"drain {r['drain_seconds']:.1f} s, other work {r['other_cores']:.2f} cores"
                    )
        deliveries: dict[str, float] = {}
        chat_systems = [n for n in names if n != "ceiling"]
        if chat_systems:
            for name in chat_systems:
                system = running[name]
                delivered = await _system_deliveries(ctx, system)
                deliveries[name] = delivered / max(system.sent_total, 1)
                log(f"chat: {name}: {delivered} broker deliveries for {system.sent_total} messages")
        for name in names:
            out[name] = {
                "saturation": dict(sat[name]),
                "paced": {rate: dict(v) for rate, v in lat[name].items()},
            }
            if name in deliveries:
                out[name]["deliveries_per_msg_2"] = deliveries[name]
                out[name]["sent_total"] = running[name].sent_total
        if profile and "warren" in running:
            ctx.results["profile"] = await _profile(ctx, running["warren"], p, shms["warren"])
    finally:
        for system in running.values():
            if system.name == "ceiling":
                for w in system.workers:
                    await w.stop()
            else:
                await stop_system(system)


async def _login_rate(ctx: Context, url: str, count: int = 24, concurrency: int = 4) -> float:
    """POST /login per second on one node (scrypt-bound by design)."""
    import aiohttp

    users = [ctx.user("c", i) for i in range(count)]
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:

        async def one(user: str) -> None:
            async with sem:
                await login_cookie(url, user, http)

        started = time.monotonic()
        await asyncio.gather(*(one(u) for u in users))
        return count / (time.monotonic() - started)


async def _profile(ctx: Context, system: System, p: Params, shm_name: str) -> dict[str, Any]:
    """py-spy on both Warren nodes during a saturation run; the collapsed stacks are kept in the work directory."""
    from .profile import summarize

    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        log("profile: py-spy is not installed (pip install py-spy); skipped")
        return {}
    outputs = []
    procs = []
    seconds = int(p.profile_seconds)
    for i, node in enumerate(system.nodes):
        path = ctx.workdir / f"profile-node{i}.txt"
        outputs.append(path)
        procs.append(
            subprocess.Popen(
                [
                    str(pyspy),
                    "record",
                    "--pid",
                    str(node.pid),
                    "--rate",
                    "200",
                    "--duration",
                    str(seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    await asyncio.sleep(1.0)
    r = await saturate(system, p, shm_name, duration=seconds - 2.5)
    for proc in procs:
        for _ in range(200):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
    summary = summarize([path for path in outputs if path.exists()])
    summary["throughput_while_profiled"] = r["throughput"]
    summary["node_cpu_us_per_msg"] = r["cpu_per_10k"] / 10_000 * 1e6
    summary["files"] = [str(path) for path in outputs]
    return summary


async def scenario_nodes4(ctx: Context, p: Params, systems: list[str]) -> None:
    """Broker deliveries per message with 4 nodes (clients spread evenly, each sending to the next node)."""
    out: dict[str, Any] = ctx.results.setdefault("nodes4", {})
    for kind in systems:
        log(f"nodes4: {kind} with 4 nodes")
        system = await setup_chat_system(ctx, kind, p, node_count=4, label="4")
        try:
            r = await paced(system, p, p.nodes4_rate, warmup=0.0, duration=p.nodes4_seconds)
            delivered = await _system_deliveries(ctx, system)
            out[kind] = {
                "deliveries_per_msg_4": delivered / max(system.sent_total, 1),
                "cpu_per_10k_4": r["cpu_per_10k"],
                "rate_4": p.nodes4_rate,
                "sent": system.sent_total,
                "received": r["received"],
                "delivered_by_broker": delivered,
            }
            log(f"nodes4: {kind}: {delivered} broker deliveries for {system.sent_total} messages")
        finally:
            await stop_system(system)


async def _system_deliveries(ctx: Context, system: System) -> int:
    """Messages the broker handed to the system's nodes: RabbitMQ queue deliveries, or Redis pub/sub arrivals."""
    if system.name == "sionode":
        return await sionode.adapter_arrivals(system.nodes)
    return await _settled_deliveries(ctx, system.node_queues)


async def _settled_deliveries(ctx: Context, queues: list[str]) -> int:
    """deliver_get summed over ``queues``, read until two readings 5.5 s apart agree: the management plugin
    emits queue stats every 5 s, and on a busy machine its collector can lag behind that."""
    mgmt = await ctx.management()
    await asyncio.sleep(5.5)
    value = await mgmt.queue_delivered(queues)
    for _ in range(6):
        await asyncio.sleep(5.5)
        again = await mgmt.queue_delivered(queues)
        if again == value:
            break
        value = again
    return value


async def _bindings(ctx: Context, queue: str) -> int:
    mgmt = await ctx.management()
    data = await mgmt.get(f"queues/%2F/{queue}/bindings")
    return sum(1 for b in data if b.get("source") == "warren.messages")


async def scenario_memory(ctx: Context, p: Params, servers: list[str]) -> None:
    """RSS per idle session at ``memory_sessions`` sessions on one node, for each server, in one run."""
    out: dict[str, Any] = ctx.results.setdefault("memory", {})
    n = p.memory_sessions
    for rep in range(p.memory_reps):
        for server in servers:
            log(f"memory: {server}, {n} idle sessions (rep {rep + 1})")
            if server == "bare":
                node = ctx.track_child(bare_node(ctx.workdir))
                await node.start("/healthz")
                nodes = [node]
                cookies: dict[str, str] = {}
            elif server == "warren":
                nodes = await start_warren_nodes(ctx, f"m{rep}-", 1)
                node = nodes[0]
                cookies = await cookies_for(node.url, ctx.secret_key, [ctx.user("m", i) for i in range(n)])
            elif server == "sionode":
                nodes = await start_sionode_nodes(ctx, f"bench-sionodem-{ctx.run_id}", 1)
                node = nodes[0]
                cookies = {}
            else:
                nodes = await start_peer_nodes(ctx, f"bench-siom-{ctx.run_id}", 1)
                node = nodes[0]
                cookies = {}
            workers = [loadgen(ctx, f"mem-{server}-{w}") for w in range(2)]
            system = System(server, nodes=nodes, workers=workers)
            try:
                for w in workers:
                    await w.start()
                specs = [
                    {"url": node.url, "user": ctx.user("m", i), "cookie": cookies.get(ctx.user("m", i))}
                    for i in range(n)
                ]
                # Warm-up: the code paths of a session are imported and their caches filled before the baseline.
                warm = specs[: min(100, n)]
                await workers[0].call("connect", kind=CLIENT_KIND[server], clients=warm, concurrency=50)
                await workers[0].call("close")
                await asyncio.sleep(1.5)
                base = rss_bytes(node.pid)
                started = time.monotonic()
                half = n // 2
                answers = await asyncio.gather(
                    workers[0].call(
                        "connect", kind=CLIENT_KIND[server], clients=specs[:half], concurrency=p.connect_concurrency
                    ),
                    workers[1].call(
                        "connect", kind=CLIENT_KIND[server], clients=specs[half:], concurrency=p.connect_concurrency
                    ),
                )
                bound = None
                if server == "warren":
                    queue = f"warren.node.{node.env['NODE_ID']}"
                    bound = await _wait_bound(ctx, queue, n)
                elapsed = time.monotonic() - started
                connected = sum(a["connected"] for a in answers)
                await asyncio.sleep(2.0)
                rss = rss_bytes(node.pid)
                out.setdefault(server, {"kib_per_session": Spread(), "connect_rate": Spread()})
                out[server]["kib_per_session"].add((rss - base) / connected / 1024)
                out[server]["connect_rate"].add(connected / elapsed)
                out[server]["sessions"] = connected
                if bound is not None:
                    out[server]["bound"] = bound
                    if bound < n:
                        log(f"memory: only {bound} of {n} sessions were bound on the broker")
                out[server]["rss_mib"] = rss / 2**20
                log(
                    f"memory: {server}: {(rss - base) / connected / 1024:.1f} KiB/session "
                    f"({connected} sessions, {connected / elapsed:.0f}/s to connect)"
                )
            finally:
                await stop_system(system)


async def _wait_bound(ctx: Context, queue: str, n: int, stall: float = 10.0, limit: float = 180.0) -> int:
    """Wait until ``n`` users are bound to ``queue``, or until the count stops growing for ``stall`` seconds."""
    started = last_change = time.monotonic()
    last = -1
    while True:
        try:
            count = await _bindings(ctx, queue)
        except Exception:
            count = last
        if count >= n:
            return count
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        elif now - last_change > stall or now - started > limit:
            return max(count, 0)
        await asyncio.sleep(0.1)


async def _bindings_at_least(ctx: Context, queue: str, n: int) -> bool:
    try:
        return await _bindings(ctx, queue) >= n
    except Exception:
        return False


async def _raw_bind_rate(ctx: Context, n: int) -> float:
    """queue.bind RPCs per second on one channel, one after another (what one node's control channel can do)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"bench.binds.{ctx.run_id}", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(exclusive=True)
        raw = await channel.get_underlay_channel()
        started = time.monotonic()
        for i in range(n):
            await raw.queue_bind(queue.name, exchange.name, routing_key=f"user.bench{i}")
        rate = n / (time.monotonic() - started)
        await exchange.delete()
        return rate
    finally:
        await connection.close()


async def scenario_storm(ctx: Context, p: Params) -> None:
    """Connect rate on one node, then its restart: time until every client is back and bound."""
    out: dict[str, Any] = ctx.results.setdefault("storm", {})
    n = p.storm_clients
    out["raw_binds_per_s"] = await _raw_bind_rate(ctx, min(n, 1000))
    log(f"storm: raw queue.bind on one channel, one at a time: {out['raw_binds_per_s']:.0f}/s")
    nodes = await start_warren_nodes(ctx, "storm", 1)
    node = nodes[0]
    queue = f"warren.node.{node.env['NODE_ID']}"
    users = [ctx.user("s", i) for i in range(n)]
    cookies = await cookies_for(node.url, ctx.secret_key, users)
    workers = [loadgen(ctx, f"storm-{w}") for w in range(2)]
    system = System("warren", nodes=nodes, workers=workers)
    try:
        for w in workers:
            await w.start()
        specs = [{"url": node.url, "user": u, "cookie": cookies[u]} for u in users]
        half = n // 2
        log(f"storm: connecting {n} clients to one node")
        started = time.monotonic()
        answers = await asyncio.gather(
            workers[0].call("connect", kind="warren", clients=specs[:half], concurrency=p.connect_concurrency),
            workers[1].call("connect", kind="warren", clients=specs[half:], concurrency=p.connect_concurrency),
        )
        failed = sum(a["failed"] for a in answers)
        bound = await _wait_bound(ctx, queue, n - failed)
        elapsed = time.monotonic() - started
        out["clients"] = n
        out["connect_failed"] = failed
        out["connect_bound"] = bound
        if bound < n:
            out["connect_rate_note"] = f"only {bound} of {n} bound"
            log(f"storm: only {bound} of {n} sessions bound ({failed} failed to connect); no storm measured")
            return
        out["connect_rate"] = Spread([n / elapsed])
        log(f"storm: {n} sessions connected and bound in {elapsed:.2f} s ({n / elapsed:.0f}/s)")
        for w in workers:
            await w.call("reconnect_mode", on=True, backoff=[0.05, 0.5])
        from_ready, from_sigterm, restart = Spread(), Spread(), Spread()
        for rep in range(p.storm_restarts):
            t_term = time.monotonic()
            await node.stop(signal.SIGTERM)
            t_exit = time.monotonic()
            node.spawn()
            await node.wait_ready("/readyz")
            t_ready = time.monotonic()

            async def all_back() -> bool:
                statuses = await asyncio.gather(*(w.call("status") for w in workers))
                if sum(s["open"] for s in statuses) < n - failed:
                    return False
                return await _bindings_at_least(ctx, queue, n - failed)

            try:
                await wait_for(all_back, 60, "all clients back and bound", 0.05)
            except TimeoutError:
                statuses = await asyncio.gather(*(w.call("status") for w in workers))
                bound = await _bindings(ctx, queue)
                out["storm_note"] = (
                    f"restart {rep + 1}: after 60 s {sum(s['open'] for s in statuses)} of {n} reconnected, "
                    f"{bound} bound"
                )
                log(f"storm: {out['storm_note']}")
                break
            t_all = time.monotonic()
            from_ready.add(t_all - t_ready)
            from_sigterm.add(t_all - t_term)
            restart.add(t_ready - t_exit)
            log(
                f"storm: restart {rep + 1}: all {n} bound {t_all - t_ready:.2f} s after the node was ready "
                f"({t_all - t_term:.2f} s after SIGTERM; drain {t_exit - t_term:.2f} s, start {t_ready - t_exit:.2f} s)"
            )
        out["from_ready"] = from_ready
        out["from_sigterm"] = from_sigterm
        out["node_start"] = restart
        # A thundering herd: every client at once (many handshakes in flight), on a fresh node.
        for w in workers:
            await w.call("reconnect_mode", on=False)
            await w.call("close")
        await node.stop(signal.SIGTERM)
        node.spawn()
        await node.wait_ready("/readyz")
        in_flight = p.burst_concurrency * len(workers)
        log(f"storm: burst of {n} connects, {in_flight} handshakes in flight")
        started = time.monotonic()
        await asyncio.gather(
            workers[0].call("connect", kind="warren", clients=specs[:half], concurrency=p.burst_concurrency),
            workers[1].call("connect", kind="warren", clients=specs[half:], concurrency=p.burst_concurrency),
        )
        bound = await _wait_bound(ctx, queue, n)
        out["burst"] = {"clients": n, "in_flight": in_flight, "bound": bound, "seconds": time.monotonic() - started}
        log(f"storm: burst: {bound} of {n} bound ({time.monotonic() - started:.1f} s)")
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                await w.call("reconnect_mode", on=False)
        await stop_system(system)


async def scenario_mailbox(ctx: Context, p: Params) -> None:
    """Time for a user who connects to receive ``mailbox_messages`` queued messages."""
    import aio_pika

    from app.backplane.topology import MailboxLimits

    out: dict[str, Any] = ctx.results.setdefault("mailbox", {})
    n = p.mailbox_messages
    mgmt = await ctx.management()
    # A policy for this run's mailboxes only (higher priority than Warren's own), roomy enough for the test.
    await mgmt.put(
        f"policies/%2F/bench-{ctx.run_id}-mailboxes",
        {
            "pattern": f"^warren\\.mailbox\\.b{ctx.run_id}-",
            "apply-to": "queues",
            "priority": 100,
            "definition": MailboxLimits(ttl_seconds=3600, max_messages=4 * n).policy_definition(),
        },
    )
    nodes = await start_warren_nodes(ctx, "mbx", 1)
    node = nodes[0]
    sender = ctx.user("x", 0)
    receivers = [ctx.user("r", i) for i in range(p.mailbox_reps)]
    cookies = await cookies_for(node.url, ctx.secret_key, [sender, *receivers])
    worker = loadgen(ctx, "mailbox")
    system = System("warren", nodes=nodes, workers=[worker])
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await worker.start()
        await worker.call(
            "connect", kind="warren", clients=[{"url": node.url, "user": sender, "cookie": cookies[sender]}]
        )
        channel = await connection.channel()
        seconds, fill, after_sub = Spread(), Spread(), Spread()
        for receiver in receivers:
            r = await worker.call("send_receipts", index=0, target=receiver, n=n, window=100)
            fill.add(r["seconds"])

            async def queued(name: str = f"warren.mailbox.{receiver}") -> bool:
                declared = await channel.declare_queue(name, passive=True)
                return (declared.declaration_result.message_count or 0) >= n

            await wait_for(queued, 30, f"{n} messages in the mailbox")
            got = await worker.call(
                "mailbox", kind="warren", spec={"url": node.url, "user": receiver, "cookie": cookies[receiver]}, n=n
            )
            if got["received"] < n or got["out_of_order"]:
                log(f"mailbox: received {got['received']} of {n}, {got['out_of_order']} out of order")
            seconds.add(got["seconds"])
            after_sub.add(got["after_subscribe"])
            out["out_of_order"] = out.get("out_of_order", 0) + got["out_of_order"]
            out["missing"] = out.get("missing", 0) + n - got["received"]
            log(f"mailbox: {n} queued messages delivered in {got['seconds']:.2f} s (filled in {r['seconds']:.2f} s)")
        out.update(seconds=seconds, fill_seconds=fill, after_subscribe=after_sub, messages=n)
    finally:
        await connection.close()
        await stop_system(system)
