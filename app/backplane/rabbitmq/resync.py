"""After a lost connection (or a deleted node queue): re-bind every user still bound here, then hand over the mail
that reached their mailboxes meanwhile; and the same catch-up for mail put back for a user bound here.

Guarantees:

* The node queue, its bindings and anything in it die with the connection; meanwhile messages for this node's
  users are unroutable, so they go to mailboxes. The resync is queued on the consumer's worker when the loss is
  seen (``bindings_lost``), so it runs after everything the lost connection delivered and before anything the
  new one delivers: order holds across the outage.
* It re-binds, in parallel, the users bound when the connection was lost and still bound now with the same
  generation (from Warren's own set, never from what the broker had), then drains each one's mailbox into
  ``Inbox.deliver`` (``catch_up``).
* ``catch_up`` hands over a user's mailbox up to what it held when it began, only while the user's binding is of
  the same generation: mail the hub puts straight back (no connection could take it) cannot loop.
"""

from __future__ import annotations

import asyncio
import logging

from ...core.errors import BackplaneUnavailable
from .bindings import Bindings
from .consumer import NodeConsumer
from .link import Link
from .mailbox import MailReader

__all__ = ["SWEEP_BATCH", "Resync"]

log = logging.getLogger(__name__)

#: Mailbox envelopes per batch while catching up.
SWEEP_BATCH = 500


class Resync:
    def __init__(
        self, link: Link, bindings: Bindings, mail: MailReader, consumer: NodeConsumer, stopping: asyncio.Event
    ) -> None:
        self._link = link
        self._bindings = bindings
        self._mail = mail
        self._consumer = consumer
        self._stopping = stopping
        #: Users bound when the connection was lost, with their generation then.
        self._pending: dict[str, int] = {}

    def bindings_lost(self) -> None:
        """The node queue's bindings are gone (a lost connection, a deleted queue): remember who was bound and
        queue the resync behind what was delivered so far."""
        self._pending.update(self._bindings.snapshot())
        self._consumer.queue_resync()

    async def run(self) -> None:
        """Wait for the connection, re-bind, catch up (called by the consumer's worker, in its order)."""
        up = asyncio.ensure_future(self._link.up.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((up, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            stop.cancel()
        if self._stopping.is_set():
            return
        users, self._pending = self._pending, {}
        outcomes = await asyncio.gather(
            *(self._bindings.rebind(user, generation) for user, generation in users.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BackplaneUnavailable):
                # Lost again: that loss queued another resync covering everyone still bound.
                log.warning("re-binding after reconnect stopped: %s", outcome)
                return
            if isinstance(outcome, BaseException):
                raise outcome
        rebound = {
            user: generation for (user, generation), outcome in zip(users.items(), outcomes, strict=True) if outcome
        }
        log.info("%s re-bound %d users after reconnecting", self._link.name, len(rebound))
        for user, generation in rebound.items():
            try:
                await self.catch_up(user, generation)
            except BackplaneUnavailable as exc:
                log.warning("catching up mail after reconnect stopped: %s", exc)
                return

    async def catch_up(self, user: str, generation: int) -> None:
        """Hand ``user``'s mailbox to the inbox, up to what it held when this began."""
        quota: int | None = None
        while self._bindings.generation(user) == generation and (quota is None or quota > 0):
            batch, available = await self._mail.take(user, SWEEP_BATCH if quota is None else min(quota, SWEEP_BATCH))
            if quota is None:
                quota = available
            if not batch.envelopes:
                await batch.settle()
                return
            quota -= len(batch.envelopes)
            try:
                for envelope in batch.envelopes:
                    await self._consumer.hand_over(envelope)
            except Exception:
                log.exception("handing %r's mailbox to the inbox failed; the rest stays in the mailbox", user)
                await batch.release()
                return
            await batch.settle()
