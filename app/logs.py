"""A bound on log lines per message template, so that no client can flood the log.

Why: many log lines are caused by what a client sends (a malformed frame, a refused sign-in, a session that
ends badly), and each costs the node a write to stderr and the operator log storage. One anonymous client
wrote about 4,000 lines a second.

``LogFlood`` is a ``logging.Filter`` for the handler ``configure_logging`` installs. Records are counted per
(logger, level, message template): the template is ``record.msg`` before its arguments are filled in, so
"STOMP error for %s (%s): %s: %s" is one key whoever the client was. Each key has a token bucket (``rate`` a
second, ``burst`` above it); past it records are dropped and counted. Every ``report_every`` seconds (with the
next line the node logs) each template that had lines dropped gets one WARNING line, "N similar log lines
suppressed: <template>".

Guarantees: a line of a template that is not flooding is never dropped; every dropped line is counted in a
later summary line (unless the process ends first); the table of keys is bounded (``max_keys``, least recently
used forgotten first), so varying templates cannot grow memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .core.limits import RateLimiter

#: Lines per second, and the burst above it, that one message template may write.
LOG_RATE = 10.0
LOG_BURST = 100
#: How often dropped lines are reported (with the next line logged).
REPORT_EVERY = 10.0


class LogFlood(logging.Filter):
    def __init__(
        self,
        handler: logging.Handler,
        *,
        rate: float = LOG_RATE,
        burst: int = LOG_BURST,
        report_every: float = REPORT_EVERY,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.report_every = report_every
        self._clock = clock
        self._buckets = RateLimiter(rate, burst, max_keys=max_keys, clock=clock)
        self._max_dropped = max_keys
        #: Dropped lines per key since the last report: key -> (count, a record of that key).
        self._dropped: dict[str, tuple[int, logging.LogRecord]] = {}
        self._last_report = clock()
        #: Lines dropped in total (for tests).
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("log_flood_summary"):
            return True
        if self._dropped and self._clock() - self._last_report > self.report_every:
            self.report()
        key = f"{record.name}\x00{record.levelno}\x00{record.msg}"
        if self._buckets.take(key):
            return True
        count, _ = self._dropped.get(key, (0, record))
        self._dropped[key] = (count + 1, record)
        self.suppressed += 1
        if len(self._dropped) > self._max_dropped:
            self.report()  # bounded: report everything now rather than grow
        return False

    def report(self) -> None:
        """Write one summary line per template that had lines dropped since the last report."""
        self._last_report = self._clock()
        dropped, self._dropped = self._dropped, {}
        for count, record in dropped.values():
            self._report(count, record)

    def _report(self, count: int, example: logging.LogRecord) -> None:
        summary = logging.LogRecord(
            example.name,
            logging.WARNING,
            example.pathname,
            example.lineno,
            "%d similar log lines suppressed: %s",
            (count, str(example.msg)),
            None,
        )
        summary.__dict__["log_flood_summary"] = True
        self.handler.handle(summary)


def install(handler: logging.Handler) -> LogFlood:
    """Bound ``handler``'s lines per message template (``configure_logging`` does this for the node's log)."""
    flood = LogFlood(handler)
    handler.addFilter(flood)
    return flood
