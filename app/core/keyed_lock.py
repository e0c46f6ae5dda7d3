"""One ``asyncio.Lock`` per key, alive only while someone holds or waits for it.

Used by the hub (bind, drain and unbind of one user never interleave) and by the RabbitMQ backplane (per-user
binding calls, per-receiver mailbox creation). Memory is bounded by the keys in use: a key's lock is dropped
when its last holder or waiter leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLock:
    """``async with locks.hold(key):`` serialises everyone holding the same key, in arrival order."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def busy(self, key: str) -> bool:
        """Whether anyone holds or waits for ``key``'s lock."""
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
