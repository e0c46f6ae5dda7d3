"""Helpers for the SockJS tests: servers on real loopback sockets, whole HTTP replies, streams and raw requests.

Servers run with ``web.AppRunner`` rather than aiohttp's ``TestServer`` so that the handler-cancellation mode is
chosen by the test: production (``web.run_app``) leaves it off, ``TestServer`` forces it on, and the SockJS layer
must notice vanished clients either way.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from app.stomp.frames import Frame, FrameParser, Limits, encode


@dataclass
class Running:
    url: str
    app: web.Application
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_app(app: web.Application, *, handler_cancellation: bool = False) -> Running:
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Running(f"http://{host}:{port}", app, runner)


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def new_session_url(base: str) -> str:
    """A fresh ``<base>/<server>/<session>`` (what sockjs-client builds for each connection)."""
    return f"{base}/{random.randint(0, 999):03d}/{uuid.uuid4().hex}"


class Http:
    """HTTP for one test; no cookie jar unless asked, so every cookie a test sends is explicit."""

    def __init__(self, *, cookies: bool = False) -> None:
        jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
        self.session = aiohttp.ClientSession(cookie_jar=jar, auto_decompress=False)

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self, method: str, url: str, *, body: bytes | str | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        data = body.encode() if isinstance(body, str) else body
        async with self.session.request(method, url, data=data, headers=dict(headers or {})) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, url: str, **kwargs: Any) -> Reply:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> Reply:
        return await self.request("POST", url, **kwargs)

    async def options(self, url: str, **kwargs: Any) -> Reply:
        return await self.request("OPTIONS", url, **kwargs)

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[Stream]:
        async with self.session.request(method, url, headers=dict(headers or {})) as response:
            yield Stream(response)


class Stream:
    """A streaming response read piece by piece, each read bounded by a deadline."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.response.headers

    async def exactly(self, size: int, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.response.content.readexactly(size), timeout)

    async def until(self, separator: bytes, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.response.content.readuntil(separator), timeout)

    async def ended(self, timeout: float = 5.0) -> bool:
        """True when the server finished the response (nothing more follows)."""
        rest = await asyncio.wait_for(self.response.content.read(), timeout)
        return rest == b""


class RawRequest:
    """An HTTP request on its own socket, closable mid-response (a browser aborting an XHR)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def send(cls, url: str, method: str = "POST", *, version: str = "1.1", headers: str = "") -> RawRequest:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        length = "Content-Length: 0\r\n" if method == "POST" else ""
        writer.write(f"{method} /{path} HTTP/{version}\r\nHost: {hostport}\r\n{length}{headers}\r\n".encode())
        await writer.drain()
        return cls(reader, writer)

    async def head(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)

    async def body(self, timeout: float = 5.0) -> bytes:
        """The body of a response sized by Content-Length (a polling answer)."""
        head = (await self.head(timeout)).decode().lower()
        length = next(int(line.split(":", 1)[1]) for line in head.splitlines() if line.startswith("content-length:"))
        return await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def rest(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (for state with no event to await); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)  # poll interval, not a wait for an outcome


def sockjs_messages(frame: str) -> list[str]:
    """The messages of an ``a[...]`` frame (possibly followed by the transport's newline)."""
    frame = frame.strip()
    assert frame.startswith("a"), frame[:80]
    messages: list[str] = json.loads(frame[1:])
    return messages


class SockJSStomp:
    """STOMP 1.2 over a SockJS HTTP transport, driven from a test (a deterministic stand-in for sockjs-client).

    Messages go out with ``xhr_send``; subclasses receive. ``upstreams`` collects the ``X-Warren-Upstream`` header
    of every answer (set by the test balancer), to check that a whole session stayed on one node.
    """

    def __init__(self, http: Http, base: str, *, origin: str | None = None) -> None:
        self.http = http
        self.url = new_session_url(base)
        self.origin = origin
        self.parser = FrameParser(Limits(max_body=16 * 1024 * 1024))
        self.parser.version = "1.2"
        self.closed: tuple[int, str] | None = None
        self.upstreams: set[str] = set()

    def _headers(self) -> dict[str, str]:
        return {"Origin": self.origin} if self.origin else {}

    def _seen(self, headers: Mapping[str, str]) -> None:
        upstream = headers.get("X-Warren-Upstream")
        if upstream:
            self.upstreams.add(upstream)

    def _frame(self, frame: str) -> list[Frame]:
        """Handle one SockJS frame; the STOMP frames it completed."""
        if frame.startswith("a"):
            frames: list[Frame] = []
            for text in sockjs_messages(frame):
                frames.extend(self.parser.feed(text.encode()))
            return frames
        if frame.startswith("c"):
            code, reason = json.loads(frame[1:])
            self.closed = (code, reason)
        return []

    async def send(self, command: str, headers: Mapping[str, str], body: bytes = b"") -> None:
        payload = json.dumps([encode(command, dict(headers), body)])
        reply = await self.http.post(self.url + "/xhr_send", body=payload, headers=self._headers())
        self._seen(reply.headers)
        assert reply.status == 204, reply

    async def next_frame(self) -> Frame:
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def connect(self) -> Frame:
        await self.open()
        await self.send("CONNECT", {"accept-version": "1.2", "host": "warren", "heart-beat": "0,0"})
        return await self.next_frame()

    async def subscribe(self, ack: str = "auto") -> None:
        await self.send("SUBSCRIBE", {"destination": "/user/topic/reply", "id": "0", "ack": ack, "receipt": "sub"})
        receipt = await self.next_frame()
        assert receipt.command == "RECEIPT", receipt

    async def send_chat(self, receiver: str, msg: str, *, receipt: str | None = None) -> None:
        body = json.dumps({"receiver": receiver, "msg": msg}).encode()
        headers = {"destination": "/message/chat", "content-type": "application/json"}
        if receipt:
            headers["receipt"] = receipt
        await self.send("SEND", headers, body)

    async def next_message(self) -> dict[str, Any]:
        while True:
            frame = await self.next_frame()
            if frame.command == "MESSAGE":
                message: dict[str, Any] = json.loads(frame.body)
                return message
            assert frame.command != "ERROR", frame

    async def close(self) -> None:
        """Leave like a tab that closes: nothing more is requested."""


class PollingStomp(SockJSStomp):
    """xhr-polling, one poll per call: the test decides when the client polls."""

    def __init__(self, http: Http, base: str, *, origin: str | None = None) -> None:
        super().__init__(http, base, origin=origin)
        self.frames: list[Frame] = []

    async def poll(self) -> str:
        reply = await self.http.post(self.url + "/xhr", headers=self._headers())
        self._seen(reply.headers)
        assert reply.status == 200, reply
        frame = reply.text.strip()
        self.frames.extend(self._frame(frame))
        return frame

    async def open(self) -> None:
        assert await self.poll() == "o"

    async def next_frame(self, polls: int = 20) -> Frame:
        for _ in range(polls):
            if self.frames:
                return self.frames.pop(0)
            await self.poll()
            if self.closed is not None and not self.frames:
                raise AssertionError(f"session closed: {self.closed}")
        raise AssertionError(f"no STOMP frame after {polls} polls")


class StreamingStomp(SockJSStomp):
    """xhr-streaming or eventsource: one long response carries every frame as it comes."""

    PRELUDES: ClassVar[dict[str, int]] = {"xhr_streaming": 2049, "eventsource": 2}

    def __init__(self, http: Http, base: str, transport: str, *, origin: str | None = None) -> None:
        super().__init__(http, base, origin=origin)
        assert transport in self.PRELUDES
        self.transport = transport
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.opened = asyncio.Event()
        self._response: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        method = "POST" if self.transport == "xhr_streaming" else "GET"
        self._response = await self.http.session.request(
            method, f"{self.url}/{self.transport}", headers=self._headers()
        )
        self._seen(self._response.headers)
        assert self._response.status == 200, self._response
        await asyncio.wait_for(self._response.content.readexactly(self.PRELUDES[self.transport]), 5)
        self._reader = asyncio.create_task(self._read(self._response))
        await asyncio.wait_for(self.opened.wait(), 5)

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        content = response.content
        while True:
            try:
                raw = await content.readuntil(b"\n" if self.transport == "xhr_streaming" else b"\r\n\r\n")
            except (asyncio.IncompleteReadError, aiohttp.ClientPayloadError, ConnectionError):
                return  # the response ended (response limit or close)
            if not raw:
                return  # aiohttp's readuntil answers b"" at the end of the response
            if self.transport == "xhr_streaming":
                frame = raw.decode().rstrip("\n")
            else:
                frame = raw.decode().removeprefix("data: ")[:-4]
            if frame == "o":
                self.opened.set()
            for stomp in self._frame(frame):
                self.frames.put_nowait(stomp)

    async def next_frame(self, timeout: float = 10.0) -> Frame:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._response is not None:
            self._response.close()


def random_id(length: int = 12) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=length))
