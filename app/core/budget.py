"""A share of the event loop for work driven by client input, so that no input can stall the node.

Why: asyncio runs a task until it awaits something that is not ready. Parsing and handling a SockJS batch often
awaits nothing at all (thousands of tiny messages, tens of thousands of ACK frames), so one batch could run for
seconds while every other connection and ``/healthz`` waited.

``LoopBudget.spend()`` is called between the parts of such work (after each SockJS message, after each STOMP
frame). It costs one clock read while the current slice is young. Once the input work run since the slice began
exceeds ``slice_seconds`` it yields to the loop (``asyncio.sleep(0)``): the loop polls for I/O and runs what
became ready before the batch continues.

The slice belongs to the loop iteration, not to the caller: every task that spends after the slice is used up
yields in that iteration, and a new slice starts only when the loop comes round again (a callback scheduled by
the first task that yielded). So however many connections send big batches at once, input work takes about
``slice_seconds`` (plus one part) per loop iteration, never one slice per connection.

Guarantees: order is kept (a caller that yields resumes before any later input of its own is handled, since its
callers await it); nothing is dropped; a caller never waits for more than the loop iterations the other ready
work needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Input work allowed per loop iteration before it yields (a tenth of the 50 ms a node may be unresponsive).
SLICE_SECONDS = 0.005


class LoopBudget:
    def __init__(self, slice_seconds: float = SLICE_SECONDS, clock: Callable[[], float] = time.perf_counter) -> None:
        if slice_seconds <= 0:
            raise ValueError("slice_seconds must be positive")
        self.slice_seconds = slice_seconds
        self._clock = clock
        self._slice_started = clock()
        #: The loop on which a new slice is scheduled to start, if any (tests run several loops in one process).
        self._renewing: asyncio.AbstractEventLoop | None = None
        #: How many times input work yielded (for tests and metrics).
        self.yields = 0

    def due(self) -> bool:
        """True when the current slice is used up: the caller should ``await spend()`` (or ``pause()``)."""
        return self._clock() - self._slice_started > self.slice_seconds

    async def spend(self) -> None:
        """Yield to the event loop if this iteration's slice of input work is used up."""
        if self._clock() - self._slice_started > self.slice_seconds:
            await self.pause()

    async def pause(self) -> None:
        loop = asyncio.get_running_loop()
        if self._renewing is not loop:
            self._renewing = loop
            # Scheduled before this task's own wake-up: the new slice starts at the next iteration.
            loop.call_soon(self._renew)
        self.yields += 1
        await asyncio.sleep(0)

    def _renew(self) -> None:
        self._renewing = None
        self._slice_started = self._clock()


#: The process's budget: one event loop serves every connection.
INPUT_BUDGET = LoopBudget()
