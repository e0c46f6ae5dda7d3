"""A client worker for the scale bench: ``bench.loadgen``'s worker with every socket on one loopback source address.

``python -m bench.scale_loadgen 127.0.0.3`` speaks the same JSON command protocol as ``bench.loadgen`` (stdin in,
stdout out, one line each), with the same clients, plus:

* its TCP connections start from the given source address (127.0.0.2, 127.0.0.3, …), so that the ephemeral ports
  of one address never run out however many sessions the bench opens: one (source address, port) pair per socket,
  about 28,000 ports per address on Linux's default range;
* ``retarget``: the URL clients reconnect to (the storm points them at the node that stays up);
* ``fds``: how many file descriptors this process holds, and its limit.

Its soft limit on open files is raised to the hard one at start (``ulimit -Hn``; 20,000 on the bench machines).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from typing import Any

import aiohttp

from . import loadgen
from .commands import serve_commands
from .common import raise_nofile


class SourceWorker(loadgen.Worker):
    async def use_source(self, source: str) -> None:
        old = self.http
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False, local_addr=(source, 0)),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        await old.close()

    async def cmd_retarget(self, url: str) -> dict[str, Any]:
        for client in self.clients:
            client.url = url
        return {"clients": len(self.clients)}

    async def cmd_fds(self) -> dict[str, Any]:
        return {"fds": len(os.listdir("/proc/self/fd")), "limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


async def main(source: str) -> None:
    raise_nofile(1 << 20)
    worker = SourceWorker()
    await worker.use_source(source)
    try:
        await serve_commands(worker, line_limit=256 * 1024 * 1024)
    finally:
        await worker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"))
