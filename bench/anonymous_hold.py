"""How much of a node anonymous clients can hold: N cookieless SockJS WebSocket connections, RSS after a wait.

    python -m bench.anonymous_hold [--connections 3000] [--wait 30]

Starts one node (``python -m app``, memory backplane, loopback only) as a child process, opens the connections
without any cookie (as a script would), keeps reading each one, and after ``--wait`` seconds reports the node's
resident memory and how many connections the node still holds open. The node is ended by its PID. Not part of
``make test`` (it takes ``--wait`` seconds and thousands of sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from tests.support.processes import ROOT, free_port, stop_process, wait_http_ok


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def hold(url: str, count: int, wait: float) -> tuple[int, int]:
    """Open ``count`` connections; return (opened, still open after ``wait``)."""
    ws_base = url.replace("http", "ws", 1) + "/chat-websocket"
    connector = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(connector=connector)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _message in ws:
            pass  # answers the close handshake like a client that reads; the socket stays as long as the node wants

    async def one() -> None:
        ws = await http.ws_connect(f"{ws_base}/000/{uuid.uuid4().hex[:12]}/websocket", headers={"Origin": url})
        sockets.append(ws)
        readers.append(asyncio.create_task(read(ws)))

    for start in range(0, count, 100):
        await asyncio.gather(*(one() for _ in range(min(100, count - start))), return_exceptions=True)
    opened = len(sockets)
    await asyncio.sleep(wait)  # the measured interval itself
    still_open = sum(1 for ws in sockets if not ws.closed)
    for task in readers:
        task.cancel()
    await http.close()
    return opened, still_open


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--wait", type=float, default=30.0)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "node.log"
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "USERS_FILE": str(Path(tmp) / "users.json"),
            "LOG_LEVEL": "WARNING",
            "NODE_ID": "anon-hold",
        }
        env.pop("AMQP_URL", None)
        env.pop("CLOUDAMQP_URL", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(process, f"{url}/readyz", 30.0, log_path)
            before = rss_mib(process.pid)
            started = time.monotonic()
            opened, still_open = asyncio.run(hold(url, args.connections, args.wait))
            after = rss_mib(process.pid)
            print(
                json.dumps(
                    {
                        "connections": args.connections,
                        "opened": opened,
                        "still_open_after_wait": still_open,
                        "wait_s": args.wait,
                        "elapsed_s": round(time.monotonic() - started, 1),
                        "rss_idle_mib": round(before, 1),
                        "rss_after_wait_mib": round(after, 1),
                    }
                )
            )
        finally:
            stop_process(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
