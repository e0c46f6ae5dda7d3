"""A small STOMP-over-SockJS-WebSocket client for tests and benchmarks (a protocol client, not a browser).

It speaks SockJS framing (``o``, ``h``, ``a[...]``, ``c[...]``) over aiohttp's WebSocket client and STOMP 1.2
on top, with the session cookie of a signed-in user.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from app.stomp.frames import Frame, FrameParser, Limits, encode


@dataclass
class Received:
    frames: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    closed: asyncio.Future[tuple[int, str]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


async def sign_in(
    base_url: str, username: str, password: str, *, session: aiohttp.ClientSession | None = None
) -> aiohttp.ClientSession:
    """An aiohttp session holding ``username``'s cookie."""
    session = session or aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.post(f"{base_url}/login", json={"username": username, "password": password}) as response:
        if response.status != 200:
            raise AssertionError(f"sign-in of {username} failed: {response.status} {await response.text()}")
    return session


class StompClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, *, version: str = "1.2") -> None:
        self.http = http
        self.base_url = base_url
        self.version = version
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.received = Received()
        self.connected: Frame | None = None
        self._parser = FrameParser(Limits(max_body=16 * 1024 * 1024))
        self._reader: asyncio.Task[None] | None = None
        self._receipts = 0
        self._early: collections.deque[Frame] = collections.deque()
        #: In a client-ack subscription, ACK every MESSAGE as soon as it is read (what a well-behaved client does).
        self.auto_ack = False

    async def open(self) -> None:
        server = random.randint(0, 999)
        session_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=12))
        url = f"{self.base_url}/chat-websocket/{server:03d}/{session_id}/websocket".replace("http", "ws", 1)
        self.ws = await self.http.ws_connect(url, autoping=True, max_msg_size=0, headers={"Origin": self.base_url})
        opening = await self.ws.receive()
        if opening.type != aiohttp.WSMsgType.TEXT or opening.data != "o":
            raise AssertionError(f"SockJS did not open: {opening}")
        self._reader = asyncio.create_task(self._read())

    async def connect(self, headers: Mapping[str, str] | None = None) -> Frame:
        if self.ws is None:
            await self.open()
        all_headers = {"accept-version": "1.0,1.1,1.2", "host": "warren", "heart-beat": "0,0"}
        all_headers.update(headers or {})
        await self.send_raw(encode("CONNECT", all_headers))
        frame = await self.next_frame()
        if frame.command == "CONNECTED":
            self.connected = frame
            self._parser.version = frame.headers.get("version", "1.0")
        return frame

    async def send_raw(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps([text]))

    async def send_frame(self, command: str, headers: Mapping[str, str], body: bytes = b"") -> None:
        await self.send_raw(encode(command, dict(headers), body, version=self.version))

    async def subscribe(
        self, destination: str = "/user/topic/reply", sub_id: str = "sub-0", ack: str = "auto", *, receipt: bool = True
    ) -> None:
        headers = {"destination": destination, "id": sub_id, "ack": ack}
        if receipt:
            self._receipts += 1
            headers["receipt"] = f"sub-{self._receipts}"
        await self.send_frame("SUBSCRIBE", headers)
        if receipt:
            # Waiting mail arrives before the receipt; keep it for next_frame.
            early: list[Frame] = []
            while True:
                frame = await self.next_frame()
                if frame.command == "RECEIPT" and frame.headers.get("receipt-id") == headers["receipt"]:
                    break
                if frame.command == "ERROR":
                    raise AssertionError(f"SUBSCRIBE refused: {frame.headers} {frame.body!r}")
                early.append(frame)
            self._early.extend(early)

    async def send_chat(self, receiver: str, msg: str, *, receipt: str | None = None) -> None:
        headers = {"destination": "/message/chat", "content-type": "application/json"}
        if receipt:
            headers["receipt"] = receipt
        await self.send_frame("SEND", headers, json.dumps({"receiver": receiver, "msg": msg}).encode())

    async def next_frame(self, timeout: float = 10.0) -> Frame:
        if self._early:
            return self._early.popleft()
        return await asyncio.wait_for(self.received.frames.get(), timeout)

    def take_buffered(self) -> list[Frame]:
        """Every frame received and not yet read, without waiting."""
        frames = list(self._early)
        self._early.clear()
        while not self.received.frames.empty():
            frames.append(self.received.frames.get_nowait())
        return frames

    async def next_message(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            frame = await self.next_frame(timeout)
            if frame.command == "MESSAGE" and frame.headers.get("destination") == "/user/topic/reply":
                data: dict[str, Any] = json.loads(frame.body)
                return data
            if frame.command == "ERROR":
                raise AssertionError(f"ERROR frame: {frame.headers} {frame.body!r}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.data
            if data == "h":
                continue
            if data.startswith("a"):
                for text in json.loads(data[1:]):
                    for frame in self._parser.feed(text.encode()):
                        self.received.frames.put_nowait(frame)
                        if self.auto_ack and frame.command == "MESSAGE" and "ack" in frame.headers:
                            await self.send_frame("ACK", {"id": frame.headers["ack"]})
            elif data.startswith("c"):
                code, reason = json.loads(data[1:])
                if not self.received.closed.done():
                    self.received.closed.set_result((code, reason))
                break
        if not self.received.closed.done():
            self.received.closed.set_result((0, "socket closed"))
