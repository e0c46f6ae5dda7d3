"""Reconnect storm at scale: N clients (default 15,000) on one node, which gets SIGTERM; they reconnect to the other.

Two nodes on the run's own topology. All N clients connect to node A (sessions/s until all are bound: the cold
connect rate at this scale), and are told (``retarget``) to reconnect to node B, with full-jitter backoff
(``storm_backoff``: 50 ms doubling to 500 ms). Then A gets SIGTERM: it tells every session to reconnect (close code
4012) and unbinds its users; the clients come to B. Measured, from SIGTERM:

* seconds until all N are open again and bound on B (the target: under 30 s for 15,000), and until A exited;
* ``/healthz`` of B meanwhile (a prober in its own process, every 50 ms): p50, p99, max, failures (target p99
  under 100 ms);
* bind rate on B and unbind rate on A, from the bindings of both node queues sampled every 0.5 s: mean over the
  storm and the best interval between two samples.

Repetitions alternate: the next one starts a fresh node and SIGTERMs the one everybody is now on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
import time
from typing import Any

from .common import Child, Spread, cookies_for, log
from .runner import Proc
from .scale_common import ScaleParams, ScaleRun, close_all, connect_all
from .scale_curve import summarize_probes


async def _sample_bindings(
    run: ScaleRun, queues: dict[str, str], out: list[dict[str, float]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        t = time.monotonic()
        row: dict[str, float] = {"t": t}
        for label, queue in queues.items():
            with contextlib.suppress(Exception):
                count = await run.bindings(queue, missing=None)
                if count is not None:
                    row[label] = float(count)
        out.append(row)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.05, 0.5 - (time.monotonic() - t)))


def _rates(samples: list[dict[str, float]], label: str, rising: bool) -> dict[str, float]:
    """Mean and peak rate of change of ``label`` between samples (binds: rising; unbinds: falling).

    A node queue that is gone has no sample (its deletion is not a stream of unbinds).
    """
    points = [(s["t"], s[label]) for s in samples if label in s]
    steps = []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        dv = (v1 - v0) if rising else (v0 - v1)
        if dv > 0 and t1 > t0:
            steps.append((t0, t1, dv))
    if not steps:
        return {"peak": 0.0, "mean": 0.0, "changed": 0.0}
    total = sum(dv for _, _, dv in steps)
    span = steps[-1][1] - steps[0][0]
    return {"peak": max(dv / (t1 - t0) for t0, t1, dv in steps), "mean": total / span, "changed": total}


async def one_storm(run: ScaleRun, p: ScaleParams, gens: list[Proc], old: Child, new: Child, n: int) -> dict[str, Any]:
    old_q, new_q = run.node_queue(old), run.node_queue(new)
    for g in gens:
        await g.call("retarget", url=new.url)
        await g.call("reconnect_mode", on=True, backoff=list(p.storm_backoff))
    prober = run.ctx.track_proc(
        Proc("storm-probe", [sys.executable, "-m", "bench.probe"], run.ctx.workdir / "probe.log")
    )
    await prober.start()
    samples: list[dict[str, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_bindings(run, {"old": old_q, "new": new_q}, samples, stop))
    out: dict[str, Any] = {"clients": n}
    try:
        await prober.call(
            "start", url=new.url + "/healthz", interval=0.05, timeout=5.0, max_seconds=p.storm_timeout + 60
        )
        await asyncio.sleep(1.0)
        t_term = time.monotonic()
        stopping = asyncio.create_task(old.stop(signal.SIGTERM, timeout=60))
        t_exit = None
        deadline = t_term + p.storm_timeout
        opened = bound = 0
        while time.monotonic() < deadline:
            if t_exit is None and stopping.done():
                t_exit = time.monotonic()
            statuses = await asyncio.gather(*(g.call("status") for g in gens))
            opened = sum(s["open"] for s in statuses)
            if opened >= n:
                bound = await run.bindings(new_q)
                if bound >= n:
                    break
            await asyncio.sleep(0.1)
        t_all = time.monotonic()
        await stopping
        t_exit = t_exit or time.monotonic()
        probes = (await prober.call("stop"))["samples"]
        stop.set()
        await sampler
        statuses = await asyncio.gather(*(g.call("status") for g in gens))
        out["reconnect_failures"] = sum(s["reconnect_failures"] for s in statuses)
        out["opened"] = opened
        out["bound"] = bound
        out["complete"] = bound >= n
        out["all_bound_s"] = t_all - t_term
        out["old_exit_s"] = t_exit - t_term
        during = [s for s in probes if t_term <= s[0] <= t_all]
        out["healthz"] = summarize_probes(during)
        out["binds"] = _rates(samples, "new", rising=True)
        out["unbinds"] = _rates(samples, "old", rising=False)
        log(
            f"storm: {bound} of {n} bound on the other node {t_all - t_term:.1f} s after SIGTERM "
            f"(old node exited after {t_exit - t_term:.1f} s); /healthz p99 {out['healthz']['p99_ms']:.1f} ms, "
            f"max {out['healthz']['max_ms']:.0f} ms, {out['healthz']['failed']} failed; "
            f"binds {out['binds']['mean']:.0f}/s (peak {out['binds']['peak']:.0f}), "
            f"unbinds {out['unbinds']['mean']:.0f}/s (peak {out['unbinds']['peak']:.0f})"
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await sampler
        await prober.stop()
        for g in gens:
            with contextlib.suppress(Exception):
                await g.call("reconnect_mode", on=False)
    return out


async def scenario_storm(run: ScaleRun, p: ScaleParams) -> dict[str, Any]:
    n = p.storm_clients
    gens = await run.start_generators(p.generators)
    a = await run.start_node("sa")
    b = await run.start_node("sb")
    nodes = [a, b]
    users = [run.user(i) for i in range(n)]
    cookies = await cookies_for(a.url, run.ctx.secret_key, users)
    specs = [{"url": a.url, "user": u, "cookie": cookies[u]} for u in users]
    results: dict[str, Any] = {"clients": n, "reps": []}
    try:
        log(f"storm: connecting {n} clients to one node")
        started = time.monotonic()
        answer = await connect_all(gens, specs, p.connect_concurrency)
        bound = await run.wait_bound(run.node_queue(a), answer["connected"], limit=max(120.0, n / 20))
        elapsed = time.monotonic() - started
        results["connect"] = {"connected": answer["connected"], "bound": bound, "seconds": elapsed}
        results["connect_rate"] = bound / elapsed
        log(f"storm: {bound} of {n} bound in {elapsed:.1f} s ({bound / elapsed:.0f}/s)")
        if bound < n:
            results["note"] = f"only {bound} of {n} bound before the storm ({answer['errors'][:2]})"
            return results
        old, new = a, b
        for rep in range(p.storm_reps):
            if rep:
                new = await run.start_node(f"s{rep}")
                nodes.append(new)
            r = await one_storm(run, p, gens, old, new, n)
            results["reps"].append(r)
            if not r["complete"]:
                results["note"] = f"rep {rep + 1}: only {r['bound']} of {n} bound after {p.storm_timeout:.0f} s"
                break
            old = new
    finally:
        await close_all(gens)
        for node in nodes:
            await node.stop()
    summary: dict[str, Spread] = {}
    for r in results["reps"]:
        for key, value in (
            ("all_bound_s", r["all_bound_s"]),
            ("old_exit_s", r["old_exit_s"]),
            ("healthz_p99_ms", r["healthz"]["p99_ms"]),
            ("healthz_max_ms", r["healthz"]["max_ms"]),
            ("healthz_failed", r["healthz"]["failed"]),
            ("binds_mean", r["binds"]["mean"]),
            ("binds_peak", r["binds"]["peak"]),
            ("unbinds_mean", r["unbinds"]["mean"]),
            ("unbinds_peak", r["unbinds"]["peak"]),
        ):
            summary.setdefault(key, Spread()).add(float(value))
    results["summary"] = summary
    return results
