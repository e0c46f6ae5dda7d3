"""A client worker process: lean protocol clients driven by JSON commands on stdin, answers on stdout.

``python -m bench.loadgen`` is started by the orchestrator (``bench.runner.LoadGen``), several at a time, so the
clients never share a CPU-bound event loop with the servers or with each other's bookkeeping. Three kinds of
client, each as lean as its protocol allows (one ``json.loads`` per received WebSocket message, one
``json.dumps`` per sent one):

* ``warren``: SockJS WebSocket transport (``/chat-websocket/<server>/<session>/websocket``) with the session
  cookie, STOMP 1.2 CONNECT, SUBSCRIBE ``/user/topic/reply`` (its RECEIPT awaited), SEND ``/message/chat``;
* ``sio``: Engine.IO 4 WebSocket (``/socket.io/?EIO=4&transport=websocket``), Socket.IO CONNECT with
  ``{"user"}`` auth, ``chat`` events out, ``message`` events in, pings answered;
* ``bare``: a plain aiohttp WebSocket that stays idle (the memory baseline).

Message content is exactly ``MSG_BYTES`` ASCII bytes: ``<send time ns>:<slot>:<seq>:`` padded with ``x``. The
send time is CLOCK_MONOTONIC, which is one clock for every process on the machine, so the receiving process (on
the other node) computes the latency. For open-loop runs it is the *intended* send time, so a stalled sender
cannot hide queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import string
import time
from collections.abc import Awaitable, Callable
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import aiohttp

from .commands import serve_commands

MSG_BYTES = 200
_PAD = "x" * MSG_BYTES
monotonic_ns = time.monotonic_ns


def content_for(t_ns: int, slot: int, seq: int) -> str:
    head = f"{t_ns}:{slot}:{seq}:"
    return head + _PAD[: MSG_BYTES - len(head)]


class Stats:
    """What the receiving side of this process records."""

    def __init__(self) -> None:
        self.received = 0
        self.window: tuple[int, int] | None = None  # (start ns, end ns) of send times that count for latency
        self.latencies: list[int] = []
        self.delivered: memoryview | None = None  # shared per-slot delivery counters (closed-loop runs)
        self.seqs: dict[int, int] = {}  # slot -> last seq (order check)
        self.out_of_order = 0
        self.track_order = False

    def on_content(self, content_head: str) -> None:
        now = monotonic_ns()
        i = content_head.find(":")
        j = content_head.find(":", i + 1)
        t_ns = int(content_head[:i])
        slot = int(content_head[i + 1 : j])
        self.received += 1
        window = self.window
        if window is not None and window[0] <= t_ns < window[1]:
            self.latencies.append(now - t_ns)
        delivered = self.delivered
        if delivered is not None and slot >= 0:
            delivered[slot] += 1
        if self.track_order:
            k = content_head.find(":", j + 1)
            seq = int(content_head[j + 1 : k])
            if seq <= self.seqs.get(slot, -1):
                self.out_of_order += 1
            self.seqs[slot] = seq


STATS = Stats()


class Client:
    kind = ""

    def __init__(self, http: aiohttp.ClientSession, spec: dict[str, Any]) -> None:
        self.http = http
        self.url: str = spec["url"]
        self.user: str = spec["user"]
        self.cookie: str | None = spec.get("cookie")
        self.slot: int = spec.get("slot", -1)
        self.target: str | None = spec.get("target")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.seq = 0
        self.bound_at = 0.0
        self.closed_by_server: tuple[int, str] | None = None
        self.on_lost: Callable[[Client], None] | None = None

    @property
    def ws_base(self) -> str:
        return self.url.replace("http", "ws", 1)

    async def open(self) -> None:
        raise NotImplementedError

    async def send_chat(self, t_ns: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)

    def _start_reader(self, loop_fn: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await loop_fn()
            finally:
                if self.on_lost is not None:
                    self.on_lost(self)

        self.reader = asyncio.create_task(run())


def _random_id(n: int = 12) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


class WarrenClient(Client):
    kind = "warren"

    async def open(self) -> None:
        url = f"{self.ws_base}/chat-websocket/{random.randint(0, 999):03d}/{_random_id()}/websocket"
        headers = {"Origin": self.url}
        if self.cookie:
            headers["Cookie"] = f"WARREN_SESSION={self.cookie}"
        ws = await self.http.ws_connect(url, headers=headers, autoping=True, max_msg_size=0)
        self.ws = ws
        try:
            first = await ws.receive(timeout=30)
            if first.data != "o":
                raise RuntimeError(f"SockJS did not open: {first.type} {first.data!r}")
            await ws.send_str(json.dumps(["CONNECT\naccept-version:1.2\nhost:warren\nheart-beat:0,0\n\n\x00"]))
            await self._expect("CONNECTED")
            await ws.send_str(
                json.dumps(["SUBSCRIBE\nid:sub-0\ndestination:/user/topic/reply\nack:auto\nreceipt:s0\n\n\x00"])
            )
            await self._expect("RECEIPT")
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        self.bound_at = time.monotonic()
        self._start_reader(self._read)

    async def _expect(self, command: str) -> None:
        assert self.ws is not None
        while True:
            msg = await self.ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended while waiting for {command}: {msg.type}")
            data = msg.data
            if data == "h":
                continue
            if data.startswith("c"):
                raise RuntimeError(f"SockJS closed while waiting for {command}: {data}")
            if data.startswith("a"):
                for frame in json.loads(data[1:]):
                    if frame.startswith(command):
                        return
                    if frame.startswith("ERROR"):
                        raise RuntimeError(f"STOMP ERROR while waiting for {command}: {frame[:200]!r}")
                    if frame.startswith("MESSAGE"):
                        self._on_frame(frame)

    def _on_frame(self, frame: str) -> None:
        i = frame.find('"content":"')
        if i >= 0:
            STATS.on_content(frame[i + 11 : i + 80])

    async def _read(self) -> None:
        assert self.ws is not None
        on_frame = self._on_frame
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.data
            first = data[0]
            if first == "a":
                for frame in json.loads(data[1:]):
                    if frame[0] == "M":
                        on_frame(frame)
            elif first == "c":
                code, reason = json.loads(data[1:])
                self.closed_by_server = (code, reason)
                break

    async def send_chat(self, t_ns: int) -> None:
        assert self.ws is not None and self.target is not None
        body = f'{{"receiver":"{self.target}","msg":"{content_for(t_ns, self.slot, self.seq)}"}}'
        self.seq += 1
        frame = (
            f"SEND\ndestination:/message/chat\ncontent-type:application/json\ncontent-length:{len(body)}\n\n{body}\x00"
        )
        await self.ws.send_str(json.dumps([frame]))

    async def send_with_receipts(self, target: str, n: int, window: int) -> float:
        """Send ``n`` messages to ``target`` with a RECEIPT each, at most ``window`` unanswered; seconds taken."""
        assert self.ws is not None
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
            self.reader = None
        ws = self.ws
        started = time.monotonic()
        sent = answered = 0
        while answered < n:
            while sent < n and sent - answered < window:
                body = f'{{"receiver":"{target}","msg":"{content_for(monotonic_ns(), 0, sent)}"}}'
                frame = (
                    f"SEND\ndestination:/message/chat\nreceipt:r{sent}\ncontent-type:application/json\n"
                    f"content-length:{len(body)}\n\n{body}\x00"
                )
                await ws.send_str(json.dumps([frame]))
                sent += 1
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended while sending: {msg.type}")
            if msg.data.startswith("a"):
                for frame in json.loads(msg.data[1:]):
                    if frame.startswith("RECEIPT"):
                        answered += 1
                    elif frame.startswith("ERROR") or "/user/queue/errors" in frame:
                        raise RuntimeError(f"send refused: {frame[:300]!r}")
        return time.monotonic() - started


class SioClient(Client):
    kind = "sio"

    async def open(self) -> None:
        ws = await self.http.ws_connect(
            f"{self.ws_base}/socket.io/?EIO=4&transport=websocket", autoping=True, max_msg_size=0
        )
        self.ws = ws
        try:
            first = await ws.receive(timeout=30)
            if not str(first.data).startswith("0"):
                raise RuntimeError(f"Engine.IO did not open: {first.type} {first.data!r}")
            await ws.send_str("40" + json.dumps({"user": self.user}))
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"socket ended during Socket.IO connect: {msg.type}")
                if msg.data == "2":
                    await ws.send_str("3")
                    continue
                if msg.data.startswith("40"):
                    break
                raise RuntimeError(f"Socket.IO connect refused: {msg.data[:200]!r}")
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        self.bound_at = time.monotonic()
        self._start_reader(self._read)

    async def _read(self) -> None:
        assert self.ws is not None
        ws = self.ws
        on_content = STATS.on_content
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.data
            if data.startswith("42"):
                event = json.loads(data[2:])
                if event[0] == "message":
                    on_content(event[1]["content"][:70])
            elif data == "2":
                await ws.send_str("3")
            elif data.startswith("1"):
                self.closed_by_server = (0, "engine.io close")
                break

    async def send_chat(self, t_ns: int) -> None:
        assert self.ws is not None and self.target is not None
        payload = {"receiver": self.target, "msg": content_for(t_ns, self.slot, self.seq)}
        self.seq += 1
        await self.ws.send_str("42" + json.dumps(["chat", payload]))


class BareClient(Client):
    kind = "bare"

    async def open(self) -> None:
        self.ws = await self.http.ws_connect(f"{self.ws_base}/ws", autoping=True, max_msg_size=0)
        self.bound_at = time.monotonic()
        self._start_reader(self._read)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break


KINDS: dict[str, type[Client]] = {"warren": WarrenClient, "sio": SioClient, "bare": BareClient}


class Worker:
    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        self.clients: list[Client] = []
        self.shm: shared_memory.SharedMemory | None = None
        self.reconnect = False
        self.backoff = (0.05, 0.5)
        self.reconnects = 0
        self.reconnect_failures = 0
        self._reconnecting: set[asyncio.Task[None]] = set()

    # -- commands -------------------------------------------------------------------------------------------

    async def cmd_connect(self, kind: str, clients: list[dict[str, Any]], concurrency: int = 50) -> dict[str, Any]:
        cls = KINDS[kind]
        sem = asyncio.Semaphore(concurrency)
        failed: list[str] = []
        new = [cls(self.http, spec) for spec in clients]
        started = time.monotonic()

        async def one(client: Client) -> None:
            async with sem:
                for attempt in range(3):
                    try:
                        await client.open()
                        client.on_lost = self._on_lost
                        return
                    except Exception as exc:
                        if attempt == 2:
                            failed.append(f"{client.user}: {exc!r}"[:300])
                        else:
                            await asyncio.sleep(0.2 * (attempt + 1))

        await asyncio.gather(*(one(c) for c in new))
        elapsed = time.monotonic() - started
        self.clients.extend(c for c in new if c.ws is not None and not c.ws.closed)
        return {
            "connected": len(new) - len(failed),
            "failed": len(failed),
            "errors": failed[:5],
            "elapsed": elapsed,
            "last_bound": max((c.bound_at for c in new), default=0.0),
        }

    async def cmd_attach_shm(self, name: str) -> dict[str, Any]:
        self.shm = shared_memory.SharedMemory(name=name)
        # Attaching registers the segment with this process' resource tracker, which would unlink it at exit.
        with contextlib.suppress(Exception):
            resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
        STATS.delivered = self.shm.buf.cast("q")
        return {"ok": True}

    async def cmd_saturate(self, start_at: float, warmup: float, duration: float, window: int) -> dict[str, Any]:
        """Closed loop: every sender keeps ``window`` messages in flight (sent, not yet delivered to its receiver).

        Deliveries are counted in shared memory by whichever process holds the receiver. Reports the messages this
        process *received* in the measured window, so the two processes' figures add up to the total.
        """
        assert STATS.delivered is not None
        delivered = STATS.delivered
        senders = [c for c in self.clients if c.target is not None]
        sent = {c.slot: delivered[c.slot] for c in senders}
        initial = dict(sent)
        t_window = start_at + warmup
        t_end = t_window + duration
        STATS.window = (int(t_window * 1e9), int(t_end * 1e9))
        STATS.latencies = []
        await _sleep_until(start_at)
        snap_start = snap_end = None
        stalls = 0
        while True:
            now = time.monotonic()
            if snap_start is None and now >= t_window:
                snap_start = (STATS.received, now)
            if now >= t_end:
                snap_end = (STATS.received, now)
                break
            for client in senders:
                slot = client.slot
                room = window - (sent[slot] - delivered[slot])
                for _ in range(room):
                    await client.send_chat(monotonic_ns())
                sent[slot] += max(room, 0)
            await asyncio.sleep(0.001)
        assert snap_start is not None
        # Let in-flight messages land (they are not counted) so the next phase starts clean.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(sent[c.slot] > delivered[c.slot] for c in senders):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        stalls = sum(sent[c.slot] - delivered[c.slot] for c in senders)
        lat = STATS.latencies
        STATS.window = None
        return {
            "received": snap_end[0] - snap_start[0],
            "seconds": snap_end[1] - snap_start[1],
            "sent": sum(sent[slot] - initial[slot] for slot in sent),
            "undelivered": stalls,
            "lat_us": [x // 1000 for x in lat],
        }

    async def cmd_paced(
        self, start_at: float, rate: float, warmup: float, duration: float, grace: float = 3.0
    ) -> dict[str, Any]:
        """Open loop: this process' senders send ``rate`` messages/s in turn, on a fixed schedule."""
        senders = [c for c in self.clients if c.target is not None]
        total = int(rate * (warmup + duration))
        start_ns = int(start_at * 1e9)
        interval = 1e9 / rate if rate else 0.0
        STATS.window = (start_ns + int(warmup * 1e9), start_ns + int((warmup + duration) * 1e9))
        STATS.latencies = []
        received_before = STATS.received
        await _sleep_until(start_at)
        i = 0
        max_late = 0
        nsenders = len(senders)
        while i < total and nsenders:
            now = monotonic_ns()
            due = start_ns + int(i * interval)
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                continue
            max_late = max(max_late, now - due)
            while i < total:
                due = start_ns + int(i * interval)
                if due > now:
                    break
                await senders[i % nsenders].send_chat(due)
                i += 1
        # Wait for the stragglers of the last messages (received by this process, sent by any).
        end = time.monotonic() + grace
        last = -1
        while time.monotonic() < end:
            await asyncio.sleep(0.1)
            if STATS.received == last and time.monotonic() > start_at + warmup + duration + 0.5:
                break
            last = STATS.received
        lat = STATS.latencies
        STATS.window = None
        return {
            "sent": i,
            "received": STATS.received - received_before,
            "max_late_ms": max_late / 1e6,
            "lat_us": [x // 1000 for x in lat],
        }

    async def cmd_send_receipts(self, index: int, target: str, n: int, window: int) -> dict[str, Any]:
        client = self.clients[index]
        assert isinstance(client, WarrenClient)
        seconds = await client.send_with_receipts(target, n, window)
        return {"seconds": seconds}

    async def cmd_mailbox(self, kind: str, spec: dict[str, Any], n: int, timeout: float = 60) -> dict[str, Any]:
        """Connect one receiver whose mailbox holds ``n`` messages; time until the last arrives."""
        STATS.track_order = True
        STATS.seqs = {}
        STATS.out_of_order = 0
        before = STATS.received
        client = KINDS[kind](self.http, spec)
        started = time.monotonic()
        await client.open()
        subscribed = time.monotonic()
        deadline = started + timeout
        while STATS.received - before < n and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        done = time.monotonic()
        got = STATS.received - before
        await client.close()
        STATS.track_order = False
        return {
            "received": got,
            "seconds": done - started,
            "after_subscribe": done - subscribed,
            "out_of_order": STATS.out_of_order,
        }

    async def cmd_reconnect_mode(self, on: bool, backoff: list[float] | None = None) -> dict[str, Any]:
        self.reconnect = on
        if backoff:
            self.backoff = (backoff[0], backoff[1])
        return {"ok": True}

    async def cmd_status(self) -> dict[str, Any]:
        open_ = [c for c in self.clients if c.ws is not None and not c.ws.closed and c.reader and not c.reader.done()]
        return {
            "open": len(open_),
            "total": len(self.clients),
            "last_bound": max((c.bound_at for c in self.clients), default=0.0),
            "reconnects": self.reconnects,
            "reconnect_failures": self.reconnect_failures,
            "received": STATS.received,
        }

    async def cmd_close(self) -> dict[str, Any]:
        self.reconnect = False
        for task in list(self._reconnecting):
            task.cancel()
        clients, self.clients = self.clients, []
        for client in clients:
            client.on_lost = None
        sem = asyncio.Semaphore(200)

        async def one(c: Client) -> None:
            async with sem:
                await c.close()

        await asyncio.gather(*(one(c) for c in clients))
        return {"closed": len(clients)}

    # -- reconnection ---------------------------------------------------------------------------------------

    def _on_lost(self, client: Client) -> None:
        if not self.reconnect:
            return
        task = asyncio.get_running_loop().create_task(self._reconnect(client))
        self._reconnecting.add(task)
        task.add_done_callback(self._reconnecting.discard)

    async def _reconnect(self, client: Client) -> None:
        base, cap = self.backoff
        delay = base
        while self.reconnect:
            # Full jitter: spread the herd.
            await asyncio.sleep(random.uniform(0, delay))
            try:
                client.on_lost = None
                await client.open()
                client.on_lost = self._on_lost
                self.reconnects += 1
                return
            except Exception:
                self.reconnect_failures += 1
                delay = min(cap, delay * 2)

    async def shutdown(self) -> None:
        await self.cmd_close()
        await self.http.close()
        if self.shm is not None:
            STATS.delivered = None
            with contextlib.suppress(Exception):
                self.shm.close()


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def main() -> None:
    from .common import raise_nofile

    raise_nofile(65536)
    worker = Worker()
    try:
        await serve_commands(worker, line_limit=64 * 1024 * 1024)
    finally:
        await worker.shutdown()


if __name__ == "__main__":
    if os.environ.get("BENCH_UVLOOP") == "1":
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    asyncio.run(main())
