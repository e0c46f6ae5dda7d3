"""Sign-in: a typed name and password in, the stored name out, with the throttles and the worker pool between.

Order of work, cheapest first, so that nothing a client sends reaches scrypt unthrottled: resolve the name (as
``users add`` stores it), count the attempt in its failure buckets (``app.auth.throttle``; refused: 429), take a
place in the password pool (``app.auth.hashing``; full: 503), check the password in a worker thread. An unknown
or invalid name is checked against a decoy record, so it costs and answers the same as a wrong password.
"""

from __future__ import annotations

from ..core.identity import MAX_USERNAME_LENGTH
from .devices import Device
from .hashing import PasswordPool
from .throttle import SignInThrottle
from .users import UserDirectory

#: Longer passwords are refused before hashing (scrypt's first pass is linear in the password's length).
MAX_PASSWORD_CHARS = 1024


class SignIn:
    def __init__(self, directory: UserDirectory, *, workers: int, queue: int) -> None:
        self.directory = directory
        self.pool = PasswordPool(workers, queue)
        self.throttle = SignInThrottle()

    async def attempt(self, typed: str, password: str, address: str, device: Device | None) -> str | None:
        """The signed-in name, or None for a wrong name or password.

        Raises ``SignInThrottled`` or ``SignInBusy``; neither has checked or counted anything."""
        name = self.directory.resolve(typed)
        counted = self.throttle.begin(name or typed[: MAX_USERNAME_LENGTH * 2], address, device)
        record = None if name is None else self.directory.record(name)
        matches = await self.pool.check(address, record or self.directory.decoy, password)
        if not matches or record is None or name is None:
            counted.failed()
            return None
        return name

    async def start(self) -> None:
        await self.pool.start()
