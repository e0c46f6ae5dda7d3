"""The attackers' and the bystanders' clients for ``bench.attacks``, and its two helper processes.

In process: a SockJS-over-WebSocket STOMP client (the chat bystanders), an anonymous SockJS WebSocket holder,
a stalled-body holder (raw sockets). As child processes, so that their own work never shares an event loop with
what they measure:

    python -m bench.attack_clients probe URL [INTERVAL]
        GET URL every INTERVAL seconds (default 0.02) on one keep-alive connection, one request at a time; one
        line per answer on stdout: ``<start, CLOCK_MONOTONIC> <seconds> <status or error>``. Runs until stdin
        closes or 600 s pass.
    python -m bench.attack_clients flood URL SECONDS PASSWORD USER@ADDRESS...
        One client per USER@ADDRESS (its own source address), each POSTing URL/login with the right password
        as fast as it is answered, for SECONDS; prints one JSON object (counts by status) at the end.

Every connection goes to 127.0.0.1 and every one is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

SOCKJS = "/chat-websocket"
#: A handshake that has not finished in this long counts as refused (the node may have run out of descriptors).
HANDSHAKE_TIMEOUT = 10.0


def session_path(transport: str) -> str:
    """A fresh SockJS session URL path: ``/chat-websocket/<server>/<session>/<transport>``."""
    return f"{SOCKJS}/{secrets.randbelow(1000):03d}/{secrets.token_hex(8)}/{transport}"


def http_client(address: str | None = None, *, cookies: bool = True) -> aiohttp.ClientSession:
    """A client session from a loopback source ``address``; with a cookie jar that, like a browser's, keeps
    cookies set by ``127.0.0.1`` (aiohttp's default jar drops cookies of IP hosts)."""
    connector = aiohttp.TCPConnector(limit=0, local_addr=(address, 0) if address else None)
    jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(connector=connector, cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=120))


def sockjs_frames(data: str) -> tuple[str, list[str]]:
    """A SockJS frame's kind (``o``, ``h``, ``a``, ``c``) and its messages (``a``) or close reason (``c``)."""
    if not data:
        return "", []
    kind = data[0]
    if kind == "a":
        messages: list[str] = json.loads(data[1:])
        return kind, messages
    if kind == "c":
        return kind, [data[1:]]
    return kind, []


def stomp_frames(text: str) -> list[tuple[str, dict[str, str], str]]:
    """The STOMP frames in one SockJS message: (command, headers, body); heart-beats are dropped."""
    frames = []
    for raw in text.split("\x00"):
        raw = raw.lstrip("\r\n")
        if not raw:
            continue
        head, _, body = raw.partition("\n\n")
        lines = head.split("\n")
        headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        frames.append((lines[0], headers, body))
    return frames


@dataclass
class Held:
    """One connection an attacker holds open: when it opened and whether (and when, how) the server ended it."""

    opened_at: float = 0.0
    closed_at: float | None = None
    how: str = ""

    def ended(self, how: str) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.how = how


@dataclass
class HeldWebSocket:
    """A SockJS WebSocket session (with whatever cookies ``http`` holds, or none) that sends only what it is told
    to; it notices when the server ends it, and how (close frame, STOMP ERROR, WebSocket close)."""

    http: aiohttp.ClientSession
    base: str
    held: Held = field(default_factory=Held)
    ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    async def open(self) -> str:
        """``"open"`` or why not (``"refused 403"``, ``"no answer"``, ``"closed: c[4001,...]"``)."""
        url = self.base.replace("http://", "ws://") + session_path("websocket")
        try:
            self.ws = await asyncio.wait_for(
                self.http.ws_connect(url, headers={"Origin": self.base}, autoping=True, max_msg_size=0),
                HANDSHAKE_TIMEOUT,
            )
            first = await asyncio.wait_for(self.ws.receive(), HANDSHAKE_TIMEOUT)
        except aiohttp.WSServerHandshakeError as exc:
            return f"refused {exc.status}"
        except TimeoutError:
            return "no answer"
        except (aiohttp.ClientError, OSError) as exc:
            return f"error {type(exc).__name__}"
        self.held.opened_at = time.monotonic()
        if first.type is not aiohttp.WSMsgType.TEXT or first.data != "o":
            self.held.ended(f"closed at open: {str(first.data)[:60]}")
            return f"closed: {str(first.data)[:60]}"
        self._reader = asyncio.create_task(self._read())
        return "open"

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                kind, parts = sockjs_frames(message.data)
                if kind == "c":
                    self.held.ended(f"close frame {parts[0][:60]}")
                for part in parts if kind == "a" else []:
                    for command, headers, _ in stomp_frames(part):
                        if command == "ERROR":
                            self.held.ended(f"STOMP ERROR {headers.get('message', '')[:60]}")
                continue
            self.held.ended(f"WebSocket closed ({self.ws.close_code})")
            return

    async def send(self, messages: list[str]) -> bool:
        """One WebSocket frame carrying ``messages``; False when the connection is already gone."""
        if self.ws is None or self.ws.closed:
            return False
        try:
            await self.ws.send_str(json.dumps(messages, separators=(",", ":")))
        except (ConnectionError, aiohttp.ClientError):
            return False
        return True

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)


class StompClient:
    """A signed-in chat client: SockJS WebSocket, STOMP 1.2 CONNECT and SUBSCRIBE ``/user/topic/reply``."""

    def __init__(self, http: aiohttp.ClientSession, base: str, on_message: Callable[[str], None]) -> None:
        self.http = http
        self.base = base
        self.on_message = on_message
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.errors: list[str] = []

    async def connect(self) -> None:
        url = self.base.replace("http://", "ws://") + session_path("websocket")
        self.ws = await asyncio.wait_for(
            self.http.ws_connect(url, headers={"Origin": self.base}, max_msg_size=0), HANDSHAKE_TIMEOUT
        )
        first = await asyncio.wait_for(self.ws.receive(), HANDSHAKE_TIMEOUT)
        if first.data != "o":
            raise RuntimeError(f"SockJS did not open: {first.data!r}")
        self._reader = asyncio.create_task(self._read())
        connected = self._expect("CONNECTED")
        await self.send_frame("CONNECT\naccept-version:1.2\nhost:127.0.0.1\nheart-beat:0,0\n\n\x00")
        await asyncio.wait_for(connected, HANDSHAKE_TIMEOUT)
        subscribed = self._expect("sub-0")
        await self.send_frame("SUBSCRIBE\nid:sub-0\ndestination:/user/topic/reply\nreceipt:sub-0\n\n\x00")
        await asyncio.wait_for(subscribed, HANDSHAKE_TIMEOUT)

    def _expect(self, key: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return future

    def _settle(self, key: str, error: str | None = None) -> None:
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(RuntimeError(error))

    async def send_frame(self, frame: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps([frame]))

    async def send_chat(self, to: str, content: str) -> None:
        body = json.dumps({"to": to, "content": content})
        await self.send_frame(f"SEND\ndestination:/message/chat\ncontent-type:application/json\n\n{body}\x00")

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                for key in list(self._waiting):
                    self._settle(key, f"connection closed ({self.ws.close_code})")
                return
            kind, parts = sockjs_frames(message.data)
            for part in parts if kind == "a" else []:
                for command, headers, body in stomp_frames(part):
                    if command == "MESSAGE":
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            self.on_message(json.loads(body)["content"])
                    elif command == "CONNECTED":
                        self._settle("CONNECTED")
                    elif command == "RECEIPT":
                        self._settle(headers.get("receipt-id", ""))
                    elif command == "ERROR":
                        self.errors.append(headers.get("message", body[:80]))
                        for key in list(self._waiting):
                            self._settle(key, f"STOMP ERROR {headers.get('message', '')}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)


@dataclass
class StalledBody:
    """An HTTP request that announced ``length`` body bytes, sent ``sent`` of them and then stopped."""

    host: str
    port: int
    path: str
    length: int
    sent: int
    address: str
    held: Held = field(default_factory=Held)
    answer: str = ""
    _writer: asyncio.StreamWriter | None = None
    _reader_task: asyncio.Task[None] | None = None

    async def start(self, chunk: bytes) -> str:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, local_addr=(self.address, 0)), HANDSHAKE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            return f"error {type(exc).__name__}"
        self._writer = writer
        self.held.opened_at = time.monotonic()
        self._reader_task = asyncio.create_task(self._read(reader))
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {self.length}\r\n\r\n"
        )
        writer.write(head.encode())
        left = self.sent
        try:
            while left > 0 and not writer.is_closing():
                piece = chunk[: min(left, len(chunk))]
                writer.write(piece)
                left -= len(piece)
                await writer.drain()
        except (ConnectionError, OSError):
            return "reset while sending"
        return "stalled"

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            data = await reader.read(200)
            if data:
                self.answer = data.split(b"\r\n", 1)[0].decode(errors="replace")
                self.held.ended(f"answered {self.answer}")
                while data:
                    data = await reader.read(65536)
            self.held.ended("closed by server")
        except (ConnectionError, OSError):
            self.held.ended("reset by server")

    def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.transport.abort()


# -- helper processes ------------------------------------------------------------------------------------------


async def _probe(url: str, interval: float) -> None:
    """See the module docstring. One connection: a stalled node shows as one long answer, not as a pile-up."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stopped = asyncio.ensure_future(stdin.read())
    deadline = time.monotonic() + 600
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        next_at = time.monotonic()
        while not stopped.done() and time.monotonic() < deadline:
            start = time.monotonic()
            try:
                async with http.get(url) as resp:
                    await resp.read()
                    outcome = str(resp.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                outcome = type(exc).__name__
            sys.stdout.write(f"{start:.6f} {time.monotonic() - start:.6f} {outcome}\n")
            sys.stdout.flush()
            next_at = max(next_at + interval, time.monotonic())
            await asyncio.wait([stopped], timeout=max(0.0, next_at - time.monotonic()))


async def _flood(base: str, seconds: float, password: str, clients: list[tuple[str, str]]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    retry_after: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def one(user: str, address: str) -> None:
        async with http_client(address, cookies=False) as http:
            while time.monotonic() < deadline:
                try:
                    async with http.post(
                        f"{base}/login",
                        json={"username": user, "password": password},
                        headers={"Origin": base},
                        timeout=aiohttp.ClientTimeout(total=max(1.0, deadline - time.monotonic() + 5)),
                    ) as resp:
                        await resp.read()
                        statuses[str(resp.status)] += 1
                        if "Retry-After" in resp.headers:
                            retry_after[resp.headers["Retry-After"]] += 1
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)  # a refused connection must not become a busy loop

    started = time.monotonic()
    await asyncio.gather(*(one(user, address) for user, address in clients))
    return {"seconds": time.monotonic() - started, "statuses": dict(statuses), "retry_after": dict(retry_after)}


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "probe":
        asyncio.run(_probe(argv[1], float(argv[2]) if len(argv) > 2 else 0.02))
        return 0
    if len(argv) >= 4 and argv[0] == "flood":
        clients = [tuple(item.split("@", 1)) for item in argv[4:]]
        print(f"started {time.monotonic():.6f}", flush=True)
        result = asyncio.run(_flood(argv[1], float(argv[2]), argv[3], [(u, a) for u, a in clients]))
        print(json.dumps(result), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
