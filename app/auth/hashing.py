"""Password checks in a bounded pool of worker processes, so scrypt never runs on the event loop.

A check costs ~45 ms of CPU and 16 MiB. ``PasswordPool`` sends them to ``SIGNIN_WORKERS`` worker processes and
admits at most ``SIGNIN_WORKERS + SIGNIN_QUEUE`` checks at a time, of which one client address may hold at most
half. Past that a sign-in is refused at once with ``SignInBusy`` (503, ``Retry-After: 1``) instead of waiting:
memory and waiting time stay bounded, and a flood from one address leaves room for everybody else.

Processes, at the lowest CPU priority (``nice`` 19), rather than threads: scrypt releases the GIL (measured: a
Python thread kept 28–80% of a core alongside a 2^17 scrypt in another thread, 1–2% beside pure-Python work), but
a hashing thread still takes the GIL for a moment around each check, and on a busy machine a CPU-heavy thread
descheduled while holding it stalls the event loop until it runs again. Measured with 16 clients signing in as
fast as they could on a 2-core machine at load 9–14 (``tests/test_signin_load.py``, 3 runs each, alternating):
``/healthz`` median 1.2–7.3 ms and p99 36–84 ms with processes, median 10.6–15.7 ms and p99 128–385 ms with
threads. Worker processes share nothing with the loop; their results come back through the executor's own light
thread.

The processes are forked from a ``forkserver`` that has imported only the hashing code, once per Warren process
and shared by every application in it (the tests run many), and are replaced if one dies. The forkserver and the
workers die with their parent even when it is killed outright (``app.auth.orphans``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..core.errors import WarrenError
from .orphans import die_with_parent
from .users import PasswordRecord, check_password

#: Niceness of the hashing processes: they wait whenever anything else on the machine has work.
WORKER_NICENESS = 19

_executors: dict[int, ProcessPoolExecutor] = {}


class SignInBusy(WarrenError):
    """Too many sign-ins are being checked right now; nothing was checked, retry in a second."""

    reason = "sign-in-busy"
    retry_after: float = 1.0

    def __init__(self) -> None:
        super().__init__("the server is checking many sign-ins right now: try again in a second")


def _prepare_worker() -> None:
    die_with_parent()  # the parent is the forkserver, which dies with the node
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICENESS)


def _executor(workers: int) -> ProcessPoolExecutor:
    executor = _executors.get(workers)
    if executor is None:
        context: multiprocessing.context.BaseContext
        if "forkserver" in multiprocessing.get_all_start_methods():
            forkserver = multiprocessing.get_context("forkserver")
            forkserver.set_forkserver_preload(["app.auth.orphans", "app.auth.users"])
            context = forkserver
        else:
            context = multiprocessing.get_context("spawn")
        executor = _executors[workers] = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_prepare_worker
        )
    return executor


def _discard(workers: int, executor: ProcessPoolExecutor) -> None:
    if _executors.get(workers) is executor:
        del _executors[workers]
        executor.shutdown(wait=False, cancel_futures=True)


class PasswordPool:
    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.per_address = max(1, self.capacity // 2)
        self._in_flight = 0
        self._by_address: collections.Counter[str] = collections.Counter()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        """Start the workers now rather than at the first sign-in (which would wait for them)."""
        executor = _executor(self.workers)
        await asyncio.gather(
            *(asyncio.get_running_loop().run_in_executor(executor, os.getpid) for _ in range(self.workers))
        )

    async def check(self, address: str, record: PasswordRecord, password: str) -> bool:
        """``check_password`` in a worker; raises ``SignInBusy`` without waiting when the pool is full."""
        if self._in_flight >= self.capacity or self._by_address[address] >= self.per_address:
            raise SignInBusy()
        self._in_flight += 1
        self._by_address[address] += 1
        executor = _executor(self.workers)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, check_password, record, password)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the next check gets a new pool; this one may retry.
            _discard(self.workers, executor)
            raise SignInBusy() from None
        finally:
            self._in_flight -= 1
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]
