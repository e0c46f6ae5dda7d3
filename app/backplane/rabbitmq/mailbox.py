"""Reading and settling mail: a user's mailbox queue, taken a batch at a time.

Guarantees:

* ``take`` probes the mailbox with a passive declare on one of a small pool of channels (a missing mailbox closes
  that channel; the pool replaces it in the background), and when it holds mail takes up to a batch of it with a
  short-lived consumer whose prefetch is the batch size, on a channel of the batch's own: the oldest messages,
  unacknowledged until the batch is settled (one ``basic.ack`` with ``multiple``) or released (one ``basic.nack``
  with ``multiple`` and requeue, which puts them back in their places). If that channel dies first, the broker
  puts them back by itself. A batch can come back smaller than asked (it stops waiting once deliveries pause);
  the next one takes the rest.
* Two nodes draining one mailbox at once split it between them: each message reaches one of them once, and each
  node's share is in mailbox order (mailboxes are declared without single-active-consumer, so that such a drain
  never waits for the other node's to finish).
* A message in a mailbox that is not a Warren envelope is acknowledged with its batch and logged: nobody could
  ever read it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp import commands as spec

from ...core.abc import MailBatch
from ...core.envelope import Envelope
from ...core.errors import BackplaneUnavailable, InvalidMessage
from ..topology import Topology
from .channels import BROKER_ERRORS, ChannelPool, close_channel

__all__ = ["MailReader", "RabbitMailBatch"]

log = logging.getLogger(__name__)

#: While draining a mailbox with a consumer: once some deliveries have come, stop waiting for more after this
#: long without one (what is left is taken by the next batch).
_DRAIN_IDLE = 0.05
#: With no delivery at all for this long, check with the broker whether the mailbox still holds anything
#: (another node draining the same mailbox may have taken it all).
_DRAIN_RECHECK = 0.25


class RabbitMailBatch(MailBatch):
    """Messages taken with a short-lived ``basic.consume`` on a channel of their own, unacknowledged until settled
    or released (one ``basic.ack``/``basic.nack`` with ``multiple`` for the whole batch).

    If the channel dies first, the broker puts them back by itself (so a settle that fails can mean duplicates,
    never loss).
    """

    def __init__(
        self, envelopes: Sequence[Envelope], channel: AbstractChannel | None, last_tag: int | None, timeout: float
    ) -> None:
        super().__init__(envelopes)
        self._channel = channel
        self._last_tag = last_tag
        self._timeout = timeout

    async def settle(self) -> None:
        await self._finish(requeue=None)

    async def release(self) -> None:
        await self._finish(requeue=True)

    async def _finish(self, *, requeue: bool | None) -> None:
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                if self._last_tag is not None:
                    if requeue is None:
                        await channel.basic_ack(self._last_tag, multiple=True)
                    else:
                        # Requeued messages return to their original positions, so the order is restored.
                        await channel.basic_nack(self._last_tag, multiple=True, requeue=True)
        except (TimeoutError, *BROKER_ERRORS) as exc:
            if requeue is None:
                log.warning(
                    "could not acknowledge %d mailbox messages (%s); the broker will deliver them again",
                    len(self.envelopes),
                    exc,
                )
        await close_channel(channel, self._timeout)


class MailReader:
    """Takes batches of mail from users' mailboxes over ``probes`` (a pool of channels for passive declares)."""

    def __init__(self, probes: ChannelPool, topology: Topology, *, timeout: float) -> None:
        self._probes = probes
        self._topology = topology
        self._timeout = timeout

    async def take(self, user: str, max_count: int) -> tuple[RabbitMailBatch, int]:
        """Up to ``max_count`` of ``user``'s oldest mail, and how much the mailbox held when this began.

        A passive declare on a pooled probe channel tells whether the mailbox exists and how much it holds (a
        missing one closes that channel: the pool replaces it in the background). When it holds mail, that channel
        is kept for the batch: a consumer with a prefetch of the batch size takes the oldest messages in one
        stream (one round trip per message with ``basic.get`` made big mailboxes slow to drain), is cancelled, and
        the batch settles or releases them with one ``multiple`` frame.
        """
        name = self._topology.mailbox_queue_name(user)
        empty = RabbitMailBatch([], None, None, self._timeout)
        pool = self._probes
        try:
            async with pool.lend() as probe:
                async with asyncio.timeout(self._timeout):
                    declared = await probe.queue_declare(name, passive=True)
        except ChannelNotFoundEntity:
            # No mailbox: the usual case.
            return empty, 0
        except (TimeoutError, *BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(f"could not read {user!r}'s mail: {exc or type(exc).__name__}") from exc
        available = declared.message_count or 0
        if not available or max_count <= 0:
            return empty, available
        want = min(max_count, available, 65535)
        channel = await pool.detach()
        deliveries: list[DeliveredMessage] = []
        arrived = asyncio.Event()

        async def on_delivery(message: DeliveredMessage) -> None:
            deliveries.append(message)
            arrived.set()

        tag = f"warren-drain-{uuid.uuid4().hex}"
        try:
            async with asyncio.timeout(self._timeout):
                await channel.basic_qos(prefetch_count=want)
                await channel.basic_consume(name, on_delivery, no_ack=False, consumer_tag=tag)
                waited_empty = 0.0
                while len(deliveries) < want:
                    arrived.clear()
                    wait = _DRAIN_IDLE if deliveries else _DRAIN_RECHECK
                    try:
                        async with asyncio.timeout(wait):
                            await arrived.wait()
                    except TimeoutError:
                        if deliveries:
                            break
                        # Nothing yet: stop when the mailbox has nothing left (another node took it), or when
                        # the broker keeps it from us for too long.
                        waited_empty += wait
                        recheck = await channel.queue_declare(name, passive=True)
                        if not recheck.message_count and not deliveries:
                            break
                        if waited_empty >= self._timeout / 2:
                            raise
                await channel.basic_cancel(tag)
            # Deliveries that were on their way when the cancel went out have been handed over by now: each is
            # one task, started before the cancel-ok was read.
            await asyncio.sleep(0)
        except ChannelNotFoundEntity:
            # The mailbox expired under us, taking anything we had got with it.
            await close_channel(channel, self._timeout)
            return empty, 0
        except (TimeoutError, *BROKER_ERRORS) as exc:
            await close_channel(channel, self._timeout)
            raise BackplaneUnavailable(f"could not read {user!r}'s mail: {exc or type(exc).__name__}") from exc
        except BaseException:
            await close_channel(channel, self._timeout)
            raise
        if not deliveries:
            await close_channel(channel, self._timeout)
            return empty, available
        envelopes: list[Envelope] = []
        last_tag = 0
        for message in deliveries:
            assert isinstance(message.delivery, spec.Basic.Deliver)
            last_tag = max(last_tag, message.delivery.delivery_tag or 0)
            try:
                envelopes.append(Envelope.from_body(message.body))
            except InvalidMessage as exc:
                # Acknowledged with the batch: nobody could ever read it.
                log.warning("dropping a message in %s that is not a Warren envelope: %s", name, exc)
        return RabbitMailBatch(envelopes, channel, last_tag, self._timeout), available
