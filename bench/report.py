"""The one table: Warren beside python-socketio and the broker-path ceiling, with ratios and the issue's targets."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from importlib import metadata
from typing import Any

from .common import ROOT, Spread


def _num(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(value: Any, digits: int = 0) -> str:
    """``median (min–max)`` for a spread of several repetitions, the bare number otherwise."""
    if value is None:
        return "–"
    if isinstance(value, Spread):
        if not value.values:
            return "–"
        if len(value.values) == 1:
            return _num(value.median, digits)
        return f"{_num(value.median, digits)} ({_num(value.low, digits)}–{_num(value.high, digits)})"
    return _num(float(value), digits)


def med(value: Any) -> float:
    if isinstance(value, Spread):
        return value.median
    if value is None:
        return float("nan")
    return float(value)


def ratio(a: Any, b: Any, digits: int = 2, suffix: str = "×") -> str:
    x, y = med(a), med(b)
    if math.isnan(x) or math.isnan(y) or y == 0:
        return "–"
    return f"{x / y:.{digits}f}{suffix}"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def _get(d: dict[str, Any], *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def machine_line() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def versions_line(rabbit: str | None) -> str:
    parts = [f"Python {platform.python_version()}"]
    for pkg in ("aiohttp", "sockjs", "aio-pika", "python-socketio", "python-engineio"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    from . import sionode

    node = sionode.node_version()
    if node and not sionode.unavailable():
        parts.append(f"Node.js {node}")
        for pkg in ("socket.io", "@socket.io/redis-adapter", "ioredis"):
            if version := sionode.package_version(pkg):
                parts.append(f"{pkg} {version}")
    if rabbit:
        parts.append(f"RabbitMQ {rabbit}")
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "app"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        parts.append(f"Warren {commit}{'+wip' if dirty else ''}")
    except OSError:
        pass
    return ", ".join(parts)


def build_table(results: dict[str, Any], meta: dict[str, Any]) -> str:
    chat = results.get("chat", {})
    w, s, c = chat.get("warren", {}), chat.get("sio", {}), chat.get("ceiling", {})
    nd = chat.get("sionode", {})
    rows: list[list[str]] = []

    def row(
        figure: str,
        wv: str,
        sv: str,
        cv: str,
        r1: str,
        r2: str,
        target: str,
        ok: bool | None,
        nv: str = "",
        rn: str = "",
    ) -> None:
        """``nv``, ``rn``: the Node.js peer's cell and Warren÷Node."""
        rows.append([figure, wv, sv, nv, cv, r1, rn, r2, target, verdict(ok)])

    # Throughput
    wt, st, ct, nt = (_get(x, "saturation", "throughput") for x in (w, s, c, nd))
    ok = None
    if wt is not None and (st is not None or ct is not None):
        ok = (st is None or med(wt) >= 2.5 * med(st)) and (ct is None or med(wt) >= 0.6 * med(ct))
    row(
        "Cross-node deliveries/s at saturation (2 nodes, 200 clients)",
        cell(wt),
        cell(st),
        cell(ct),
        ratio(wt, st),
        _pct(wt, ct),
        "≥ 2.5× peer, ≥ 60% of ceiling",
        ok,
        cell(nt),
        ratio(wt, nt),
    )
    wl, sl = _get(w, "saturation", "sat_p99"), _get(s, "saturation", "sat_p99")
    nl = _get(nd, "saturation", "sat_p99")
    row(
        "  p99 latency at saturation, ms",
        cell(wl, 1),
        cell(sl, 1),
        cell(_get(c, "saturation", "sat_p99"), 1),
        ratio(wl, sl),
        "",
        "",
        None,
        cell(nl, 1),
        ratio(wl, nl),
    )

    # Latency at fixed offered rates
    rates = sorted({int(r) for x in (w, s, c, nd) for r in (x.get("paced") or {})})
    for rate in rates:
        for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            wv = _get(w, "paced", rate, key) or _get(w, "paced", str(rate), key)
            sv = _get(s, "paced", rate, key) or _get(s, "paced", str(rate), key)
            cv = _get(c, "paced", rate, key) or _get(c, "paced", str(rate), key)
            nv = _get(nd, "paced", rate, key) or _get(nd, "paced", str(rate), key)
            target, ok = "", None
            if key == "p99":
                target = "below the peer" + ("; ≤ 5 ms" if rate == 1000 else "")
                if wv is not None:
                    ok = (sv is None or med(wv) < med(sv)) and (rate != 1000 or med(wv) <= 5.0)
            row(
                f"Latency {label} at {rate:,} msg/s offered, ms",
                cell(wv, 2),
                cell(sv, 2),
                cell(cv, 2),
                ratio(wv, sv),
                "",
                target,
                ok,
                cell(nv, 2),
                ratio(wv, nv),
            )
        wlost = _get(w, "paced", rate, "lost")
        slost = _get(s, "paced", rate, "lost")
        nlost = _get(nd, "paced", rate, "lost")
        if any(x and med(x) > 0 for x in (wlost, slost, nlost)):
            row(f"  messages lost at {rate:,} msg/s", cell(wlost), cell(slost), "", "", "", "", None, cell(nlost))

    # CPU
    wc, sc, cc, nc = (_get(x, "saturation", "cpu_per_10k") for x in (w, s, c, nd))
    ok = None if wc is None or (sc is None and nc is None) else True
    if sc is not None and wc is not None:
        ok = med(wc) <= 0.5 * med(sc)
    if nc is not None and wc is not None:
        ok = bool(ok) and med(wc) <= 1.5 * med(nc)
    row(
        "Server CPU s per 10,000 messages, both nodes (saturation)",
        cell(wc, 2),
        cell(sc, 2),
        cell(cc, 2),
        ratio(wc, sc),
        "",
        "≤ 0.5× python-socketio; ≤ 1.5× Node",
        ok,
        cell(nc, 2),
        ratio(wc, nc),
    )
    if 1000 in rates:
        cells = []
        for x in (w, s, c, nd):
            value = _get(x, "paced", 1000, "cpu_per_10k")
            late = _get(x, "paced", 1000, "late")
            # CPU per message at a fixed rate means something only if the system kept up with it.
            cells.append("fell behind" if late is not None and med(late) > 0 else cell(value, 2))
        wc1, sc1 = _get(w, "paced", 1000, "cpu_per_10k"), _get(s, "paced", 1000, "cpu_per_10k")
        keep_up = "fell behind" not in cells[:2]
        nc1 = _get(nd, "paced", 1000, "cpu_per_10k")
        row(
            "  same at 1,000 msg/s offered",
            *cells[:3],
            ratio(wc1, sc1) if keep_up else "–",
            "",
            "",
            None,
            cells[3],
            ratio(wc1, nc1) if keep_up and cells[3] != "fell behind" else "–",
        )
    wb, sb, cb, nb = (_get(x, "saturation", "broker_cpu_per_10k") for x in (w, s, c, nd))
    row(
        "  RabbitMQ CPU s per 10,000 messages (saturation; Node column: Redis)",
        cell(wb, 2),
        cell(sb, 2),
        cell(cb, 2),
        ratio(wb, sb),
        "",
        "",
        None,
        cell(nb, 2),
    )

    # Broker deliveries
    n4 = results.get("nodes4", {})
    wd2, sd2, nd2 = w.get("deliveries_per_msg_2"), s.get("deliveries_per_msg_2"), nd.get("deliveries_per_msg_2")
    wd4, sd4 = _get(n4, "warren", "deliveries_per_msg_4"), _get(n4, "sio", "deliveries_per_msg_4")
    nd4 = _get(n4, "sionode", "deliveries_per_msg_4")
    row(
        "Broker deliveries per message, 2 nodes",
        cell(wd2, 2),
        cell(sd2, 2),
        "1.00",
        ratio(wd2, sd2),
        "",
        "1.00 per receiving node",
        None if wd2 is None else abs(wd2 - 1.0) < 0.02,
        cell(nd2, 2),
        ratio(wd2, nd2),
    )
    row(
        "Broker deliveries per message, 4 nodes",
        cell(wd4, 2),
        cell(sd4, 2),
        "1.00",
        ratio(wd4, sd4),
        "",
        "1.00 per receiving node",
        None if wd4 is None else abs(wd4 - 1.0) < 0.02,
        cell(nd4, 2),
        ratio(wd4, nd4),
    )
    wc4, sc4, nc4 = (_get(n4, k, "cpu_per_10k_4") for k in ("warren", "sio", "sionode"))
    if wc4 is not None:
        rate4 = _get(n4, "warren", "rate_4") or 0
        row(
            f"Server CPU s per 10,000 messages, 4 nodes ({rate4:,} msg/s offered)",
            cell(wc4, 2),
            cell(sc4, 2),
            "",
            ratio(wc4, sc4),
            "",
            "below Node",
            None if nc4 is None else med(wc4) < med(nc4),
            cell(nc4, 2),
            ratio(wc4, nc4),
        )

    # Memory
    mem = results.get("memory", {})
    wm, sm, bm, nm = (_get(mem, k, "kib_per_session") for k in ("warren", "sio", "bare", "sionode"))
    ok = None
    if wm is not None and bm is not None:
        ok = med(wm) <= 1.5 * med(bm) and (sm is None or med(wm) < med(sm))
    n_mem = _get(mem, "warren", "sessions") or _get(mem, "bare", "sessions") or 0
    row(
        f"Memory per idle session, KiB ({n_mem:,} sessions, one node; baseline = bare aiohttp WS)",
        cell(wm, 1),
        cell(sm, 1),
        cell(bm, 1),
        ratio(wm, sm),
        ratio(wm, bm),
        "≤ 1.5× bare, below peer",
        ok,
        cell(nm, 1),
        ratio(wm, nm),
    )
    wr, sr, br, nr = (_get(mem, k, "connect_rate") for k in ("warren", "sio", "bare", "sionode"))
    row(
        "  sessions/s while opening them (info)",
        cell(wr),
        cell(sr),
        cell(br),
        ratio(wr, sr),
        ratio(wr, br),
        "",
        None,
        cell(nr),
        ratio(wr, nr),
    )

    # Mailbox, connect, storm
    mbx = results.get("mailbox", {})
    if mbx:
        n = mbx.get("messages", 0)
        secs = mbx.get("seconds")
        full = n >= 10_000
        ok = None if secs is None or not full else med(secs) < 2.0 and not mbx.get("missing")
        row(
            f"Mailbox: {n:,} queued messages to a user who connects, s",
            cell(secs, 2),
            "n/a",
            "",
            "",
            "",
            "10,000 in < 2 s",
            ok,
        )
        if mbx.get("missing") or mbx.get("out_of_order"):
            row(
                "  missing / out of order",
                cell(mbx.get("missing")),
                "",
                "",
                "",
                "",
                "none",
                not mbx.get("missing") and not mbx.get("out_of_order"),
            )
        row(
            "  filling it (one sender, RECEIPT per SEND, 100 in flight), s",
            cell(mbx.get("fill_seconds"), 2),
            "",
            "",
            "",
            "",
            "",
            None,
        )
    storm = results.get("storm", {})
    if storm:
        n = storm.get("clients", 0)
        row(
            "Connect rate, sessions/s one node (cookie, SockJS, CONNECT, SUBSCRIBE, bind)",
            cell(storm.get("connect_rate")),
            "",
            "",
            "",
            "",
            "",
            None,
        )
        fr = storm.get("from_ready")
        ok = None if fr is None or n < 2000 else med(fr) < 10.0
        row(
            f"Reconnect storm: {n:,} clients bound again after their node restarts, s (from node ready)",
            cell(fr, 2),
            "",
            "",
            "",
            "",
            "2,000 in < 10 s",
            ok,
        )
        row(
            "  same, from SIGTERM (drain + start + reconnect), s",
            cell(storm.get("from_sigterm"), 2),
            "",
            "",
            "",
            "",
            "",
            None,
        )
        burst = storm.get("burst")
        if burst:
            row(
                f"  burst: {burst['clients']:,} connects with {burst['in_flight']} handshakes in flight, bound",
                f"{burst['bound']:,} of {burst['clients']:,}",
                "",
                "",
                "",
                "",
                "all",
                burst["bound"] >= burst["clients"],
            )
    if "login_rate" in chat:
        row("Sign-ins/s (POST /login, scrypt; info)", cell(chat["login_rate"]), "", "", "", "", "", None)

    header = [
        "Figure",
        "Warren",
        "python-socketio",
        "Socket.IO on Node",
        "Ceiling / baseline",
        "Warren÷python-socketio",
        "Warren÷Node",
        "Warren÷ceiling",
        "Target",
        "Met",
    ]
    lines = [
        f"Warren benchmark — {meta.get('date', time.strftime('%Y-%m-%d %H:%M'))}, {meta.get('mode', '')}",
        f"Machine: {meta.get('machine', machine_line())}",
        f"Software: {meta.get('versions', '')}",
        "Cells: median of repetitions (min–max). Ceiling = raw aio-pika publish with confirms → topic exchange → "
        "queue → consume (publisher and consumer processes); CPU in its column is publisher + consumer.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    for name, error in (results.get("errors") or {}).items():
        notes.append(f"- {name} failed: {error}")
    if _get(mem, "warren", "bound") is not None and _get(mem, "warren", "bound") < _get(mem, "warren", "sessions"):
        notes.append(
            f"- memory: only {mem['warren']['bound']:,} of {mem['warren']['sessions']:,} Warren sessions were bound on "
            "the broker"
        )
    for key in ("connect_rate_note", "storm_note"):
        if storm.get(key):
            notes.append(f"- storm: {storm[key]}")
    if storm.get("raw_binds_per_s"):
        notes.append(
            f"- raw queue.bind RPCs on one channel, one at a time (aio-pika, same broker): "
            f"{storm['raw_binds_per_s']:,.0f}/s"
        )
    other = [med(_get(x, "saturation", "other_cores")) for x in (w, s, c, nd) if _get(x, "saturation", "other_cores")]
    if other:
        notes.append(
            f"- other work on the machine during the saturation runs: {max(other):.2f} cores at most (median of "
            "repetitions); the figures share the CPU with it"
        )
    for rate in rates:
        other = [
            med(_get(x, "paced", rate, "other_cores")) for x in (w, s, c, nd) if _get(x, "paced", rate, "other_cores")
        ]
        if other and max(other) > 0.2:
            notes.append(
                f"- other work during the {rate:,} msg/s runs: up to {max(other):.2f} cores (median of repetitions)"
            )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _pct(a: Any, b: Any) -> str:
    x, y = med(a), med(b)
    if math.isnan(x) or math.isnan(y) or y == 0:
        return "–"
    return f"{100 * x / y:.0f}%"


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Spread):
        return value.to_json()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
