"""Mail on its way back to a user's mailbox, in order: what their connections had not received or acknowledged
when they left, and live mail that arrives for them meanwhile.

Guarantees:

* **Per user, in order.** Envelopes queued for one user are stored one after another in the order they were
  queued, by one task per user that exists only while something is queued; a live envelope for a user with
  returns under way (``store``) queues behind them, so it cannot overtake older mail.
* **Waiting is shared, never cancelling.** ``flushed`` returns once everything queued for the user so far is
  stored; a caller cancelled while waiting does not stop the store.
* What the backplane refuses to store on the way back (a full mailbox, the broker away) is logged with the
  message id and dropped: the connection it came from is gone, there is nobody left to tell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .abc import Backplane
from .envelope import Envelope

log = logging.getLogger(__name__)


class MailboxReturns:
    """The hub's ordered return path to the mailboxes of ``backplane``."""

    __slots__ = ("_backplane", "_done", "_queued")

    def __init__(self, backplane: Backplane) -> None:
        self._backplane = backplane
        # Per user, envelopes on their way back to the mailbox in order, and the task writing them.
        self._queued: dict[str, list[Envelope]] = {}
        self._done: dict[str, asyncio.Task[None]] = {}

    def queue(self, user: str, envelopes: Sequence[Envelope]) -> None:
        """Queue ``envelopes`` for ``user``'s mailbox behind whatever is queued for them already."""
        queued = self._queued.get(user)
        if queued is not None:
            queued.extend(envelopes)
            return
        self._queued[user] = list(envelopes)
        self._done[user] = asyncio.get_running_loop().create_task(self._flush(user))

    async def store(self, envelope: Envelope) -> None:
        """Store a live envelope in its receiver's mailbox, behind mail being returned for them; returns once it
        is stored."""
        if envelope.receiver in self._queued:
            # Mail being returned for this user goes first: queue behind it and wait for our turn.
            self.queue(envelope.receiver, [envelope])
            await self.flushed(envelope.receiver)
        else:
            await self._backplane.store(envelope)

    async def flushed(self, user: str) -> None:
        """Return once what was queued for ``user`` so far is stored."""
        task = self._done.get(user)
        if task is not None:
            await asyncio.shield(task)

    def users(self) -> list[str]:
        """The users with mail on its way back now."""
        return list(self._done)

    async def _flush(self, user: str) -> None:
        queued = self._queued[user]
        try:
            while queued:
                envelope = queued[0]
                try:
                    await self._backplane.store(envelope)
                except Exception:
                    log.exception("could not return message %s to %r's mailbox; it is lost", envelope.id, user)
                queued.pop(0)
        finally:
            del self._queued[user]
            del self._done[user]
