"""The in-memory backplane: the embedded single-node default (no ``AMQP_URL``).

Same contract as the RabbitMQ backplane (``app.core.abc``), inside one process: "bound" users are this node's
online users, and mailboxes are bounded deques with a per-message TTL. Everything is lost when the process stops;
use RabbitMQ for durable mail and for more than one node.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from ..core.abc import Backplane, Inbox, MailBatch, PublishResult
from ..core.envelope import Envelope
from ..core.errors import BackplaneUnavailable, MailboxFull


class _MemoryMailBatch(MailBatch):
    def __init__(self, mailbox: deque[tuple[float, Envelope]], taken: Sequence[tuple[float, Envelope]]) -> None:
        super().__init__([envelope for _, envelope in taken])
        self._mailbox = mailbox
        self._taken = taken

    async def settle(self) -> None:
        self._taken = ()

    async def release(self) -> None:
        self._mailbox.extendleft(reversed(self._taken))
        self._taken = ()


class MemoryBackplane(Backplane):
    name = "memory"

    def __init__(self, *, mailbox_ttl: float, mailbox_max: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._mailbox_ttl = mailbox_ttl
        self._mailbox_max = mailbox_max
        self._clock = clock
        self._inbox: Inbox | None = None
        self._bound: set[str] = set()
        # user -> (expiry, envelope), oldest first
        self._mailboxes: dict[str, deque[tuple[float, Envelope]]] = {}

    async def start(self, inbox: Inbox) -> None:
        self._inbox = inbox

    async def close(self, *, within: float | None = None) -> None:
        self._bound.clear()
        self._inbox = None

    @property
    def ready(self) -> bool:
        return self._inbox is not None

    async def bind(self, user: str) -> None:
        self._bound.add(user)

    async def unbind(self, user: str) -> None:
        self._bound.discard(user)

    async def settle_routed(self) -> None:
        # Delivery happens inside publish: nothing routed here is ever in flight.
        return

    async def publish(self, envelope: Envelope) -> PublishResult:
        if self._inbox is None:
            raise BackplaneUnavailable("the node is not started or is shutting down")
        if envelope.receiver in self._bound:
            await self._inbox.deliver(envelope)
            return PublishResult.DELIVERED
        self._append(envelope, refuse_when_full=True)
        return PublishResult.QUEUED

    async def store(self, envelope: Envelope) -> None:
        # As RabbitMQ does (the contract in app.core.abc): a full mailbox refuses, it never drops older mail.
        self._append(envelope, refuse_when_full=True)

    async def fetch_mail(self, user: str, max_count: int) -> MailBatch:
        mailbox = self._mailboxes.get(user)
        if mailbox is None:
            return _MemoryMailBatch(deque(), ())
        self._expire(mailbox)
        taken = [mailbox.popleft() for _ in range(min(max_count, len(mailbox)))]
        if not mailbox and not taken:
            del self._mailboxes[user]
        return _MemoryMailBatch(mailbox, taken)

    def mailbox_size(self, user: str) -> int:
        mailbox = self._mailboxes.get(user)
        if mailbox is None:
            return 0
        self._expire(mailbox)
        return len(mailbox)

    def _append(self, envelope: Envelope, *, refuse_when_full: bool) -> None:
        mailbox = self._mailboxes.setdefault(envelope.receiver, deque())
        self._expire(mailbox)
        if len(mailbox) >= self._mailbox_max:
            if refuse_when_full:
                raise MailboxFull(envelope.receiver)
            mailbox.popleft()
        mailbox.append((self._clock() + self._mailbox_ttl, envelope))

    def _expire(self, mailbox: deque[tuple[float, Envelope]]) -> None:
        now = self._clock()
        while mailbox and mailbox[0][0] <= now:
            mailbox.popleft()
