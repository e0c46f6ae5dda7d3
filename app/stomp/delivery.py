"""What a STOMP connection does as the core's ``Subscriber``: MESSAGE frames to its chat subscriptions, flow
control while a mailbox drains into it, and handing back what it holds unacknowledged.

Guarantees:

* A message goes to every chat subscription of the connection, in the order the hub pushes them. In a client-ack
  mode it is held (``app.stomp.subscriptions``) until acknowledged; more than ``MAX_UNACKED`` held, or more than
  ``SEND_BUFFER_BYTES`` unread, makes the client a slow consumer (ERROR, close 4008) and ``push`` refuses.
* ``ready_for_more`` returns once the client is below half of both bounds, so a drain never trips them; a client
  that makes no such progress within ``SEND_TIME_LIMIT`` is a slow consumer (as Spring's ``sendTimeLimit``).
* ``take_unacknowledged`` empties every subscription's held envelopes, in delivery order, each once.
* An ``ack:auto`` MESSAGE frame is queued with its envelope beside it (``Wire.send_text``): if the session ends
  before the client has it, the session hands back the envelope itself, never text to be parsed again. A
  client-ack frame is queued without one: it is already held here, and returned once by ``take_unacknowledged``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..core.envelope import Envelope
from .output import CloseCode, StompOutput, Wire
from .subscriptions import MAX_UNACKED, Channel, Subscriptions

#: Seconds a mailbox drain waits for a client to read or acknowledge before calling it a slow consumer.
SEND_TIME_LIMIT = 10.0


class StompDelivery(StompOutput):
    """The delivering half of a STOMP connection (``app.stomp.protocol.StompConnection`` handles its frames)."""

    __slots__ = ("_subscriptions",)

    def __init__(self, user: str | None, wire: Wire, *, send_buffer_bytes: int, transport: str) -> None:
        super().__init__(user, wire, send_buffer_bytes=send_buffer_bytes, transport=transport)
        self._subscriptions = Subscriptions()

    def push(self, envelope: Envelope) -> bool:
        if self._closed:
            return False
        if self.wire.queued_bytes() > self._send_buffer_bytes:
            self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", "the client is not reading its messages fast enough")
            return False
        body = envelope.text
        taken = False
        for sub in self._subscriptions:
            if sub.channel is not Channel.REPLY:
                continue
            if sub.ack != "auto":
                if len(sub.unacked) >= MAX_UNACKED:
                    self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", f"more than {MAX_UNACKED} unacknowledged")
                    return False
                sub.unacked[envelope.id] = envelope
            headers = {
                "destination": Channel.REPLY.value,
                "subscription": sub.id,
                "message-id": envelope.id,
                "content-type": "application/json",
            }
            if sub.ack != "auto":
                headers["ack"] = envelope.id
                returnable = None  # held in sub.unacked: take_unacknowledged returns it
            else:
                returnable = envelope  # the session hands it back if the client never gets the frame
            if self._write(self._message_frame(headers, body), returnable):
                taken = True
        return taken

    async def ready_for_more(self) -> None:
        # Below half the bounds, so a drain never trips the slow-consumer checks in push(). A client that does not
        # catch up within SEND_TIME_LIMIT is a slow consumer (as Spring's sendTimeLimit).
        try:
            async with asyncio.timeout(SEND_TIME_LIMIT):
                if self.wire.queued_bytes() > self._send_buffer_bytes // 2:
                    await self._until_closed_or(self.wire.wait_flushed())
                while not self._closed and self._subscriptions.over(MAX_UNACKED // 2):
                    await self._progress_event().wait()
        except TimeoutError:
            self._fail(CloseCode.SLOW_CONSUMER, "slow-consumer", f"no progress for {SEND_TIME_LIMIT:g} s")

    def take_unacknowledged(self) -> Sequence[Envelope]:
        return self._subscriptions.take_unacknowledged()
