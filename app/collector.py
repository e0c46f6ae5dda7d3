"""The garbage-collector policy of a serving process (``python -m app`` installs it; tests in-process do not).

CPython's full (generation 2) collection visits every tracked object and stops the event loop while it runs:
with 2,000 WebSocket sessions on a node it took 85-125 ms, and during a reconnect storm — when the heap grows
fastest — it runs every few hundred milliseconds, because it triggers on 25% growth of the long-lived heap.

What this does:

* **Freezes what start-up created** (``gc.freeze()``): imported modules, classes, the app and its routes live as
  long as the process, so scanning them in every full collection is wasted time (about 60,000 objects).
* **Postpones full collections during a burst of connection set-up** (while the hub's ``Pacer`` has steps waiting,
  plus ``grace`` seconds): a storm then pays no full-collection pauses; the collection that was due runs once the
  burst is over. Young generations are still collected as usual, so only garbage that is both cyclic and
  long-lived waits, and never longer than ``max_deferral`` seconds: past it full collections are allowed again
  even if the burst goes on.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from .core.pacing import Pacer

log = logging.getLogger(__name__)

#: A generation-2 threshold no count reaches: no automatic full collection while it is set.
_NEVER = 1 << 30


class CollectorPolicy:
    def __init__(self, grace: float = 1.0, max_deferral: float = 30.0) -> None:
        self.grace = grace
        self.max_deferral = max_deferral
        self._thresholds = gc.get_threshold()
        self.deferring = False
        #: Deferred for max_deferral already: no deferring again until a quiet ``grace`` has passed.
        self._exhausted = False
        self._restore_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None

    def install(self, pacer: Pacer) -> None:
        """Call once the application has started (everything it needs is imported and built)."""
        gc.collect()
        gc.freeze()
        pacer.on_burst = self._burst

    def _burst(self, active: bool) -> None:
        loop = asyncio.get_running_loop()
        if active:
            if self._restore_timer is not None:
                self._restore_timer.cancel()
                self._restore_timer = None
            if not self.deferring and not self._exhausted:
                self.deferring = True
                gc.set_threshold(self._thresholds[0], self._thresholds[1], _NEVER)
                self._deadline_timer = loop.call_later(self.max_deferral, self._give_up)
        elif (self.deferring or self._exhausted) and self._restore_timer is None:
            self._restore_timer = loop.call_later(self.grace, self._quiet)

    def _give_up(self) -> None:
        self._deadline_timer = None
        self._exhausted = True
        self._allow()
        log.info("a connection burst outlasted %.0f s: full garbage collections allowed again", self.max_deferral)

    def _quiet(self) -> None:
        self._restore_timer = None
        self._exhausted = False
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._allow()

    def _allow(self) -> None:
        if self.deferring:
            self.deferring = False
            gc.set_threshold(*self._thresholds)
