"""Pacing of connection set-up work, so that a burst of it cannot stall the event loop.

Why: asyncio runs every callback that is ready at the start of a loop iteration before it polls for I/O again.
When 2,000 clients reconnect at once (their node restarted), hundreds of WebSocket upgrades, STOMP ``CONNECT``s
and ``SUBSCRIBE``s become ready in the same iteration; at about a millisecond of CPU each, one iteration ran for
0.3-0.8 s, and everything else on the node — messages already flowing, ``/healthz`` — waited behind it.

A ``Pacer`` is a gate that set-up steps pass through (``await pacer.turn()``). While the loop is quiet a step
passes at once (no extra iteration, no allocation). Once more than ``limit`` steps have passed in one iteration,
later ones queue and are let through, in arrival order, ``limit`` per iteration. ``limit`` adapts to the measured
length of an iteration: it halves when an iteration took longer than ``target_seconds`` and grows by one when it
took less than half of that (additive increase, multiplicative decrease), between 1 and ``max_limit``. So a
burst of set-up work costs the same CPU in total, but is spread over iterations of about ``target_seconds`` each,
between which the loop serves I/O.

Guarantees: first come, first served; a step that was queued is never skipped (a cancelled waiter gives its
place up); the gate never holds a step longer than it takes the steps queued before it to pass. Only the gate's
waiting list grows with a burst, by one future per waiting step, and each waiting step already holds a connection.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    def __init__(
        self,
        target_seconds: float = 0.01,
        *,
        initial_limit: int = 16,
        max_limit: int = 256,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if target_seconds <= 0:
            raise ValueError("target_seconds must be positive")
        self.target_seconds = target_seconds
        self.max_limit = max_limit
        #: Steps let through per loop iteration; adapted by ``_tick``.
        self.limit = max(1, min(initial_limit, max_limit))
        self._clock = clock
        self._waiting: deque[asyncio.Future[None]] = deque()
        #: Steps let through in the current iteration (reset by ``_tick`` at the next one).
        self._passed = 0
        self._ticking = False
        self._last_tick = 0.0
        #: Steps that had to wait, in total (for metrics and tests).
        self.deferred = 0
        #: Told ``True`` when steps start having to wait and ``False`` once the backlog is gone (e.g. to postpone
        #: work that would stall the loop, like a full garbage collection, until the burst is over).
        self.on_burst: Callable[[bool], None] | None = None
        self._bursting = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def turn(self) -> None:
        """Return when this step may run: at once while under the iteration's limit, else in arrival order."""
        if not self._waiting and self._passed < self.limit:
            self._passed += 1
            self._ensure_ticking()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self.deferred += 1
        self._ensure_ticking()
        if not self._bursting:
            self._bursting = True
            if self.on_burst is not None:
                self.on_burst(True)
        await future

    def _ensure_ticking(self) -> None:
        if not self._ticking:
            self._ticking = True
            self._last_tick = self._clock()
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        # Scheduled with call_soon from the previous iteration, so the time since the last tick is the length of
        # one iteration: the quantity the gate keeps near its target.
        now = self._clock()
        iteration = now - self._last_tick
        self._last_tick = now
        if iteration > self.target_seconds:
            self.limit = max(1, self.limit // 2)
        elif iteration < self.target_seconds / 2:
            self.limit = min(self.max_limit, self.limit + 1)
        passed = 0
        while self._waiting and passed < self.limit:
            future = self._waiting.popleft()
            if not future.done():  # a cancelled waiter gives its place up
                future.set_result(None)
                passed += 1
        # Steps released now run in the next iteration; count them against it.
        self._passed = passed
        if self._waiting or passed:
            asyncio.get_running_loop().call_soon(self._tick)
        else:
            self._ticking = False
            if self._bursting:
                self._bursting = False
                if self.on_burst is not None:
                    self.on_burst(False)
