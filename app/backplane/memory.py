"""The in-memory backplane: the embedded single-node default (no ``AMQP_URL``).

Same contract as the RabbitMQ backplane (``app.core.abc``), inside one process: "bound" users are this node's
online users, and mailboxes are deques with a per-message TTL, bounded in messages and in bytes as stored
(``app.core.quota``), with each sender's share of a mailbox counted apart. A full mailbox refuses (``MailboxFull``,
``MailboxShareFull``); it never drops old mail to make room. Everything is lost when the process stops; use
RabbitMQ for durable mail and for more than one node.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.abc import Backplane, Inbox, MailBatch, PublishResult
from ..core.envelope import Envelope
from ..core.errors import BackplaneUnavailable, MailboxFull, MailboxShareFull
from ..core.quota import MailboxQuota


@dataclass
class _Mailbox:
    #: (expiry, envelope), oldest first.
    letters: deque[tuple[float, Envelope]] = field(default_factory=deque)
    size: int = 0
    #: Per sender: (messages, bytes) in this mailbox. Absent: none.
    by_sender: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, expiry: float, envelope: Envelope, *, first: bool = False) -> None:
        if first:
            self.letters.appendleft((expiry, envelope))
        else:
            self.letters.append((expiry, envelope))
        self._count(envelope, 1)

    def pop(self) -> tuple[float, Envelope]:
        letter = self.letters.popleft()
        self._count(letter[1], -1)
        return letter

    def sender_usage(self, sender: str) -> tuple[int, int]:
        return self.by_sender.get(sender, (0, 0))

    def _count(self, envelope: Envelope, sign: int) -> None:
        size = len(envelope.body)
        self.size += sign * size
        messages, held = self.by_sender.get(envelope.sender, (0, 0))
        messages, held = messages + sign, held + sign * size
        if messages:
            self.by_sender[envelope.sender] = (messages, held)
        else:
            self.by_sender.pop(envelope.sender, None)


class _MemoryMailBatch(MailBatch):
    def __init__(self, mailbox: _Mailbox, taken: Sequence[tuple[float, Envelope]]) -> None:
        super().__init__([envelope for _, envelope in taken])
        self._mailbox = mailbox
        self._taken = taken

    async def settle(self) -> None:
        self._taken = ()

    async def release(self) -> None:
        # Back in their places, ahead of anything that arrived meanwhile (even past the limits: it was accepted).
        for expiry, envelope in reversed(self._taken):
            self._mailbox.add(expiry, envelope, first=True)
        self._taken = ()


class MemoryBackplane(Backplane):
    name = "memory"

    def __init__(
        self,
        *,
        mailbox_ttl: float,
        mailbox_max: int,
        mailbox_max_bytes: int = 10 * 1024 * 1024,
        sender_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mailbox_ttl = mailbox_ttl
        self._quota = MailboxQuota(mailbox_max, mailbox_max_bytes, sender_share)
        self._clock = clock
        self._inbox: Inbox | None = None
        self._bound: set[str] = set()
        self._mailboxes: dict[str, _Mailbox] = {}

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
        self._append(envelope, new_mail=True)
        return PublishResult.QUEUED

    async def store(self, envelope: Envelope) -> None:
        # Mail put back was accepted before: the sender's share does not apply again, the mailbox's bounds do.
        self._append(envelope, new_mail=False)

    async def fetch_mail(self, user: str, max_count: int) -> MailBatch:
        mailbox = self._mailboxes.get(user)
        if mailbox is None:
            return _MemoryMailBatch(_Mailbox(), ())
        self._expire(mailbox)
        taken = [mailbox.pop() for _ in range(min(max_count, len(mailbox.letters)))]
        if not mailbox.letters and not taken:
            del self._mailboxes[user]
        return _MemoryMailBatch(mailbox, taken)

    def mailbox_size(self, user: str) -> int:
        mailbox = self._mailboxes.get(user)
        if mailbox is None:
            return 0
        self._expire(mailbox)
        return len(mailbox.letters)

    def mailbox_bytes(self, user: str) -> int:
        """Bytes ``user``'s mailbox holds, as stored."""
        mailbox = self._mailboxes.get(user)
        if mailbox is None:
            return 0
        self._expire(mailbox)
        return mailbox.size

    def _append(self, envelope: Envelope, *, new_mail: bool) -> None:
        mailbox = self._mailboxes.get(envelope.receiver)
        if mailbox is None:
            mailbox = self._mailboxes[envelope.receiver] = _Mailbox()
        self._expire(mailbox)
        quota, size = self._quota, len(envelope.body)
        if len(mailbox.letters) >= quota.max_messages or mailbox.size + size > quota.max_bytes:
            raise MailboxFull(envelope.receiver)
        if new_mail and quota.shared:
            messages, held = mailbox.sender_usage(envelope.sender)
            if messages >= quota.sender_max_messages or held + size > quota.sender_max_bytes:
                raise MailboxShareFull(envelope.receiver, envelope.sender)
        mailbox.add(self._clock() + self._mailbox_ttl, envelope)

    def _expire(self, mailbox: _Mailbox) -> None:
        now = self._clock()
        while mailbox.letters and mailbox.letters[0][0] <= now:
            mailbox.pop()
