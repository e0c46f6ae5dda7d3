"""A ``/healthz`` prober in its own process (``python -m bench.probe``), driven like ``bench.loadgen``.

Commands (JSON lines on stdin, answers on stdout): ``start`` {url, interval, timeout} begins one GET every
``interval`` seconds (the next one waits for the last: a probe measures what a balancer's health check would see,
not a flood), ``stop`` ends it and answers ``samples``: ``[[monotonic send time, seconds or null], …]`` where null
is a probe that failed or took longer than ``timeout``. In a process of its own so that the orchestrator's own
work (parsing management API answers of thousands of bindings) never delays a probe or inflates its latency.
A probe runs for at most ``max_seconds`` (default 600) and then stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from .commands import serve_commands


class Prober:
    def __init__(self) -> None:
        self.samples: list[list[float | None]] = []
        self.task: asyncio.Task[None] | None = None

    async def cmd_start(
        self, url: str, interval: float = 0.05, timeout: float = 5.0, max_seconds: float = 600
    ) -> dict[str, Any]:
        self.samples = []
        self.task = asyncio.create_task(self._run(url, interval, timeout, max_seconds))
        return {"ok": True}

    async def _run(self, url: str, interval: float, timeout: float, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            while time.monotonic() < deadline:
                started = time.monotonic()
                took: float | None = None
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with http.get(url) as resp:
                        await resp.read()
                        if resp.status == 200:
                            took = time.monotonic() - started
                self.samples.append([started, took])
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def cmd_stop(self) -> dict[str, Any]:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        return {"samples": self.samples}


async def main() -> None:
    prober = Prober()
    await serve_commands(prober, line_limit=16 * 1024 * 1024)
    await prober.cmd_stop()


if __name__ == "__main__":
    asyncio.run(main())
