"""A TCP relay that adds a fixed delay each way: the broker as seen over a network with that round trip.

Bytes keep their order; each chunk is forwarded ``delay`` seconds after it was read (so a round trip through the
relay costs ``2 * delay`` more than without it). Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib


class LatencyProxy:
    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pipe(client_reader, broker_writer), self._pipe(broker_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, broker_writer):
                writer.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                when, data = await due.get()
                if not data:
                    return
                if (wait := when - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        forwarder = asyncio.ensure_future(forward())
        try:
            while data := await reader.read(65536):
                due.put_nowait((loop.time() + self.delay, data))
            due.put_nowait((loop.time() + self.delay, b""))
            await forwarder
        finally:
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await forwarder
            writer.transport.abort()
