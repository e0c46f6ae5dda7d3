"""Rate limits: token buckets, and a bounded table of them keyed by user, connection or address.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each action takes one. Tables evict the
least recently used key past ``max_keys`` (a full bucket is the same as no entry, so eviction never lets anyone
exceed a limit they were near, it only forgets idle keys first), so an attacker cycling through names or addresses
cannot grow memory without bound. Limits are per node: with N nodes behind a balancer a user's ceiling is N times
the setting, which still bounds abuse while needing no shared state.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> bool:
        """Take a token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def charge(self) -> None:
        """Take a token for an action already done, into debt if need be (at most ``burst`` deep): for limits
        checked with ``available`` before an action whose outcome decides whether it counts, so that concurrent
        actions let through together are still all paid for."""
        self._refill()
        self._tokens = max(-self.burst, self._tokens - 1)

    def available(self) -> bool:
        self._refill()
        return self._tokens >= 1

    def retry_after(self) -> float:
        """Seconds until a token is available."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate


class RateLimiter:
    """Token buckets by key, at most ``max_keys`` of them."""

    def __init__(
        self, rate: float, burst: float, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: str) -> bool:
        return self.bucket(key).take()

    def __len__(self) -> int:
        return len(self._buckets)
