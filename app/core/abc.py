"""Interfaces between the messaging core and what sits beside it.

The core (``app.core.hub``) depends only on these. A backplane moves envelopes between nodes and keeps offline
mail; it is chosen by key at start-up (``memory`` or ``rabbitmq``, see ``app.backplane``). A subscriber is one open
client connection as the core sees it (the STOMP layer implements it). Nothing here imports aiohttp or aio-pika.

The contract every backplane keeps:

* ``publish`` returns only when the message is stored: handed to the receiver's node(s) or written to the
  receiver's mailbox (for RabbitMQ: after the publisher confirm). If it raises, nothing was accepted.
* After ``bind(user)`` returns, every message published to ``user`` reaches this node's ``Inbox.deliver`` until
  ``unbind(user)`` returns. Messages published to a user bound nowhere go to the user's mailbox.
* ``Inbox.deliver`` is awaited before the backplane considers a message handled (RabbitMQ: before the ack), so a
  node that loses the message's receiver in the meantime can still move it to the mailbox with ``store``.
* Messages from one sender to one receiver come out of ``Inbox.deliver`` and out of ``fetch_mail`` in the order
  they were published.
* A backplane may also hand mailbox mail to ``Inbox.deliver`` while the user is bound (mail that reached the
  mailbox in a race with the bind); the core treats it like live mail.
* **A full mailbox refuses; it never drops.** A mailbox is bounded in messages and in bytes as stored (the
  envelope's ``body``), ``app.core.quota``. ``publish`` and ``store`` of an envelope that would pass either bound
  raise ``MailboxFull`` and store nothing; nothing already in the mailbox is dropped to make room. Where a
  backplane enforces a sender's share (``MailboxQuota.sender_share``; the memory backplane does), ``publish`` past
  it raises ``MailboxShareFull`` (a ``MailboxFull``) for that sender only; ``store`` (mail put back, accepted
  before) is bounded by the mailbox's limits only. Mail taken from a mailbox gives its room back, the share too.
* ``unbind_all`` (shutdown) unbinds everyone at once; the whole shutdown (``close`` included) fits in the time
  the caller gives it.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Sequence
from typing import Protocol

from .envelope import Envelope


class PublishResult(enum.Enum):
    #: Handed to a node that holds the receiver (memory backplane: written to the receiver's connections).
    DELIVERED = "delivered"
    #: Written to the receiver's mailbox: they are offline.
    QUEUED = "queued"
    #: Stored by the broker; whether live or in the mailbox is decided by routing after the confirm.
    ACCEPTED = "accepted"


class Inbox(Protocol):
    """What a backplane hands incoming envelopes to (the core's hub)."""

    async def deliver(self, envelope: Envelope) -> None: ...


class MailBatch(abc.ABC):
    """Envelopes taken from one user's mailbox, oldest first, not yet removed from it.

    ``settle`` removes them for good; ``release`` puts them back in their order (a delivery that could not be
    completed). Exactly one of the two must be called.
    """

    def __init__(self, envelopes: Sequence[Envelope]) -> None:
        self.envelopes = envelopes

    @abc.abstractmethod
    async def settle(self) -> None: ...

    @abc.abstractmethod
    async def release(self) -> None: ...


class Backplane(abc.ABC):
    """Moves envelopes between nodes and keeps mailboxes. Implementations: memory, rabbitmq."""

    #: The key that selects this implementation, also shown in logs and /readyz.
    name: str = ""

    @abc.abstractmethod
    async def start(self, inbox: Inbox) -> None:
        """Connect, declare what is needed and begin handing this node's envelopes to ``inbox``."""

    @abc.abstractmethod
    async def close(self, *, within: float | None = None) -> None:
        """Stop consuming and disconnect, within ``within`` seconds (default: ``SHUTDOWN_TIMEOUT``). Bound users
        are unbound; their in-flight mail goes to mailboxes."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True while the backplane can accept messages (the broker is connected and the topology declared)."""

    @abc.abstractmethod
    async def bind(self, user: str) -> None:
        """Route ``user``'s messages to this node from now on (called on the user's first local connection)."""

    @abc.abstractmethod
    async def unbind(self, user: str) -> None:
        """Stop routing ``user``'s messages here (called after the user's last local connection closed)."""

    async def unbind_all(self, users: Sequence[str]) -> None:
        """Shutdown: stop routing every user bound here to this node, all at once, and return once what was
        routed here before has been handed to the inbox (as ``settle_routed``). Binds may be refused afterwards.
        This default unbinds ``users`` in parallel."""
        await asyncio.gather(*(self.unbind(user) for user in users))
        await self.settle_routed()

    @abc.abstractmethod
    async def settle_routed(self) -> None:
        """Return once everything routed to this node before the call has been handed to the inbox.

        The hub calls it after unbinding a user who left: mail routed here before the unbind may still be on its
        way (RabbitMQ: in the node's queue), and the inbox moves it to the mailbox. Waiting for it keeps a later
        drain of that mailbox complete and in order. A backplane that delivers synchronously (memory) has nothing
        in flight and returns at once.
        """

    @abc.abstractmethod
    async def publish(self, envelope: Envelope) -> PublishResult:
        """Store ``envelope`` for its receiver; raises ``MailboxFull`` (``MailboxShareFull``: this sender's share)
        or ``BackplaneUnavailable``."""

    @abc.abstractmethod
    async def store(self, envelope: Envelope) -> None:
        """Write ``envelope`` straight into its receiver's mailbox (mail a node could not deliver); raises
        ``MailboxFull`` when the mailbox is at one of its bounds (nothing in it is dropped), or
        ``BackplaneUnavailable``."""

    @abc.abstractmethod
    async def fetch_mail(self, user: str, max_count: int) -> MailBatch:
        """Take up to ``max_count`` of ``user``'s oldest mailbox envelopes; an empty batch when there are none."""


class Subscriber(Protocol):
    """One open client connection subscribed to its user's channel, as the core sees it."""

    @property
    def user(self) -> str: ...

    def push(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` for the client without waiting. False if it cannot take it (closing, or full)."""
        ...

    async def ready_for_more(self) -> None:
        """Return when the client can take more (flow control for big mailbox drains); at once when it can."""
        ...

    def take_unacknowledged(self) -> Sequence[Envelope]:
        """Envelopes pushed but not known to be received (client-ack mode: not acknowledged yet; auto mode: not
        yet written to the socket), oldest first; the subscriber forgets them, the hub puts them back in the
        mailbox."""
        ...


class UserDirectory(Protocol):
    """Who exists. The core refuses messages to anyone else."""

    def exists(self, username: str) -> bool: ...
