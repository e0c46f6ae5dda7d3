"""The second peer: Socket.IO 4 on Node.js with ``@socket.io/redis-adapter`` (``bench/peer_node/server.js``).

Its clients are the bench's Socket.IO clients (``bench.loadgen``, kind ``sio``): the same Engine.IO 4 / Socket.IO 5
protocol as the python-socketio peer. The nodes talk through the local Redis (``BENCH_REDIS_URL``, default
127.0.0.1:6379) on channels under a key of the run's own (``bench-sionode-<run>``), so nothing is left in Redis
afterwards (pub/sub keeps no state). ``make bench`` installs the npm packages (``npm ci`` in ``bench/peer_node``);
without Node.js or without them the system is skipped with a note saying so.

Broker deliveries per message: each node counts the adapter messages its pattern subscription receives
(``/stats`` ``adapter_arrivals``); their sum over the nodes divided by the messages sent is how many nodes each
message reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .common import ROOT, Child, free_port

PEER_DIR = ROOT / "bench" / "peer_node"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


def unavailable() -> str | None:
    """Why the Node peer cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (apt-get install nodejs npm)"
    if not (PEER_DIR / "node_modules" / "socket.io").is_dir():
        return "its npm packages are missing (make bench, or: cd bench/peer_node && npm ci)"
    return None


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    import subprocess

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        return out.lstrip("v") or None
    return None


def package_version(name: str) -> str | None:
    import json

    path = PEER_DIR / "node_modules" / name / "package.json"
    with contextlib.suppress(OSError, ValueError):
        version: str = json.loads(path.read_text())["version"]
        return version
    return None


def sionode_node(node_id: str, workdir: Path, key: str) -> Child:
    port = free_port()
    node = shutil.which("node") or "node"
    env = dict(os.environ, PORT=str(port), REDIS_URL=REDIS_URL, SIO_KEY=key, NODE_ENV="production")
    return Child(f"sionode:{node_id}", [node, str(PEER_DIR / "server.js")], env, workdir / f"{node_id}.log", port)


def redis_pid() -> int | None:
    """The local redis-server (for its CPU, like beam.smp for RabbitMQ)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "redis-server":
                    return int(entry)
        except OSError:
            continue
    return None


async def node_stats(nodes: Sequence[Child]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def one(node: Child) -> dict[str, Any]:
            async with http.get(node.url + "/stats") as resp:
                data: dict[str, Any] = await resp.json()
                return data

        return list(await asyncio.gather(*(one(n) for n in nodes)))


async def adapter_arrivals(nodes: Sequence[Child]) -> int:
    """Adapter messages received from Redis, summed over ``nodes`` (read twice 0.5 s apart until they agree)."""
    last = -1
    for _ in range(20):
        total = sum(int(s.get("adapter_arrivals", 0)) for s in await node_stats(nodes))
        if total == last:
            return total
        last = total
        await asyncio.sleep(0.5)
    return last
