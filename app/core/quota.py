"""Mailbox limits as the core states them: what one mailbox holds, and what share of it one sender may fill.

A mailbox is bounded twice, in messages (``MAILBOX_MAX``) and in bytes as stored (``MAILBOX_MAX_BYTES``: the
envelope's JSON, escapes included, so what is counted is what memory or the broker holds). Within those bounds one
sender's mail may fill at most ``MAILBOX_SENDER_SHARE`` of each (a quarter by default): someone flooding an
offline user is refused (``MailboxShareFull``) while everyone else can still write to them. A full mailbox
refuses new mail; nothing already in it is ever dropped to make room.

Where the share is enforced: the memory backplane. On RabbitMQ the mailbox's own bounds hold (``max-length``,
``max-length-bytes``, ``reject-publish``), the share does not yet. Why not with a counter queue per (receiver,
sender) bound beside the mailbox on the alternate exchange: RabbitMQ decides per queue, so a message the counter
rejects is still stored in the mailbox (and the reverse leaves a phantom count). The publisher gets a nack either
way, but the flood still fills the mailbox. A correct design needs one queue to make the decision: a sub-mailbox
per (receiver, sender) as the storage, bounded by the share (``sender_max_messages``/``sender_max_bytes`` in its
own policy), reached through a ``BCC`` routing key that the alternate exchange routes and node queues never bind;
an index queue per receiver naming its sub-mailboxes for the reader; drains merging them by ``(ts, id)``;
emptied sub-mailboxes deleted with ``if-empty`` (a publish racing it is returned and creates it again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MailboxQuota:
    max_messages: int = 1000
    max_bytes: int = 10 * 1024 * 1024
    #: Fraction of both bounds one sender may fill; 1 turns the share off.
    sender_share: float = 0.25

    @property
    def sender_max_messages(self) -> int:
        """Messages one sender may have in one mailbox (at least one)."""
        return max(1, math.floor(self.max_messages * self.sender_share))

    @property
    def sender_max_bytes(self) -> int:
        """Bytes one sender may have in one mailbox."""
        return max(1, math.floor(self.max_bytes * self.sender_share))

    @property
    def shared(self) -> bool:
        return self.sender_share < 1
