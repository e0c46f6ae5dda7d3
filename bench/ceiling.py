"""The broker-path ceiling: raw aio-pika, publish with confirms → one topic exchange → one queue → consume.

Two processes, driven like the client workers (JSON commands on stdin, answers on stdout):
``python -m bench.ceiling pub`` publishes persistent, mandatory 200-byte messages with publisher confirms (as
Warren's backplane does) and ``python -m bench.ceiling sub`` consumes them from an exclusive queue bound to the
exchange, prefetch 256, one ack per message. The body carries the send time, so the consumer measures latency;
closed-loop runs count deliveries in shared memory, exactly like the chat runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from .commands import serve_commands
from .loadgen import STATS, _sleep_until, content_for, monotonic_ns

EXCHANGE = os.environ.get("CEILING_EXCHANGE", "bench.ceiling")
QUEUE = os.environ.get("CEILING_QUEUE", "bench.ceiling.q")
ROUTING_KEY = "user.bench-ceiling"
PREFETCH = 256
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class Publisher:
    def __init__(self) -> None:
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.exchanges: dict[bool, aio_pika.abc.AbstractExchange] = {}
        self.shm: shared_memory.SharedMemory | None = None
        self.errors = 0

    async def cmd_start(self) -> dict[str, Any]:
        self.connection = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "bench-ceiling-pub"})
        for confirms in (True, False):
            channel = await self.connection.channel(publisher_confirms=confirms)
            self.exchanges[confirms] = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=False, auto_delete=False
            )
        return {"ok": True}

    async def cmd_attach_shm(self, name: str) -> dict[str, Any]:
        self.shm = shared_memory.SharedMemory(name=name)
        with contextlib.suppress(Exception):
            resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
        STATS.delivered = self.shm.buf.cast("q")
        return {"ok": True}

    def _message(self, t_ns: int, seq: int) -> aio_pika.Message:
        return aio_pika.Message(
            content_for(t_ns, 0, seq).encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="text/plain",
        )

    async def cmd_saturate(
        self, start_at: float, warmup: float, duration: float, window: int, confirms: bool = True, publishers: int = 200
    ) -> dict[str, Any]:
        """``publishers`` coroutines publish one after another (each awaiting its confirm, when confirms are on)
        while fewer than ``window`` messages are sent but not yet consumed."""
        assert STATS.delivered is not None
        delivered = STATS.delivered
        exchange = self.exchanges[confirms]
        base = delivered[0]
        sent = 0
        end = start_at + warmup + duration
        await _sleep_until(start_at)

        async def publisher() -> None:
            nonlocal sent
            while time.monotonic() < end:
                if sent - (delivered[0] - base) >= window:
                    await asyncio.sleep(0.001)
                    continue
                seq = sent
                sent += 1
                try:
                    await exchange.publish(self._message(monotonic_ns(), seq), ROUTING_KEY, mandatory=True)
                except Exception:
                    self.errors += 1
                    delivered[0] += 1  # keep the window honest

        await asyncio.gather(*(publisher() for _ in range(publishers)))
        return {"sent": sent, "errors": self.errors}

    async def cmd_paced(self, start_at: float, rate: float, warmup: float, duration: float) -> dict[str, Any]:
        exchange = self.exchanges[True]
        total = int(rate * (warmup + duration))
        start_ns = int(start_at * 1e9)
        interval = 1e9 / rate
        pending: set[asyncio.Task[Any]] = set()
        await _sleep_until(start_at)
        i = 0
        while i < total:
            now = monotonic_ns()
            due = start_ns + int(i * interval)
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                continue
            while i < total and start_ns + int(i * interval) <= now:
                due = start_ns + int(i * interval)
                task = asyncio.ensure_future(exchange.publish(self._message(due, i), ROUTING_KEY, mandatory=True))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return {"sent": i}

    async def shutdown(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        STATS.delivered = None
        if self.shm is not None:
            with contextlib.suppress(Exception):
                self.shm.close()


class Consumer:
    def __init__(self) -> None:
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.shm: shared_memory.SharedMemory | None = None

    async def cmd_start(self) -> dict[str, Any]:
        self.connection = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "bench-ceiling-sub"})
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=PREFETCH)
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=False)
        queue = await channel.declare_queue(QUEUE, exclusive=True, durable=False)
        await queue.bind(exchange, ROUTING_KEY)
        await queue.consume(self._on_message, no_ack=False)
        return {"ok": True}

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        STATS.on_content(message.body[:70].decode())
        await message.ack()

    async def cmd_attach_shm(self, name: str) -> dict[str, Any]:
        self.shm = shared_memory.SharedMemory(name=name)
        with contextlib.suppress(Exception):
            resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
        STATS.delivered = self.shm.buf.cast("q")
        return {"ok": True}

    async def cmd_measure(self, start_at: float, warmup: float, duration: float) -> dict[str, Any]:
        """Count deliveries in the window and record latencies of messages sent in it."""
        t_window = start_at + warmup
        t_end = t_window + duration
        STATS.window = (int(t_window * 1e9), int(t_end * 1e9))
        STATS.latencies = []
        await _sleep_until(t_window)
        first = (STATS.received, time.monotonic())
        await _sleep_until(t_end)
        last = (STATS.received, time.monotonic())
        # Stragglers of the window still count for latency.
        previous = -1
        for _ in range(30):
            await asyncio.sleep(0.1)
            if STATS.received == previous:
                break
            previous = STATS.received
        lat = STATS.latencies
        STATS.window = None
        return {"received": last[0] - first[0], "seconds": last[1] - first[1], "lat_us": [x // 1000 for x in lat]}

    async def shutdown(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        STATS.delivered = None
        if self.shm is not None:
            with contextlib.suppress(Exception):
                self.shm.close()


async def main(role: str) -> None:
    worker: Publisher | Consumer = Publisher() if role == "pub" else Consumer()
    try:
        await serve_commands(worker, line_limit=64 * 1024 * 1024)
    finally:
        await worker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
