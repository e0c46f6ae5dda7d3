"""``python -m bench``: run the scenarios, print one table (see ``bench/__init__.py``).

python -m bench                       everything (~15-18 min on 2 cores with the Node.js peer)
python -m bench --quick               small counts, one repetition: a smoke test (~1-2 min)
python -m bench --only chat,ceiling   a subset: chat, ceiling, nodes4, memory, mailbox, storm
python -m bench --systems warren      leave the peer out (chat, nodes4, memory)
python -m bench --profile             also py-spy both Warren nodes under saturation and summarise
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from . import report, scenarios, sionode
from .common import Management, log, raise_nofile
from .runner import Context

SCENARIOS = ("chat", "ceiling", "nodes4", "memory", "mailbox", "storm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts and one repetition (smoke test)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios to run")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    parser.add_argument(
        "--systems",
        default="warren,sio,sionode",
        help="warren, sio (the python-socketio peer) and/or sionode (Socket.IO 4 on Node.js with the Redis adapter)",
    )
    parser.add_argument("--reps", type=int, help="repetitions of each timed run (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds measured per saturation run")
    parser.add_argument("--paced-duration", type=float, help="seconds measured per open-loop rate")
    parser.add_argument("--rates", help="comma-separated offered rates, msg/s (default 500,1000,2000)")
    parser.add_argument("--clients", type=int, help="chat clients (default 200, half per node)")
    parser.add_argument("--window", type=int, help="messages in flight per sender at saturation (default 4)")
    parser.add_argument("--memory-sessions", type=int, help="idle sessions for the memory figure (default 5000)")
    parser.add_argument("--storm-clients", type=int, help="clients in the reconnect storm (default 2000)")
    parser.add_argument("--mailbox-messages", type=int, help="queued messages for the mailbox figure (default 10000)")
    parser.add_argument(
        "--connect-concurrency", type=int, help="handshakes in flight per client process when connecting (default 100)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of every process the bench starts (e.g. -10 on a shared machine; needs root)",
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="serve Warren's nodes on uvloop (pip install uvloop) to measure it"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy both Warren nodes during a saturation run")
    parser.add_argument("--json", type=Path, help="write all results (with every repetition) to this file")
    parser.add_argument("--markdown", type=Path, help="write the table to this file too")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, profiles)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = [s for s in [*chosen, *skipped] if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [s for s in chosen if s not in skipped]
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip() in ("warren", "sio", "sionode")]
    if "sionode" in args.system_list and (reason := sionode.unavailable()):
        log(f"the Node.js peer (sionode) is left out: {reason}")
        args.system_list.remove("sionode")
    return args


def params_from(args: argparse.Namespace) -> scenarios.Params:
    p = scenarios.Params.quick() if args.quick else scenarios.Params()
    if args.reps:
        p.reps = p.mailbox_reps = args.reps
        p.storm_restarts = args.reps
    if args.duration:
        p.sat_duration = args.duration
    if args.paced_duration:
        p.paced_duration = args.paced_duration
    if args.rates:
        p.rates = tuple(int(r) for r in args.rates.split(","))
    if args.clients:
        p.chat_clients = args.clients - args.clients % 4
    if args.window:
        p.window = args.window
    if args.memory_sessions:
        p.memory_sessions = args.memory_sessions
    if args.storm_clients:
        p.storm_clients = args.storm_clients
    if args.connect_concurrency:
        p.connect_concurrency = args.connect_concurrency
    if args.mailbox_messages:
        p.mailbox_messages = args.mailbox_messages
    return p


async def run(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    raise_nofile(65536)
    p = params_from(args)
    ctx = Context(quick=args.quick, keep=args.keep)
    started = time.monotonic()
    log(f"bench run {ctx.run_id}: {', '.join(args.scenarios)}; work directory {ctx.workdir}")
    rabbit = None
    try:
        mgmt = Management()
        try:
            rabbit = (await mgmt.get("overview")).get("rabbitmq_version")
        except Exception as exc:
            log(f"RabbitMQ management API not reachable ({exc}); broker figures will be missing")
        finally:
            await mgmt.close()
        ctx.prepare_users(
            {"c": p.chat_clients, "m": p.memory_sessions, "s": p.storm_clients, "x": 1, "r": p.mailbox_reps}
        )
        systems = args.system_list
        plan = []
        if "chat" in args.scenarios or "ceiling" in args.scenarios:
            chat_systems = systems if "chat" in args.scenarios else []
            plan.append(
                (
                    "chat",
                    lambda: scenarios.scenario_chat(ctx, p, chat_systems, "ceiling" in args.scenarios, args.profile),
                )
            )
        if "nodes4" in args.scenarios:
            plan.append(("nodes4", lambda: scenarios.scenario_nodes4(ctx, p, systems)))
        if "memory" in args.scenarios:
            servers = ["bare", *[s for s in ("warren", "sio", "sionode") if s in systems]]
            plan.append(("memory", lambda: scenarios.scenario_memory(ctx, p, servers)))
        if "mailbox" in args.scenarios and "warren" in systems:
            plan.append(("mailbox", lambda: scenarios.scenario_mailbox(ctx, p)))
        if "storm" in args.scenarios and "warren" in systems:
            plan.append(("storm", lambda: scenarios.scenario_storm(ctx, p)))
        for name, start in plan:
            try:
                await start()
            except Exception as exc:
                # One scenario failing (say, a server that stops answering) must not cost the others' figures.
                log(f"{name}: failed: {type(exc).__name__}: {exc}")
                ctx.results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        await ctx.cleanup()
    elapsed = time.monotonic() - started
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "mode": f"{'quick' if args.quick else 'full'} run, {elapsed / 60:.1f} min, {p.reps} repetition(s), "
        f"{p.chat_clients} chat clients, window {p.window}, {p.sat_duration:g} s per saturation run, "
        f"{p.paced_duration:g} s per rate"
        + (f", bench processes at nice {args.nice}" if args.nice else "")
        + (", Warren on uvloop" if args.uvloop else ""),
        "machine": report.machine_line(),
        "versions": report.versions_line(rabbit),
    }
    table = report.build_table(ctx.results, meta)
    if ctx.results.get("profile"):
        from .profile import render

        table += "\n\n" + render(ctx.results["profile"], ctx.results["profile"].get("node_cpu_us_per_msg"))
    results = {"meta": meta, "params": vars(p), "results": report.to_jsonable(ctx.results)}
    return table, results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.uvloop:
        from . import common

        common.UVLOOP_NODES = True
    if args.nice:
        # Read by bench.common when children start.
        os.environ["BENCH_NICE"] = str(args.nice)
        from . import common

        common.NICE = args.nice
    table, results = asyncio.run(run(args))
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
