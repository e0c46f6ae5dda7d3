"""Password checks in a bounded worker pool, so scrypt never runs on the event loop.

A check costs ~45 ms of CPU and 16 MiB. ``PasswordPool`` runs them in ``SIGNIN_WORKERS`` threads (scrypt releases
the GIL: see ``app.auth.users``) and admits at most ``SIGNIN_WORKERS + SIGNIN_QUEUE`` checks at a time, of which
one client address may hold at most half. Past that a sign-in is refused at once with ``SignInBusy`` (503,
``Retry-After: 1``) instead of waiting: memory and waiting time stay bounded, and a flood from one address leaves
room for everybody else.

Threads, not processes, and at normal priority — both alternatives were measured with 16 clients signing in
as fast as they could on a loaded 2-core machine (``tests/test_signin_load.py``): worker *processes* at ``nice``
19 gave ``/healthz`` p99 of 11–42 ms against 18–31 ms for threads, but a process pool costs 0.3–2.6 s to start on
that machine, paid by every node (the tests start hundreds); threads at ``nice`` 19 were worse than either (p99 up
to 152 ms): a low-priority thread descheduled while it briefly holds the GIL stalls the event loop with it.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor

from ..core.errors import WarrenError
from .users import PasswordRecord, check_password


class SignInBusy(WarrenError):
    """Too many sign-ins are being checked right now; nothing was checked, retry in a second."""

    reason = "sign-in-busy"
    retry_after: float = 1.0

    def __init__(self) -> None:
        super().__init__("the server is checking many sign-ins right now: try again in a second")


class PasswordPool:
    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.per_address = max(1, self.capacity // 2)
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._by_address: collections.Counter[str] = collections.Counter()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def check(self, address: str, record: PasswordRecord, password: str) -> bool:
        """``check_password`` in a worker; raises ``SignInBusy`` without waiting when the pool is full."""
        if self._in_flight >= self.capacity or self._by_address[address] >= self.per_address:
            raise SignInBusy()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="scrypt")
        self._in_flight += 1
        self._by_address[address] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, check_password, record, password)
        finally:
            self._in_flight -= 1
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
