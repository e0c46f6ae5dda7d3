"""A/B in one run: this checkout's Warren against another checkout's (``python -m bench.ab --base DIR``).

For a change to the server whose effect is smaller than the machine's drift between two bench runs. Both sides'
nodes run at once, on the same broker, with the same client code (this checkout's ``bench.loadgen``); each side's
nodes import the ``app`` of its own directory. Figures, per side:

* **Idle sessions**: one node, ``--sessions`` authenticated WebSocket sessions (cookie, SockJS, CONNECT,
  SUBSCRIBE, bound on the broker). Per session: RSS, and the GC-tracked objects by type (``gc.get_objects()``
  before and after, read through ``GET /_bench/gc``, which only these nodes have); with the sessions open, the
  CPU time of a full collection (``gc.collect()``, median of 5): the pause every session's objects add to.
* **CPU per pushed message** (``push``): the WebSocket write path alone. A server of the side's ``app.transport``
  (no STOMP, no broker) pushes ``--push-messages`` messages of 200 bytes to each of ``--push-sessions`` SockJS
  WebSocket sessions, one ``Session.send`` per session per loop tick (as deliveries arrive); its utime + stime
  divided by the messages, the two sides alternating.
* **CPU per delivered message**: 2 nodes, ``--clients`` clients sending to a user on the other node (the chat
  bench's set-up), closed loop at saturation and open loop at ``--rate``; utime + stime of both nodes over the
  measured window divided by the messages delivered in it. The runs of the two sides alternate (rotating who goes
  first), ``--reps`` times, so a slow minute of the machine hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp

from .common import ROOT, Child, cookies_for, cpu_seconds, free_port, log, raise_nofile, rss_bytes, warren_node
from .runner import Context, loadgen
from .scenarios import Params, System, _wait_bound, paced, saturate, stop_system

# -- the node ---------------------------------------------------------------------------------------------------


#: The node, run with ``python -c`` in the side's directory (so ``import app`` is that side's): Warren as
#: ``python -m app`` serves it, plus ``GET /_bench/gc``.
NODE_CODE = """
import gc, runpy, statistics, sys, time
from collections import Counter
from aiohttp import web
import app.server

async def gc_report(_request):
    gc.collect()
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    pauses = []
    for _ in range(5):
        # CPU time, not wall time: on a shared machine the process may be descheduled in the middle.
        started = time.process_time()
        gc.collect()
        pauses.append((time.process_time() - started) * 1000)
    body = {"counts": dict(counts), "total": sum(counts.values()), "collect_ms": statistics.median(pauses)}
    return web.json_response(body)

create_app = app.server.create_app

def create_app_with_report(*args, **kwargs):
    application = create_app(*args, **kwargs)
    application.router.add_get("/_bench/gc", gc_report)
    return application

app.server.create_app = create_app_with_report
sys.argv = ["app"]
runpy.run_module("app", run_name="__main__", alter_sys=True)
"""


#: The ``push`` server: ``app.transport`` with a service that sends N messages when a client asks with "N".
PUSH_CODE = """
import asyncio, os
import uvloop
from aiohttp import web
from app.transport.endpoint import EndpointOptions, OriginPolicy, SockJSEndpoint
try:  # the module layout since the SockJS iframe runs the page's own client release
    from app.transport.iframe import SockJSClients
    from app.transport.manager import SessionManager
    CLIENT_OPTIONS = {"sockjs_clients": SockJSClients()}
except ImportError:  # a checkout from before (bench.ab --base)
    from app.transport.session import SessionManager
    CLIENT_OPTIONS = {"sockjs_client_url": "/vendor/sockjs-client/dist/sockjs.min.js"}

BODY = "x" * 200

class Pusher(SessionManager):
    async def on_message(self, session, message):
        count = int(message)
        if count < 0:
            # The same loop without the messages (what the figure subtracts), then one to say it is done.
            for _ in range(-count):
                await asyncio.sleep(0)
            session.send(BODY)
            return
        for _ in range(count):
            if not session.send(BODY):
                return
            await asyncio.sleep(0)

async def healthz(_request):
    return web.Response(text="ok")

app = web.Application()
manager = Pusher(heartbeat_delay=25.0, disconnect_delay=5.0)
options = EndpointOptions(origins=OriginPolicy(any_origin=True), **CLIENT_OPTIONS)
SockJSEndpoint(manager, options).add_routes(app.router, "/push")
app.router.add_get("/healthz", healthz)
app.on_cleanup.append(manager.stop)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)
"""


def _node(ctx: Context, side: str, root: Path, label: str) -> Child:
    assert ctx.users_file is not None
    child = warren_node(f"bench-{ctx.run_id}-{side}-{label}", ctx.workdir, ctx.users_file, ctx.secret_key)
    child.argv = [sys.executable, "-c", NODE_CODE]
    child.cwd = root
    return ctx.track_child(child)


async def _gc_report(node: Child) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/_bench/gc") as response:
        report: dict[str, Any] = await response.json()
        return report


# -- idle sessions ------------------------------------------------------------------------------------------


async def idle(ctx: Context, side: str, root: Path, n: int) -> dict[str, Any]:
    node = _node(ctx, side, root, "idle")
    await node.start("/readyz")
    users = [ctx.user("m", i) for i in range(n)]
    cookies = await cookies_for(node.url, ctx.secret_key, users)
    workers = [loadgen(ctx, f"idle-{side}-{w}") for w in range(2)]
    system = System("warren", nodes=[node], workers=workers)
    try:
        for w in workers:
            await w.start()
        specs = [{"url": node.url, "user": u, "cookie": cookies[u]} for u in users]
        warm = specs[: min(100, n)]
        await workers[0].call("connect", kind="warren", clients=warm, concurrency=50)
        await workers[0].call("close")
        await asyncio.sleep(1.5)
        before = await _gc_report(node)
        rss_before = rss_bytes(node.pid)
        half = n // 2
        answers = await asyncio.gather(
            workers[0].call("connect", kind="warren", clients=specs[:half], concurrency=10),
            workers[1].call("connect", kind="warren", clients=specs[half:], concurrency=10),
        )
        connected = sum(a["connected"] for a in answers)
        bound = await _wait_bound(ctx, f"warren.node.{node.env['NODE_ID']}", n)
        await asyncio.sleep(2.0)
        after = await _gc_report(node)
        rss_after = rss_bytes(node.pid)
    finally:
        await stop_system(system)
    per_type = {
        name: (after["counts"].get(name, 0) - before["counts"].get(name, 0)) / connected
        for name in set(after["counts"]) | set(before["counts"])
    }
    result = {
        "sessions": connected,
        "bound": bound,
        "kib_per_session": (rss_after - rss_before) / connected / 1024,
        "objects_per_session": (after["total"] - before["total"]) / connected,
        "by_type": dict(sorted(per_type.items(), key=lambda kv: -kv[1])),
        "full_collection_ms": after["collect_ms"],
        "full_collection_ms_before": before["collect_ms"],
        "gc_objects": after["total"],
        "gc_objects_before": before["total"],
    }
    log(
        f"idle {side}: {result['kib_per_session']:.1f} KiB, {result['objects_per_session']:.1f} objects per session, "
        f"full collection {result['full_collection_ms']:.1f} ms with {connected} sessions ({bound} bound)"
    )
    return result


# -- CPU per pushed message -----------------------------------------------------------------------------------


async def _push_round(url: str, sessions: int, messages: int, pid: int, *, idle: bool = False) -> float:
    """Server CPU seconds while ``sessions`` WebSocket sessions each receive ``messages`` pushed messages (``idle``:
    the server goes through the same loop ticks without sending, then sends one)."""

    async def one(http: aiohttp.ClientSession, index: int) -> None:
        async with http.ws_connect(f"{url}/push/000/s{index}/websocket", max_msg_size=0) as ws:
            opening = await ws.receive_str(timeout=30)
            assert opening == "o", opening
            await ready.wait()
            await ws.send_str(json.dumps([str(-messages if idle else messages)]))
            received = 0
            while received < (1 if idle else messages):
                frame = await ws.receive_str(timeout=60)
                if frame.startswith("a"):
                    received += len(json.loads(frame[1:]))
            opened.append(index)

    ready = asyncio.Event()
    opened: list[int] = []
    async with aiohttp.ClientSession() as http:
        clients = [asyncio.create_task(one(http, i)) for i in range(sessions)]
        await asyncio.sleep(1.0)
        before = cpu_seconds(pid)
        ready.set()
        await asyncio.gather(*clients)
        used = cpu_seconds(pid) - before
    assert len(opened) == sessions
    return used


async def push(ctx: Context, sides: dict[str, Path], sessions: int, messages: int, reps: int) -> dict[str, Any]:
    servers: dict[str, Child] = {}
    figures: dict[str, list[float]] = {side: [] for side in sides}
    net: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for side, root in sides.items():
            port = free_port()
            child = Child(
                f"push:{side}",
                [sys.executable, "-c", PUSH_CODE],
                dict(os.environ, PORT=str(port), PYTHONUNBUFFERED="1"),
                ctx.workdir / f"push-{side}.log",
                port,
            )
            child.cwd = root
            servers[side] = ctx.track_child(child)
            await child.start("/healthz")
        names = list(sides)
        for rep in range(reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for side in order:
                server = servers[side]
                url = server.url.replace("http", "ws", 1)
                used = await _push_round(url, sessions, messages, server.pid)
                idle = await _push_round(url, sessions, messages, server.pid, idle=True)
                figures[side].append(used / (sessions * messages) * 1e6)
                net[side].append((used - idle) / (sessions * messages) * 1e6)
                log(
                    f"push {side} rep {rep + 1}: {figures[side][-1]:.1f} µs of server CPU per pushed message, "
                    f"{net[side][-1]:.1f} µs more than the same loop without sending"
                )
    finally:
        for server in servers.values():
            await server.stop()
    return {
        side: {"us_per_msg": _spread(values), "us_per_msg_over_idle_loop": _spread(net[side])}
        for side, values in figures.items()
    }


# -- CPU per message ------------------------------------------------------------------------------------------


async def chat_system(ctx: Context, side: str, root: Path, clients: int) -> System:
    nodes = [_node(ctx, side, root, f"n{i}") for i in range(2)]
    await asyncio.gather(*(n.start("/readyz") for n in nodes))
    users = [ctx.user("c", i) for i in range(clients)]
    cookies = await cookies_for(nodes[0].url, ctx.secret_key, users)
    system = System(side, nodes=nodes)
    per_node = clients // 2
    specs = [
        {
            "url": nodes[min(i // per_node, 1)].url,
            "user": users[i],
            "cookie": cookies[users[i]],
            "slot": i,
            "target": users[(i + per_node) % clients],
        }
        for i in range(clients)
    ]
    for index in range(2):
        worker = loadgen(ctx, f"{side}-clients{index}")
        await worker.start()
        system.workers.append(worker)
    answers = await asyncio.gather(
        system.workers[0].call("connect", kind="warren", clients=specs[:per_node], concurrency=10),
        system.workers[1].call("connect", kind="warren", clients=specs[per_node:], concurrency=10),
    )
    if any(a["failed"] for a in answers):
        raise RuntimeError(f"{side}: clients failed to connect: {answers[0]['errors'] or answers[1]['errors']}")
    segment = ctx.shm(clients + 1)
    for w in system.workers:
        await w.call("attach_shm", name=segment.name)
    return system


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def cpu(ctx: Context, sides: dict[str, Path], p: Params, rate: int) -> dict[str, Any]:
    systems: dict[str, System] = {}
    figures: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    try:
        for side, root in sides.items():
            log(f"cpu: starting {side} (2 nodes, {p.chat_clients} clients)")
            systems[side] = await chat_system(ctx, side, root, p.chat_clients)
        names = list(sides)
        for rep in range(p.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for side in order:
                sat = await saturate(systems[side], p, "")
                at_rate = await paced(systems[side], p, rate)
                mine = figures[side]
                mine.setdefault("saturation_us_per_msg", []).append(sat["cpu_per_10k"] * 100)
                mine.setdefault("saturation_msg_per_s", []).append(sat["throughput"])
                mine.setdefault(f"at_{rate}_us_per_msg", []).append(at_rate["cpu_per_10k"] * 100)
                mine.setdefault(f"at_{rate}_p99_ms", []).append(at_rate["p99"])
                mine.setdefault("other_cores", []).append(sat["other_cores"])
                log(
                    f"cpu {side} rep {rep + 1}: saturation {sat['throughput']:.0f} msg/s "
                    f"{sat['cpu_per_10k'] * 100:.0f} µs/msg; at {rate}/s {at_rate['cpu_per_10k'] * 100:.0f} µs/msg "
                    f"p99 {at_rate['p99']:.1f} ms; other work {sat['other_cores']:.2f} cores"
                )
    finally:
        for system in systems.values():
            await stop_system(system)
    return {side: {key: _spread(values) for key, values in f.items()} for side, f in figures.items()}


async def run(args: argparse.Namespace, sides: dict[str, Path]) -> dict[str, Any]:
    raise_nofile(65536)
    p = Params(reps=args.reps, chat_clients=args.clients, sat_duration=args.duration, paced_duration=args.duration)
    ctx = Context(keep=args.keep)
    results: dict[str, Any] = {"sides": {k: str(v) for k, v in sides.items()}}
    try:
        ctx.prepare_users({"c": p.chat_clients, "m": args.sessions})
        if "idle" in args.only:
            results["idle"] = {side: await idle(ctx, side, root, args.sessions) for side, root in sides.items()}
        if "push" in args.only:
            results["push"] = await push(ctx, sides, args.push_sessions, args.push_messages, args.reps)
        if "cpu" in args.only:
            results["cpu"] = await cpu(ctx, sides, p, args.rate)
    finally:
        await ctx.cleanup()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (its app/ is side 'base')")
    parser.add_argument("--only", default="idle,push,cpu", help="idle, push and/or cpu")
    parser.add_argument("--push-sessions", type=int, default=100)
    parser.add_argument("--push-messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(run(args, {"base": args.base.resolve(), "new": ROOT}))
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    for side, idle_figures in results.get("idle", {}).items():
        top = list(idle_figures["by_type"].items())[:15]
        print(
            f"{side}: {idle_figures['kib_per_session']:.1f} KiB/session, "
            f"{idle_figures['objects_per_session']:.1f} gc objects/session, "
            f"full gc {idle_figures['full_collection_ms']:.1f} ms at {idle_figures['sessions']} sessions"
        )
        print("   " + ", ".join(f"{name} {count:.2f}" for name, count in top))
    for side, push_figures in results.get("push", {}).items():
        print(side, "push", json.dumps(push_figures))
    for side, cpu_figures in results.get("cpu", {}).items():
        print(side, json.dumps(cpu_figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
