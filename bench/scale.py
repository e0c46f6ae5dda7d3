"""``python -m bench.scale``: how Warren's cost grows with connections (issue 16), printed as tables, with plots.

python -m bench.scale                          everything (~55 min on a quiet 2-core machine, see bench/README.md)
python -m bench.scale --quick                  500 / 1,000 / 2,000 sessions, a 1,500-client storm, one rep (~6 min)
python -m bench.scale --only curve --steps 1000,5000 --reps 1
python -m bench.scale --only storm --storm-clients 15000
python -m bench.scale --only mailboxes --mailboxes 10000,100000
python -m bench.scale --json out.json --markdown out.md --plots DIR
python -m bench.plots out.json --out DIR       the plots again from a kept JSON

Scenarios: ``curve`` (bench.scale_curve), ``storm`` (bench.scale_storm), ``mailboxes`` (bench.scale_broker). Every
server and client is a child process ended by its PID, all traffic stays on 127.0.0.0/8, and every name made on
the broker starts with the run's prefix and is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from . import report, scale_report
from .common import Management, log, raise_nofile
from .runner import Context
from .scale_common import ScaleParams, ScaleRun, cleanup_prefix

SCENARIOS = ("curve", "storm", "mailboxes")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition (a smoke test)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: curve, storm, mailboxes")
    parser.add_argument("--steps", help="sessions per step of the curve (default 1000,5000,10000,18000)")
    parser.add_argument("--reps", type=int, help="repetitions of each step and storm (default 3)")
    parser.add_argument("--generators", type=int, help="client processes, one source address each (default 4)")
    parser.add_argument("--connect-concurrency", type=int, help="handshakes in flight per generator (default 10)")
    parser.add_argument("--rate", type=int, help="msg/s offered between the active users (default 1000)")
    parser.add_argument("--active", type=int, help="active users during the latency run (default 200)")
    parser.add_argument("--paced-duration", type=float, help="seconds measured at the offered rate (default 10)")
    parser.add_argument("--idle-window", type=float, help="seconds of the idle CPU window (default 50)")
    parser.add_argument("--storm-clients", type=int, help="clients in the reconnect storm (default 15000)")
    parser.add_argument("--mailboxes", help="mailbox counts for the broker figures (default 10000,100000)")
    parser.add_argument("--json", type=Path, help="write every repetition to this file")
    parser.add_argument("--markdown", type=Path, help="write the tables to this file too")
    parser.add_argument("--plots", type=Path, help="write the PNG plots (memory, latency, CPU) into this directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = chosen
    return args


def params_from(args: argparse.Namespace) -> ScaleParams:
    p = ScaleParams.quick() if args.quick else ScaleParams()
    if args.steps:
        p.steps = _ints(args.steps)
    if args.reps:
        p.reps = p.storm_reps = args.reps
    if args.generators:
        p.generators = args.generators
    if args.connect_concurrency:
        p.connect_concurrency = args.connect_concurrency
    if args.rate:
        p.rate = args.rate
    if args.active is not None:
        p.active = args.active
    if args.paced_duration:
        p.paced_duration = args.paced_duration
    if args.idle_window:
        p.idle_window = args.idle_window
    if args.storm_clients:
        p.storm_clients = args.storm_clients
    if args.mailboxes:
        p.mailboxes = _ints(args.mailboxes)
    return p


def check_limits(p: ScaleParams) -> list[str]:
    """What this machine allows: the open-file limit caps sessions per process (node and generators)."""
    problems = []
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need_node = max([*p.steps, p.storm_clients]) + 200
    if hard != resource.RLIM_INFINITY and need_node > hard:
        problems.append(
            f"{need_node:,} open files needed by the node, but the hard limit is {hard:,} (ulimit -Hn): lower --steps "
            "/ --storm-clients, or raise the limit (LimitNOFILE= in systemd, nofile in limits.conf)"
        )
    per_gen = -(-max([*p.steps, p.storm_clients]) // p.generators) + 100
    if hard != resource.RLIM_INFINITY and per_gen > hard:
        problems.append(f"{per_gen:,} sockets per generator exceed {hard:,}: use more --generators")
    if p.generators > 250:
        problems.append("at most 250 generators (source addresses 127.0.0.2-127.0.0.251)")
    return problems


async def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    raise_nofile(1 << 20)
    p = params_from(args)
    problems = check_limits(p)
    if problems:
        raise SystemExit("bench.scale: " + "; ".join(problems))
    ctx = Context(quick=args.quick, keep=args.keep)
    scale = ScaleRun(ctx, prefix=f"bench{ctx.run_id}")
    started = time.monotonic()
    log(f"scale run {ctx.run_id}: {', '.join(args.scenarios)}; broker prefix {scale.prefix}; work dir {ctx.workdir}")
    results: dict[str, Any] = {}
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
            {
                "k": max([*p.steps, p.storm_clients] if "storm" in args.scenarios else p.steps),
                "p": max(1, p.active // 2),
            }
        )
        from . import scale_broker, scale_curve, scale_storm

        plan = {
            "curve": lambda: scale_curve.scenario_curve(scale, p),
            "storm": lambda: scale_storm.scenario_storm(scale, p),
            "mailboxes": lambda: scale_broker.scenario_mailboxes(scale, p),
        }
        for name in args.scenarios:
            try:
                results[name] = await plan[name]()
            except Exception as exc:
                log(f"{name}: failed: {type(exc).__name__}: {exc}")
                results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        await ctx.cleanup()
        # Its own client: ctx.cleanup closed the run's.
        sweep = Management()
        try:
            await cleanup_prefix(sweep, scale.prefix)
        finally:
            await sweep.close()
    elapsed = time.monotonic() - started
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "mode": f"{'quick' if args.quick else 'full'} run, {elapsed / 60:.1f} min, {p.reps} repetition(s), "
        f"{p.generators} client processes",
        "machine": report.machine_line(),
        "versions": report.versions_line(rabbit),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }
    table = scale_report.build(results, p, meta)
    return table, {"meta": meta, "params": p.to_json(), "results": report.to_jsonable(results)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table, results = asyncio.run(run(args))
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.plots:
        from .plots import write_plots

        for path in write_plots(results, args.plots):
            log(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
