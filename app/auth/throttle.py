"""Sign-in throttles that stop password guessing without locking out the account's owner.

Before its password is checked, every attempt must find a token in failure buckets chosen by who is asking:

- From a browser whose device cookie (``app.auth.devices``) knows the name: the **device's** bucket only
  (5 failures, one back every 12 s). Guessing at ``alice`` from elsewhere never touches it, so alice's own
  browsers always get in with her password.
- Otherwise: the bucket of the **address and name** (5 failures, one back every 12 s), so one client behind a NAT
  or balancer locks out only itself and only for that name; and the **name**'s bucket across all addresses (10,
  one back every 12 s), which bounds guessing at one account from many addresses to the same long-run rate.

Only failures count: an attempt is let through while its buckets have a token, and a failed one is charged
afterwards (into debt when several were checked at once, so they are all paid for). Right passwords never use up
anything, however often they come. Refusals carry the time until the bucket has a token again (``Retry-After``).
Addresses come from ``app.auth.addresses`` (``TRUSTED_PROXIES``). Buckets live per node in bounded tables
(``app.core.limits.RateLimiter``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import WarrenError
from ..core.limits import RateLimiter, TokenBucket
from .devices import Device

FAILURES_PER_DEVICE = (5, 5 / 60)
FAILURES_PER_ADDRESS_AND_NAME = (5, 5 / 60)
FAILURES_PER_NAME = (10, 5 / 60)


class SignInThrottled(WarrenError):
    """Too many failed sign-ins for this name from here; the message says how long to wait."""

    reason = "too-many-attempts"

    def __init__(self, retry_after: float, *, known_device: bool = False) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        hint = "" if known_device else ", or use a browser you have signed in with before"
        super().__init__(f"too many failed sign-ins: wait {self.retry_after} s{hint}")


@dataclass(frozen=True)
class Attempt:
    """The buckets one attempt is counted in."""

    buckets: tuple[TokenBucket, ...]

    def failed(self) -> None:
        for bucket in self.buckets:
            bucket.charge()


class SignInThrottle:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        burst, rate = FAILURES_PER_DEVICE
        self._by_device = RateLimiter(rate, burst, clock=clock)
        burst, rate = FAILURES_PER_ADDRESS_AND_NAME
        self._by_address_and_name = RateLimiter(rate, burst, clock=clock)
        burst, rate = FAILURES_PER_NAME
        self._by_name = RateLimiter(rate, burst, clock=clock)

    def begin(self, name: str, address: str, device: Device | None) -> Attempt:
        """The buckets for an attempt at ``name``, or ``SignInThrottled`` when one of them is empty."""
        known_device = device is not None and device.knows(name)
        if device is not None and known_device:
            buckets: tuple[TokenBucket, ...] = (self._by_device.bucket(device.id),)
        else:
            buckets = (self._by_address_and_name.bucket(f"{address} {name}"), self._by_name.bucket(name))
        empty = [bucket for bucket in buckets if not bucket.available()]
        if empty:
            raise SignInThrottled(max(bucket.retry_after() for bucket in empty), known_device=known_device)
        return Attempt(buckets)
