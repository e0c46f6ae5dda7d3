"""Connections per node as a curve: at each step, N authenticated idle SockJS WebSocket sessions on one fresh node.

Each session has the session cookie, opened ``/chat-websocket/<server>/<session>/websocket``, sent STOMP CONNECT
and SUBSCRIBE ``/user/topic/reply`` (RECEIPT awaited), and is bound on the broker (counted from the management
API). The clients live in ``ScaleParams.generators`` processes on source addresses 127.0.0.2, 127.0.0.3, … At each
step, in this order:

1. node CPU and the broker's memory with no session (after a warm-up of 100 sessions opened and closed): the
   baseline;
2. N sessions opened (``connect_concurrency`` handshakes in flight per generator) until all N are bound: sessions/s;
3. RSS of the node per session ((RSS after − RSS before) ÷ N), its open file descriptors, the broker's memory per
   bound user;
4. CPU per idle session per second: utime + stime of the node over ``idle_window`` seconds (two heart-beat periods)
   with nothing but heart-beats and sweeps, ÷ N ÷ seconds, gross and net of the baseline; the broker's CPU
   likewise;
5. ``/healthz`` latency from a separate prober process (the event loop's responsiveness with N sessions);
6. latency p50/p99/p99.9 at ``rate`` msg/s offered between ``active`` users, the chat scenario of ``make bench``
   (200 users, 1,000 msg/s) with the node's other N − 100 sessions idle: half of the active users are sessions
   of the node under test, each writing to a partner on a second node (which holds only the partners) and back;
   open loop, from the intended send time;
7. SIGTERM: the node tells every session to reconnect and unbinds them; the seconds that takes (unbinds/s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from .common import Spread, broker_pid, cookies_for, log, percentile, rss_bytes
from .runner import Proc
from .scale_common import FineCpuMeter, ScaleParams, ScaleRun, broker_memory, close_all, connect_all
from .scenarios import Params, System, paced


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def probe_healthz(run: ScaleRun, url: str, seconds: float, interval: float) -> dict[str, float]:
    prober = run.ctx.track_proc(Proc("probe", [sys.executable, "-m", "bench.probe"], run.ctx.workdir / "probe.log"))
    await prober.start()
    try:
        await prober.call("start", url=url + "/healthz", interval=interval, timeout=5.0, max_seconds=seconds + 30)
        await asyncio.sleep(seconds)
        samples = (await prober.call("stop"))["samples"]
    finally:
        await prober.stop()
    return summarize_probes(samples)


def summarize_probes(samples: list[list[float | None]]) -> dict[str, float]:
    times = sorted(s[1] for s in samples if s[1] is not None)
    failed = sum(1 for s in samples if s[1] is None)
    return {
        "n": len(samples),
        "failed": failed,
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "max_ms": (times[-1] * 1000) if times else float("nan"),
    }


async def one_step(run: ScaleRun, p: ScaleParams, n: int, rep: int, gens: list[Proc]) -> dict[str, Any]:
    ctx = run.ctx
    mgmt = await ctx.management()
    node = await run.start_node(f"c{n}-")
    half = min(p.active // 2, n)
    partner = await run.start_node(f"p{n}-") if half else None
    queue = run.node_queue(node)
    users = [run.user(i) for i in range(n)]
    partners = [run.partner(i) for i in range(half)]
    cookies = await cookies_for(node.url, ctx.secret_key, users + partners)
    specs: list[dict[str, Any]] = []
    for i, user in enumerate(users):
        spec: dict[str, Any] = {"url": node.url, "user": user, "cookie": cookies[user]}
        if i < half:
            spec["slot"] = i
            spec["target"] = partners[i]
        specs.append(spec)
    partner_specs = []
    if partner is not None:
        partner_specs = [
            {"url": partner.url, "user": u, "cookie": cookies[u], "slot": half + i, "target": users[i]}
            for i, u in enumerate(partners)
        ]
    out: dict[str, Any] = {"sessions": n}
    system = System("warren", nodes=[node] if partner is None else [node, partner], workers=gens)
    try:
        # Warm-up: a session's code paths imported and caches filled before the baseline.
        warm = specs[: min(100, n)]
        await connect_all(gens, [{k: v for k, v in s.items() if k not in ("slot", "target")} for s in warm], 20)
        await close_all(gens)
        await run.wait_unbound(queue)
        # Closed sessions linger for SOCKJS_DISCONNECT_DELAY (5 s) before the sweep drops them.
        await asyncio.sleep(max(p.settle, 6.0))
        beam = broker_pid()
        meter = FineCpuMeter({"node": node.pid, **({"broker": beam} if beam else {})})
        meter.start()
        await asyncio.sleep(p.baseline_window)
        base_used = meter.stop()
        base_rss = rss_bytes(node.pid)
        base_broker = await broker_memory(mgmt)
        out["baseline_node_cores"] = base_used["node"] / base_used["_wall"]
        out["baseline_broker_cores"] = base_used.get("broker", 0.0) / base_used["_wall"]

        if partner is not None:
            # After the warm-up, whose close_all would end them too.
            done = await connect_all(gens, partner_specs, p.connect_concurrency)
            partners_bound = await run.wait_bound(run.node_queue(partner), half)
            if done["failed"] or partners_bound < half:
                raise RuntimeError(f"only {partners_bound} of {half} partners bound: {done['errors'][:2]}")
        log(f"curve: {n} sessions (rep {rep + 1}): connecting")
        started = time.monotonic()
        answer = await connect_all(gens, specs, p.connect_concurrency)
        if answer["failed"]:
            log(f"curve: {answer['failed']} of {n} failed to connect: {answer['errors'][:2]}")
        bound = await run.wait_bound(queue, answer["connected"], limit=max(120.0, n / 20))
        connect_seconds = time.monotonic() - started
        out.update(connected=answer["connected"], failed=answer["failed"], bound=bound)
        out["connect_seconds"] = connect_seconds
        out["sessions_per_s"] = bound / connect_seconds
        log(f"curve: {bound} of {n} bound in {connect_seconds:.1f} s ({bound / connect_seconds:.0f}/s)")

        await asyncio.sleep(p.settle)
        rss = rss_bytes(node.pid)
        broker_after = await broker_memory(mgmt)
        out["rss_mib"] = rss / 2**20
        out["kib_per_session"] = (rss - base_rss) / max(answer["connected"], 1) / 1024
        out["node_fds"] = _fds(node.pid)
        if "rss" in broker_after and "rss" in base_broker:
            out["broker_bytes_per_user"] = (broker_after["rss"] - base_broker["rss"]) / max(bound, 1)
        for key in ("mem_used", "tables"):
            if key in broker_after and key in base_broker:
                out[f"broker_{key}_per_user"] = (broker_after[key] - base_broker[key]) / max(bound, 1)

        meter.start()
        await asyncio.sleep(p.idle_window)
        used = meter.stop()
        wall = used["_wall"]
        node_cores = used["node"] / wall
        out["idle_node_cores"] = node_cores
        out["idle_us_per_session_s"] = node_cores / max(bound, 1) * 1e6
        out["idle_us_per_session_s_net"] = (node_cores - out["baseline_node_cores"]) / max(bound, 1) * 1e6
        if "broker" in used:
            broker_cores = used["broker"] / wall
            out["idle_broker_cores"] = broker_cores
            out["broker_us_per_user_s_net"] = (broker_cores - out["baseline_broker_cores"]) / max(bound, 1) * 1e6
        out["other_cores"] = (used["_machine"] - used["node"] - used.get("broker", 0.0)) / wall
        log(
            f"curve: {n}: {out['kib_per_session']:.1f} KiB/session, {out['idle_us_per_session_s']:.2f} µs CPU per "
            f"idle session per s (net {out['idle_us_per_session_s_net']:.2f}), "
            f"other work {out['other_cores']:.2f} cores"
        )

        out["healthz"] = await probe_healthz(run, node.url, p.probe_seconds, p.probe_interval)

        if partner is not None:
            lat = await paced(system, Params(paced_warmup=p.paced_warmup, paced_duration=p.paced_duration), p.rate)
            out["latency"] = {k: lat[k] for k in ("p50", "p99", "p999", "n", "sent", "received", "late", "lost")}
            out["latency"]["cpu_per_10k"] = lat["cpu_per_10k"]
            out["latency"]["other_cores"] = lat["other_cores"]
            log(
                f"curve: {n}: at {p.rate} msg/s p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} p99.9 {lat['p999']:.2f} ms, "
                f"late {lat['late']}, lost {lat['lost']}"
            )

        t_term = time.monotonic()
        await node.stop(signal.SIGTERM, timeout=60)
        out["drain_seconds"] = time.monotonic() - t_term
        out["unbinds_per_s"] = bound / out["drain_seconds"]
    finally:
        await close_all(gens)
        await node.stop()
        if partner is not None:
            await partner.stop()
    return out


async def scenario_curve(run: ScaleRun, p: ScaleParams) -> dict[str, Any]:
    gens = await run.start_generators(p.generators)
    results: dict[str, Any] = {"steps": {}}
    for rep in range(p.reps):
        for n in p.steps:
            r = await one_step(run, p, n, rep, gens)
            step = results["steps"].setdefault(str(n), {"reps": []})
            step["reps"].append(r)
    for step in results["steps"].values():
        step["summary"] = summarize_reps(step["reps"])
    return results


def summarize_reps(reps: list[dict[str, Any]]) -> dict[str, Spread]:
    """Medians with min–max of the numeric figures of a step's repetitions (nested ones flattened with '.')."""
    flat: dict[str, Spread] = {}
    for r in reps:
        for key, value in _flatten(r).items():
            flat.setdefault(key, Spread()).add(value)
    return flat


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
