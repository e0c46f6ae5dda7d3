"""The six measurements of issue 11's "Done when", each against a fresh node of the checkout.

Each scenario returns table rows ``(figure, measurement, result)``. An attack the server refuses is a result, not
an error: refused handshakes, sessions closed by the server, 4xx answers are counted and reported as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import time
from collections import Counter
from typing import Any

import aiohttp

from .attack_clients import HeldWebSocket, StalledBody, StompClient, http_client, session_path
from .attack_target import (
    PASSWORD,
    Node,
    Prober,
    RssSampler,
    Target,
    Vhost,
    broker_reachable,
    fmt_s,
    latency_summary,
    mib,
    running,
)
from .common import cpu_seconds, log

Row = tuple[str, str, str]
HARNESS_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Loopback source addresses (all of 127.0.0.0/8 is on ``lo``): more ports for many connections, and distinct
#: "clients" for per-address limits.
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 34)]
FLOOD_ADDRESSES = [f"127.0.1.{i}" for i in range(1, 17)]

USERS = {
    "chat": ["dave", "erin"],
    "flood": [f"flood{i:02d}" for i in range(1, 17)],
    "mail": ["inbox", "probe-inbox", "prober", *[f"sender{i}" for i in range(1, 9)]],
    "lockout": ["alice", "carol", "parser"],
}


async def sign_in(http: aiohttp.ClientSession, base: str, user: str, password: str = PASSWORD) -> int:
    async with http.post(
        f"{base}/login", json={"username": user, "password": password}, headers={"Origin": base}
    ) as resp:
        await resp.read()
        return resp.status


async def healthz_once(base: str, timeout: float = 5.0) -> str:
    """One ``/healthz`` on a new connection: what a load balancer's health check would see."""
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(f"{base}/healthz") as resp:
                await resp.read()
                return f"{resp.status} in {fmt_s(time.monotonic() - started)}"
    except (TimeoutError, aiohttp.ClientError, OSError):
        return f"no answer in {timeout:.0f} s"


def ended_summary(held: list[Any], now: float) -> str:
    """How many of ``held`` (``Held``) the server ended, how soon after opening, and how."""
    ended = [h for h in held if h.closed_at is not None]
    if not ended:
        return "none"
    after = statistics.median(h.closed_at - h.opened_at for h in ended)
    how = Counter(h.how for h in ended).most_common(1)[0][0]
    return f"{len(ended)} closed by server after {after:.1f} s (median; {how})"


# -- 1. anonymous SockJS WebSocket sessions ---------------------------------------------------------------------


async def anonymous_sessions(target: Target, *, count: int, hold: float, nofile: int | None) -> list[Row]:
    label = f"1. {count:,} anonymous WebSocket sessions, node soft fd limit {nofile or 'hard'}"
    node = target.node("anon", nofile=nofile)
    async with running(node):
        limit = node.soft_nofile()
        rss0 = node.rss()
        clients = [http_client(address, cookies=False) for address in ADDRESSES[:8]]
        sessions: list[HeldWebSocket] = []
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(100)
        failures_in_a_row = 0

        async def one(i: int) -> None:
            nonlocal failures_in_a_row
            async with gate:
                if failures_in_a_row >= 200:
                    outcomes["not tried (200 without an answer in a row)"] += 1
                    return
                session = HeldWebSocket(clients[i % len(clients)], node.url)
                sessions.append(session)
                outcome = await session.open()
                outcomes[outcome.split(":")[0]] += 1
                # Only silence counts: a node that refuses (4xx, close frame) is still answering.
                silent = outcome == "no answer" or outcome.startswith("error")
                failures_in_a_row = failures_in_a_row + 1 if silent else 0

        started = time.monotonic()
        try:
            await asyncio.gather(*(one(i) for i in range(count)))
            opened_in = time.monotonic() - started
            log(f"anon: handshakes done in {opened_in:.1f} s: {dict(outcomes)}; holding {hold:.0f} s")
            await asyncio.sleep(hold)
            rss1 = node.rss()
            now = time.monotonic()
            still_open = sum(1 for s in sessions if s.held.opened_at and s.held.closed_at is None)
            health = await healthz_once(node.url)
            fds = node.open_fds()
        finally:
            await asyncio.gather(*(s.close() for s in sessions))
            for http in clients:
                await http.close()
    return [
        (label, "node's soft fd limit after start-up", str(limit)),
        (label, "handshakes", ", ".join(f"{n} {what}" for what, n in outcomes.most_common()) + f" ({opened_in:.1f} s)"),
        (label, f"still open after {hold:.0f} s", f"{still_open:,} of {count:,}"),
        (label, "ended by the server", ended_summary([s.held for s in sessions if s.held.opened_at], now)),
        (label, f"node RSS after {hold:.0f} s", f"{mib(rss1)} (+{mib(rss1 - rss0)}; {fds} fds open)"),
        (label, f"/healthz at {hold:.0f} s (new connection)", health),
    ]


# -- 2. parser attack -------------------------------------------------------------------------------------------

#: A STOMP CONNECT whose header block never ends: 128 KiB, below today's header bound (33 * 4 KiB).
HEADER_PREFIX = "CONNECT\naccept-version:1.2\nhost:127.0.0.1\nx-pad:"
UNTERMINATED_HEADER = HEADER_PREFIX + "a" * (128 * 1024 - len(HEADER_PREFIX))
SHORT_HEADER = HEADER_PREFIX + "a" * (1000 - len(HEADER_PREFIX))
#: Empty SockJS messages: each one is a parser feed, and adds nothing that would trip a size bound.
WS_TINY_MESSAGES = 10_000
XHR_BODY_BYTES = 25_000


async def _ws_parser_attack(http: aiohttp.ClientSession, base: str) -> tuple[float | None, str, HeldWebSocket]:
    """The 128 KiB header, then the frame. A node that refuses that header at once is tried again with a 1 KB one
    (within any header bound): the frame of many messages must not stall it either."""
    refusals: list[str] = []
    for header in (UNTERMINATED_HEADER, SHORT_HEADER):
        session = HeldWebSocket(http, base)
        outcome = await session.open()
        if outcome != "open":
            return None, f"session not opened: {outcome}", session
        await session.send([header])
        await asyncio.sleep(0.5)
        if session.held.closed_at is None:
            break
        refusals.append(f"{len(header):,} B header refused: {session.held.how}")
        await session.close()
    else:
        return None, "; ".join(refusals), session
    frame = json.dumps([""] * WS_TINY_MESSAGES, separators=(",", ":"))
    attack_at = time.monotonic()
    if not await session.send([""] * WS_TINY_MESSAGES):
        return None, "; ".join([*refusals, "connection gone before the frame"]), session
    sent = f"{len(header):,} B header, then one {len(frame) / 1000:.0f} KB frame of {WS_TINY_MESSAGES:,}"
    return attack_at, "; ".join([*refusals, f"{sent} messages"]), session


async def _xhr_parser_attack(
    http: aiohttp.ClientSession, base: str
) -> tuple[float | None, str, asyncio.Task[str] | None]:
    path = session_path("xhr")
    headers = {"Origin": base, "Content-Type": "text/plain;charset=UTF-8"}
    async with http.post(base + path, headers=headers) as resp:
        opened = await resp.text()
    if resp.status != 200 or not opened.startswith("o"):
        return None, f"session not opened: {resp.status} {opened[:40]!r}", None
    send_url = base + path.rsplit("/", 1)[0] + "/xhr_send"
    async with http.post(send_url, data=json.dumps([UNTERMINATED_HEADER]), headers=headers) as resp:
        answer = await resp.text()
    if resp.status not in (200, 204):
        return None, f"header refused: {resp.status} {answer[:60]!r}", None
    count = (XHR_BODY_BYTES - 1) // 3
    body = json.dumps([""] * count, separators=(",", ":"))

    async def send() -> str:
        started = time.monotonic()
        async with http.post(send_url, data=body, headers=headers) as resp:
            text = await resp.text()
        return f"xhr_send answered {resp.status} {text[:40]!r} after {fmt_s(time.monotonic() - started)}"

    attack_at = time.monotonic()
    task = asyncio.create_task(send())
    return attack_at, f"{len(body) / 1000:.0f} KB body of {count:,} messages", task


async def parser_attack(target: Target) -> list[Row]:
    label = "2. parser attack (128 KiB unterminated header, then many tiny messages)"
    rows: list[Row] = []
    node = target.node("parser")
    async with running(node), Prober(target.python, f"{node.url}/healthz") as prober:
        for transport in ("websocket", "xhr"):
            for signed_in in (False, True):
                what = f"{'WebSocket frame' if transport == 'websocket' else 'xhr_send'}, " + (
                    "signed in" if signed_in else "not signed in"
                )
                async with http_client(ADDRESSES[0]) as http:
                    if signed_in and (status := await sign_in(http, node.url, "parser")) != 200:
                        rows.append((label, what, f"sign-in answered {status}"))
                        continue
                    await prober.settle(time.monotonic(), minimum=0.5, cap=30)
                    notes: list[str] = []
                    closer: HeldWebSocket | None = None
                    sender: asyncio.Task[str] | None = None
                    if transport == "websocket":
                        attack_at, note, closer = await _ws_parser_attack(http, node.url)
                    else:
                        attack_at, note, sender = await _xhr_parser_attack(http, node.url)
                    notes.append(note)
                    cpu_before = cpu_seconds(node.pid)
                    if attack_at is None:
                        rows.append((label, what, "; ".join(notes)))
                        if closer is not None:
                            await closer.close()
                        continue
                    took = await prober.settle(attack_at)
                    # The node's CPU for the attack: what the stall costs on an idle machine (wall time also holds
                    # whatever else the shared cores ran meanwhile).
                    notes.insert(0, f"node CPU {cpu_seconds(node.pid) - cpu_before:.2f} s")
                    stalled = prober.between(attack_at, attack_at + took)
                    failures = prober.failures_between(attack_at, attack_at + took)
                    if sender is not None:
                        with contextlib.suppress(Exception):
                            notes.append(await asyncio.wait_for(sender, 30))
                    if closer is not None:
                        notes.append(closer.held.how or "connection left open")
                        await closer.close()
                    result = f"/healthz {latency_summary(stalled)}" + (f", {failures} failed" if failures else "")
                    rows.append((label, what, f"{result}; {'; '.join(notes)}"))
                    log(f"parser: {what}: {rows[-1][2]}")
    return rows


# -- 3. sign-in flood ------------------------------------------------------------------------------------------


async def sign_in_flood(target: Target, *, seconds: float = 10.0) -> list[Row]:
    label = f"3. sign-in flood ({len(FLOOD_ADDRESSES)} clients, right password, {seconds:.0f} s)"
    node = target.node("flood")
    arrivals: dict[str, float] = {}
    sent: dict[str, float] = {}
    async with running(node), http_client(ADDRESSES[1]) as dave_http, http_client(ADDRESSES[2]) as erin_http:
        for http, user in ((dave_http, "dave"), (erin_http, "erin")):
            if (status := await sign_in(http, node.url, user)) != 200:
                return [(label, "set-up", f"sign-in of {user} answered {status}")]

        def arrived(content: str) -> None:
            arrivals.setdefault(content, time.monotonic())

        erin = StompClient(erin_http, node.url, arrived)
        dave = StompClient(dave_http, node.url, lambda content: None)
        await erin.connect()
        await dave.connect()
        async with Prober(target.python, f"{node.url}/healthz") as prober:
            await asyncio.sleep(1.0)
            baseline = prober.between(time.monotonic() - 1.0, time.monotonic())
            clients = [f"{user}@{address}" for user, address in zip(USERS["flood"], FLOOD_ADDRESSES, strict=True)]
            flood = await asyncio.create_subprocess_exec(
                target.python,
                "-m",
                "bench.attack_clients",
                "flood",
                node.url,
                str(seconds),
                PASSWORD,
                *clients,
                stdout=subprocess.PIPE,
                cwd=HARNESS_ROOT,
            )
            assert flood.stdout is not None
            first = await asyncio.wait_for(flood.stdout.readline(), 30)
            flood_start = float(first.split()[1])
            cpu_before = cpu_seconds(node.pid)
            i = 0
            while time.monotonic() < flood_start + seconds:
                i += 1
                content = f"chat-{i}"
                sent[content] = time.monotonic()
                await dave.send_chat("erin", content)
                await asyncio.sleep(0.25)
            output, _ = await asyncio.wait_for(flood.communicate(), 90)
            node_cpu = cpu_seconds(node.pid) - cpu_before
            flood_end = flood_start + seconds
            during = prober.between(flood_start, flood_end)
            failures = prober.failures_between(flood_start, flood_end)
        deadline = time.monotonic() + 10
        while len(arrivals) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.05)
        await dave.close()
        await erin.close()
    result = json.loads(output.decode().strip().splitlines()[-1])
    statuses = result["statuses"]
    answered = sum(statuses.values())
    latencies = sorted(arrivals[c] - sent[c] for c in sent if c in arrivals)
    chat = (
        f"median {fmt_s(statistics.median(latencies))}, max {fmt_s(latencies[-1])} "
        f"({len(latencies)} of {len(sent)} arrived)"
        if latencies
        else f"none of {len(sent)} arrived"
    )
    signins = ", ".join(f"{n:,} × {status}" for status, n in sorted(statuses.items()))
    retry = ", ".join(f"{v} s × {n}" for v, n in result["retry_after"].items()) or "none"
    return [
        (label, "/healthz before the flood", latency_summary(baseline)),
        (label, "/healthz during the flood", latency_summary(during) + (f", {failures} failed" if failures else "")),
        (label, "chat message dave → erin during the flood", chat),
        (label, "sign-in answers", f"{signins} ({answered / seconds:,.0f}/s); Retry-After: {retry}"),
        (label, "node CPU during the flood", f"{node_cpu:.1f} s in {seconds:.0f} s"),
    ]


# -- 4. escaped content to an offline user -------------------------------------------------------------------

MAX_MESSAGE_BYTES = 65536
ESCAPED_CHAR = "\x01"  # one UTF-8 byte, six in JSON (\u0001)


async def _post_message(http: aiohttp.ClientSession, base: str, to: str, body: bytes) -> int:
    headers = {"Origin": base, "Content-Type": "application/json"}
    async with http.post(f"{base}/api/messages", data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


def _message_body(to: str, length: int) -> bytes:
    return json.dumps({"to": to, "content": ESCAPED_CHAR * length}).encode()


async def largest_accepted(http: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    """The most control characters one message may carry: MAX_MESSAGE_BYTES, else found by bisection."""
    status = await _post_message(http, base, "probe-inbox", _message_body("probe-inbox", MAX_MESSAGE_BYTES))
    if status in (200, 202):
        return MAX_MESSAGE_BYTES, f"{MAX_MESSAGE_BYTES:,} accepted"
    low, high = 0, MAX_MESSAGE_BYTES
    while high - low > 1:
        middle = (low + high) // 2
        if await _post_message(http, base, "probe-inbox", _message_body("probe-inbox", middle)) in (200, 202):
            low = middle
        else:
            high = middle
    return low, f"{MAX_MESSAGE_BYTES:,} refused ({status}); largest accepted {low:,}"


async def _send_mail(node: Node, senders: list[aiohttp.ClientSession], body: bytes, total: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    share = total // len(senders)

    async def one(http: aiohttp.ClientSession) -> None:
        for _ in range(share):
            statuses[str(await _post_message(http, node.url, "inbox", body))] += 1

    await asyncio.gather(*(one(http) for http in senders))
    return statuses


async def _pull_all(node: Node, http: aiohttp.ClientSession) -> tuple[int, int, int, str]:
    """Pull until empty (at most 10 pulls): bytes returned, messages, peak RSS during the pulls, statuses."""
    total_bytes = messages = 0
    statuses: list[str] = []
    node.reset_peak()
    with RssSampler(node) as sampler:
        for _ in range(10):
            async with http.post(f"{node.url}/api/mail/pull", headers={"Origin": node.url}) as resp:
                data = await resp.read()
            statuses.append(str(resp.status))
            count = data.count(b'"from"')
            total_bytes += len(data)
            messages += count
            if resp.status != 200 or count == 0:
                break
    peak = max(sampler.peak, node.peak_rss())
    return total_bytes, messages, peak, ",".join(statuses)


async def _mailbox_figures(node: Node, label: str, length: int | None, total: int) -> tuple[list[Row], int | None]:
    rows: list[Row] = []
    names = [f"sender{i}" for i in range(1, 9)]
    senders = [http_client(ADDRESSES[3 + i]) for i in range(len(names))]
    try:
        for http, name in zip(senders, names, strict=True):
            if (status := await sign_in(http, node.url, name)) != 200:
                return [(label, "set-up", f"sign-in of {name} answered {status}")], length
        if length is None:
            async with http_client(ADDRESSES[12]) as prober:
                await sign_in(prober, node.url, "prober")
                length, found = await largest_accepted(prober, node.url)
            rows.append((label, "content of control characters per message", found))
        await asyncio.sleep(1)
        rss0 = node.rss()
        body = _message_body("inbox", length)
        started = time.monotonic()
        statuses = await _send_mail(node, senders, body, total)
        took = time.monotonic() - started
        answers = ", ".join(f"{n:,} × {status}" for status, n in sorted(statuses.items()))
        await asyncio.sleep(2)
        rss1 = node.rss()
        rows.append((label, f"{total:,} sends of {len(body) / 1024:,.0f} KiB JSON", f"{answers} in {took:.1f} s"))
        rows.append((label, "node RSS after the sends", f"{mib(rss1)} (+{mib(rss1 - rss0)})"))
    finally:
        for http in senders:
            await http.close()
    return rows, length


async def escaped_mail(target: Target, *, total: int = 1000) -> list[Row]:
    rows: list[Row] = []
    label = f"4. {total:,} messages of escaped content to one offline user, memory backplane"
    node = target.node("mail-memory")
    length: int | None = None
    async with running(node):
        figures, length = await _mailbox_figures(node, label, None, total)
        rows += figures
        async with http_client(ADDRESSES[13]) as owner:
            await sign_in(owner, node.url, "inbox")
            pulled, messages, peak, statuses = await _pull_all(node, owner)
        await asyncio.sleep(2)
        pull = f"{messages:,} messages, {mib(pulled)} ({statuses})"
        rows.append((label, "the owner's pull (POST /api/mail/pull)", pull))
        rows.append((label, "node peak RSS during the pull", f"{mib(peak)}; {mib(node.rss())} after"))
    if not broker_reachable():
        rows.append(("4b. the same on RabbitMQ", "skipped", "no broker at 127.0.0.1:5672"))
        return rows
    label = f"4b. {total:,} messages of escaped content to one offline user, RabbitMQ (own vhost)"
    async with Vhost() as vhost:
        node = target.node("mail-rabbitmq", AMQP_URL=vhost.amqp_url)
        async with running(node):
            figures, _ = await _mailbox_figures(node, label, length, total)
            rows += figures
            queue = await _settled_mailbox(vhost)
            rows.append((label, "mailbox queue on the broker", queue))
            async with http_client(ADDRESSES[13]) as owner:
                await sign_in(owner, node.url, "inbox")
                pulled, messages, peak, statuses = await _pull_all(node, owner)
            rows.append((label, "the owner's pull", f"{messages:,} messages, {mib(pulled)} ({statuses})"))
            rows.append((label, "node peak RSS during the pull", f"{mib(peak)}; {mib(node.rss())} after"))
    return rows


async def _settled_mailbox(vhost: Vhost) -> str:
    """The inbox's mailbox queue once two readings 5.5 s apart agree (the management stats refresh every 5 s, and
    a reading between two refreshes can mix old and new figures)."""
    last: tuple[int, int] | None = None
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        mailboxes = [q for q in await vhost.queues() if ".mailbox." in str(q.get("name"))]
        if mailboxes:
            queue = max(mailboxes, key=lambda q: int(str(q.get("messages") or 0)))
            reading = (int(str(queue.get("messages") or 0)), int(str(queue.get("message_bytes") or 0)))
            if reading == last and reading[0] > 0:
                return f"{reading[0]:,} messages, message_bytes {mib(reading[1])} ({reading[1]:,} B)"
            last = reading
        await asyncio.sleep(5.5)
    return f"no settled reading in 45 s (last: {last})"


# -- 5. stalled request bodies ----------------------------------------------------------------------------------


async def stalled_bodies(target: Target, *, count: int = 300, hold: float = 20.0, length: int = 1 << 20) -> list[Row]:
    label = f"5. {count} stalled request bodies (POST /login, Content-Length {length:,}, all but 1 KiB sent)"
    node = target.node("stalled")
    async with running(node):
        rss0 = node.rss()
        bodies = [
            StalledBody("127.0.0.1", node.port, "/login", length, length - 1024, ADDRESSES[i % 16])
            for i in range(count)
        ]
        chunk = b"a" * 65536
        gate = asyncio.Semaphore(150)

        async def one(body: StalledBody) -> str:
            async with gate:
                try:
                    return await asyncio.wait_for(body.start(chunk), 15)
                except TimeoutError:
                    return "blocked while sending (the server stopped reading)"

        try:
            with RssSampler(node, interval=0.1) as sampler:
                outcomes = Counter(await asyncio.gather(*(one(b) for b in bodies)))
                sent_at = time.monotonic()
                await asyncio.sleep(hold)
                rss_hold = node.rss()
                still_open = sum(1 for b in bodies if b.held.opened_at and b.held.closed_at is None)
                health = await healthz_once(node.url)
            answers = Counter(b.answer or "(no answer)" for b in bodies)
            ended = ended_summary([b.held for b in bodies if b.held.opened_at], sent_at)
        finally:
            for body in bodies:
                body.close()
        await asyncio.sleep(5)
        rss_after = node.rss()
    held_rss = f"{mib(rss_hold)} (+{mib(rss_hold - rss0)}; peak {mib(sampler.peak)})"
    return [
        (label, "clients", ", ".join(f"{n} {what}" for what, n in outcomes.most_common())),
        (label, f"node RSS with them open {hold:.0f} s", held_rss),
        (label, f"still open after {hold:.0f} s", f"{still_open} of {count}; ended: {ended}"),
        (label, "server's answers", ", ".join(f"{n} × {a}" for a, n in answers.most_common())),
        (label, f"/healthz at {hold:.0f} s", health),
        (label, "node RSS 5 s after the clients closed", f"{mib(rss_after)} (+{mib(rss_after - rss0)} over before)"),
    ]


# -- 6. what a locked-out owner sees ---------------------------------------------------------------------------


async def _login_answer(http: aiohttp.ClientSession, base: str, user: str, password: str) -> str:
    async with http.post(
        f"{base}/login", json={"username": user, "password": password}, headers={"Origin": base}
    ) as resp:
        body = (await resp.text()).strip()
        retry = resp.headers.get("Retry-After")
    return f"{resp.status} {body[:120]}" + (f" Retry-After: {retry}" if retry else " (no Retry-After)")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} × {what}" for what, n in counter.items())


async def lockout(target: Target) -> list[Row]:
    label = "6. throttles: who gets locked out"
    node = target.node("lockout")
    async with running(node):
        base = node.url
        async with http_client(ADDRESSES[20]) as browser, http_client(ADDRESSES[21], cookies=False) as attacker:
            before = await _login_answer(browser, base, "alice", PASSWORD)
            async with browser.post(f"{base}/logout", headers={"Origin": base}) as resp:
                await resp.read()
            wrong: Counter[str] = Counter()
            for i in range(5):
                wrong[(await _login_answer(attacker, base, "alice", f"wrong-password-{i}")).split()[0]] += 1
            sixth = await _login_answer(attacker, base, "alice", "wrong-password-6")
            owner = await _login_answer(browser, base, "alice", PASSWORD)
        async with http_client(ADDRESSES[22], cookies=False) as nat:
            failures: Counter[str] = Counter()
            # 30 failures, then on until the address itself is refused (the bucket refills while scrypt runs).
            for i in range(40):
                answer = (await _login_answer(nat, base, f"nobody{i:02d}", "wrong-password")).split()[0]
                failures[answer] += 1
                if i >= 29 and answer == "429":
                    break
            neighbour = await _login_answer(nat, base, "carol", PASSWORD)
    return [
        (label, "alice signs in from her browser first", before),
        (label, "5 wrong passwords for alice from another address", _counts(wrong)),
        (label, "the attacker's 6th try", sixth),
        (label, "then alice, right password, from the browser that signed in before", owner),
        (label, "30+ failures from one address (a new name each)", _counts(failures)),
        (label, "then carol, right password, from that address", neighbour),
    ]
