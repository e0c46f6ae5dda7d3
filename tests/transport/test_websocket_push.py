"""WebSocket sessions are written from the event loop, not by a task per session (issue 7).

What ``app.transport.websocket`` and the manager's flush promise: frames queued in one loop tick leave as one
WebSocket frame, in order; a connection that stops reading holds its frames in the session (flow control) and gets
them all, in order, once it reads again; heart-beats come from the manager's sweep; an idle session holds no task,
timer, event or lock of its own; the frames Warren writes by hand are valid WebSocket frames at every length.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Callable

import pytest
from yarl import URL

import app.transport
from app.conformance import MANAGERS
from app.keys import SOCKJS
from app.transport.manager import SessionManager
from app.transport.session import Session
from app.transport.websocket import WebSocketReceiver, text_frame
from tests.support.stomp_client import StompClient
from tests.transport.conftest import ServerFactory
from tests.transport.support import Http, eventually, new_session_url, random_id
from tests.transport.test_sockjs_protocol import ws_url
from tests.transport.test_warren_sockjs import websocket_user


def only_session(manager: SessionManager[Session]) -> Session:
    [session] = manager.sessions.values()
    return session


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frames_carry_the_length_in_the_shortest_form(length: int) -> None:
    frame = text_frame(b"x" * length)
    assert frame[0] == 0x81  # FIN, text, unmasked
    if length < 126:
        assert frame[1] == length and len(frame) == 2 + length
    elif length < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == length and len(frame) == 4 + length
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == length and len(frame) == 10 + length


@pytest.mark.parametrize("length", [1, 125, 126, 16_383, 16_384, 65_535, 65_536, 200_000])
async def test_messages_of_every_length_arrive_whole(conformance: str, http: Http, length: int) -> None:
    """Framed and raw: the hand-written frames are read back by aiohttp's client at each length boundary."""
    text = ("é" * length)[:length]
    async with http.session.ws_connect(ws_url(new_session_url(f"{conformance}/echo")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        await ws.send_str(json.dumps([text], ensure_ascii=False))
        reply = await ws.receive_str(timeout=5)
        assert json.loads(reply[1:]) == [text]
    async with http.session.ws_connect(ws_url(f"{conformance}/echo/websocket")) as raw:
        await raw.send_str(text)
        assert await raw.receive_str(timeout=5) == text


async def test_no_compression_is_negotiated(conformance: str, http: Http) -> None:
    url = ws_url(new_session_url(f"{conformance}/echo")) + "/websocket"
    async with http.session.ws_connect(url, compress=15) as ws:
        assert ws.compress == 0
        assert await ws.receive_str(timeout=5) == "o"


async def test_frames_queued_in_one_tick_leave_in_one_frame_in_order(
    conformance_factory: ServerFactory, http: Http
) -> None:
    server = await conformance_factory()
    manager = server.app[MANAGERS]["/echo"]
    async with http.session.ws_connect(ws_url(new_session_url(f"{server.url}/echo")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        session = only_session(manager)
        for text in ("one", "two", "three"):
            session.send(text)
        assert await ws.receive_str(timeout=5) == 'a["one","two","three"]'
        session.send("four")
        assert await ws.receive_str(timeout=5) == 'a["four"]'
        assert session.queued_bytes() == 0


async def read_text_frame(reader: asyncio.StreamReader) -> str:
    """One server frame off a raw socket: FIN + text, unmasked, 7/16/64-bit length."""
    first, second = await reader.readexactly(2)
    assert first == 0x81 and not second & 0x80, (first, second)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return (await reader.readexactly(length)).decode()


async def test_a_connection_that_stops_reading_holds_its_frames_until_it_drains(
    conformance_factory: ServerFactory,
) -> None:
    """Flow control: past the transport's high-water mark nothing more is written; the frames wait in the session
    (where SEND_BUFFER_BYTES bounds them) and all arrive, in order, when the client reads again."""
    server = await conformance_factory()
    manager = server.app[MANAGERS]["/echo"]
    url = URL(server.url)
    # A raw client with a small receive buffer, so that it stops taking bytes exactly when it stops reading.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(
            f"GET /echo/000/{random_id()}/websocket HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\r\n".encode()
        )
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        assert await read_text_frame(reader) == "o"
        session = only_session(manager)
        transport = writer.transport
        transport.pause_reading()
        chunk = "x" * 10_000
        sent = 0
        while session.queued_bytes() == 0 and sent < 2000:
            session.send(f"{sent:05d}{chunk}")
            sent += 1
            await asyncio.sleep(0)
        assert session.queued_bytes() > 0, "the connection never pushed back"
        assert session in manager._held
        for _ in range(20):
            session.send(f"{sent:05d}{chunk}")
            sent += 1
        await asyncio.sleep(0.2)
        # Nobody reads: the frames stay with the session, and no heart-beat or retry is written meanwhile.
        assert session.queued_bytes() >= 20 * len(chunk) and session in manager._held
        transport.resume_reading()
        received: list[int] = []
        while len(received) < sent:
            frame = await asyncio.wait_for(read_text_frame(reader), 10)
            assert frame.startswith("a"), frame[:20]
            received.extend(int(text[:5]) for text in json.loads(frame[1:]))
        assert received == list(range(sent))
        await eventually(lambda: session not in manager._held, "the drained connection to be released")
        assert session.queued_bytes() == 0
    finally:
        writer.close()


async def test_heartbeats_come_from_the_sweep(conformance_factory: ServerFactory, http: Http) -> None:
    server = await conformance_factory(heartbeat_seconds=0.2)
    async with http.session.ws_connect(ws_url(new_session_url(f"{server.url}/echo")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await ws.receive_str(timeout=2) == "h"
        assert await ws.receive_str(timeout=2) == "h"
        # Two heart-beats, each after 0.2 s of silence (the sweep runs every 0.05 s).
        assert 0.35 <= loop.time() - started < 3
        await ws.send_str('["x"]')
        assert await ws.receive_str(timeout=2) == 'a["x"]'


async def test_streaming_transports_still_get_heartbeats(conformance_factory: ServerFactory, http: Http) -> None:
    server = await conformance_factory(heartbeat_seconds=0.2)
    url = new_session_url(f"{server.url}/echo")
    async with http.stream("POST", url + "/xhr_streaming") as stream:
        await stream.exactly(2049)
        assert await stream.until(b"\n") == b"o\n"
        assert await stream.until(b"\n") == b"h\n"


async def test_the_application_hears_of_a_closed_websocket_before_the_handler_returns(
    conformance_factory: ServerFactory, http: Http
) -> None:
    server = await conformance_factory()
    manager = server.app[MANAGERS]["/echo"]
    async with http.session.ws_connect(ws_url(new_session_url(f"{server.url}/echo")) + "/websocket") as ws:
        assert await ws.receive_str(timeout=5) == "o"
        session = only_session(manager)
        receiver = session.receiver
        assert isinstance(receiver, WebSocketReceiver)
    await eventually(lambda: session.ended and not manager.sessions, "the session to end with its connection")
    assert session.receiver is None


async def test_an_idle_websocket_session_holds_no_task_timer_event_or_lock(
    warren_factory: ServerFactory, make_user: Callable[[str], str], clients: list[StompClient]
) -> None:
    """Per idle session: no writer task, no heart-beat timer, no asyncio event or lock of Warren's (they are made
    when something waits). What remains is aiohttp's: the connection's task and the request handler's."""
    node = await warren_factory()
    users = [make_user(f"idle{i}") for i in range(3)]
    for user in users:
        await websocket_user(node, user, clients)
    await asyncio.sleep(0.1)
    manager = node.app[SOCKJS]
    sessions = list(manager.sessions.values())
    assert len(sessions) == len(users)
    for session in sessions:
        assert session.stomp is not None
        assert (session._wakeup, session._flushed, session._expiry) == (None, None, None)
        assert (session.stomp._lock, session.stomp._progress, session.stomp._timer) == (None, None, None)
        assert isinstance(session.receiver, WebSocketReceiver)
    transport_code = os.path.dirname(app.transport.__file__)
    coroutines = [task.get_coro() for task in asyncio.all_tasks()]
    own = [
        getattr(coroutine, "__qualname__", "")
        for coroutine in coroutines
        if getattr(getattr(coroutine, "cr_code", None), "co_filename", "").startswith(transport_code)
    ]
    assert own == ["SessionManager._sweep"]

