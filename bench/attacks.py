"""``python -m bench.attacks --checkout DIR``: the figures issue 11's "Done when" asks for, against any checkout.

    python -m bench.attacks --checkout DIR                     all six (about 7 minutes on 2 cores)
    python -m bench.attacks --checkout DIR --only parser,flood a subset of: anon, parser, flood, escaped, stalled,
                                                               lockout
    python -m bench.attacks --checkout DIR --json out.json --keep   every row as JSON; keep the node logs
    python -m bench.attacks --checkout DIR --nice -10          (root) shield the nodes from a shared machine's load

The Warren under attack is DIR's ``app`` (``cwd`` and ``PYTHONPATH`` = DIR), run by ``--python`` (default: this
interpreter, e.g. ``/work/main/.venv/bin/python``); the harness itself is this checkout's ``bench``. So one harness
prints BEFORE (an old checkout) and AFTER (a new one) in the same format. Each figure gets a fresh node on the
memory backplane (4b: RabbitMQ at 127.0.0.1:5672, in a vhost of its own that is deleted afterwards), with
Warren's default limits, users made with ``python -m app users add``:

1. ``anon``: 3,000 SockJS WebSocket sessions without a cookie; after 30 s: how many are open, node RSS, /healthz
   (new connection). Twice: with the node's soft fd limit at the hard limit, and at 1,024 (a common default;
   a fixed node raises its own).
2. ``parser``: a 128 KiB STOMP header that never ends, then one WebSocket frame of 10,000 empty SockJS messages
   (or a 25 KB ``xhr_send`` body of them), signed in and not; /healthz probed every 20 ms from a child process.
3. ``flood``: 16 clients (16 users, 16 source addresses, one child process) POST /login with the right password
   for 10 s; /healthz p99, and chat messages between two other signed-in users every 250 ms.
4. ``escaped``: 1,000 messages of control characters (6 bytes each in JSON; MAX_MESSAGE_BYTES of them, or the
   most a message may hold) from 8 senders to one offline user: node RSS, the owner's pull and the peak RSS; on
   RabbitMQ also the mailbox's ``message_bytes``.
5. ``stalled``: 300 POST /login with Content-Length 1 MiB, all but 1 KiB sent, then silence for 20 s; RSS then
   and 5 s after they close.
6. ``lockout``: 5 wrong passwords for alice from an attacker, then alice from her browser (cookie jar) that
   signed in before; 30 failures from one address, then carol from that address.

Everything is bounded in count and time, goes to 127.0.0.0/8 only, and every process it starts is ended by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import attack_scenarios as scenarios
from .attack_target import Target, python_default, set_priority
from .common import log, raise_nofile

NAMES = ("anon", "parser", "flood", "escaped", "stalled", "lockout")
#: A scenario that has not finished in this long is abandoned (its node is still ended by PID).
SCENARIO_TIMEOUT = 420.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkout", type=Path, required=True, help="the Warren checkout to attack")
    parser.add_argument("--python", default=python_default(), help="interpreter for its nodes and `users add`")
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated subset of " + ", ".join(NAMES))
    parser.add_argument("--sessions", type=int, default=3000, help="anonymous sessions for figure 1")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds figure 1 holds them")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the harness and everything it starts (e.g. -10 as root on a shared machine: the figures "
        "are then the node's, not the neighbours')",
    )
    parser.add_argument("--json", type=Path, help="write the rows to this file as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (node logs)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(NAMES)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(NAMES)}")
    if not (args.checkout / "app" / "__main__.py").exists():
        parser.error(f"{args.checkout} is not a Warren checkout (no app/__main__.py)")
    return args


def print_table(rows: list[scenarios.Row], header: str) -> None:
    print(header)
    print()
    print("| Figure | Measurement | Result |")
    print("| --- | --- | --- |")
    last = ""
    for figure, what, result in rows:
        print(f"| {figure if figure != last else ''} | {what} | {result.replace('|', '/')} |")
        last = figure
    print(flush=True)


async def run(args: argparse.Namespace) -> list[scenarios.Row]:
    workdir = Path(tempfile.mkdtemp(prefix="warren-attacks-"))
    target = Target(args.checkout.resolve(), args.python, workdir, nice=args.nice)
    log(f"attacking {target.checkout} with {target.python}; logs in {workdir}")
    names = [name for group in ("chat", "flood", "mail", "lockout") for name in scenarios.USERS[group]]
    started = time.monotonic()
    target.add_users(names)
    log(f"{len(names)} users added in {time.monotonic() - started:.0f} s")
    jobs: dict[str, list[Callable[[], Awaitable[list[scenarios.Row]]]]] = {
        "anon": [
            lambda: scenarios.anonymous_sessions(target, count=args.sessions, hold=args.hold, nofile=None),
            lambda: scenarios.anonymous_sessions(target, count=args.sessions, hold=args.hold, nofile=1024),
        ],
        "parser": [lambda: scenarios.parser_attack(target)],
        "flood": [lambda: scenarios.sign_in_flood(target)],
        "escaped": [lambda: scenarios.escaped_mail(target)],
        "stalled": [lambda: scenarios.stalled_bodies(target)],
        "lockout": [lambda: scenarios.lockout(target)],
    }
    rows: list[scenarios.Row] = []
    try:
        for name in args.only:
            for job in jobs[name]:
                began = time.monotonic()
                log(f"{name}: starting")
                try:
                    rows += await asyncio.wait_for(job(), SCENARIO_TIMEOUT)
                except Exception as exc:  # one figure failing must not lose the others
                    rows.append((name, "failed", f"{type(exc).__name__}: {str(exc)[:300]}"))
                    log(f"{name}: failed: {exc!r}")
                log(f"{name}: done in {time.monotonic() - began:.0f} s (load {_loadavg()})")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile(1 << 20)
    if args.nice:
        # Inherited by the prober and the helpers; each node sets its own.
        set_priority(args.nice)
    started = time.monotonic()
    load_before = _loadavg()
    rows = asyncio.run(run(args))
    rows.append(("machine", "load average (1, 5, 15 min) at start → end", f"{load_before} → {_loadavg()}"))
    commit = _commit(args.checkout)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = f"Warren attack figures: {args.checkout} ({commit}), {when}, nice {args.nice}"
    print_table(rows, header + f", {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"checkout": str(args.checkout), "commit": commit, "rows": rows}, indent=1))
    return 0


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _commit(checkout: Path) -> str:
    import subprocess

    done = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()[:80] or "not a git checkout"


if __name__ == "__main__":
    sys.exit(main())
