"""The node queue's consumer: one worker hands every delivery to the inbox, in order, and acknowledges it after.

The node queue is consumed with aiormq directly: aio-pika's ``Queue.consume`` built an ``IncomingMessage`` (every
property decoded) and scheduled a callback per delivery, which cost about as much CPU as all the rest of the
consumer. Here a delivery is aiormq's ``DeliveredMessage``, put on the worker's queue as it is.

Guarantees:

* **Order.** aiormq reads deliveries in order and ``_on_delivery`` only queues them; one worker task takes the
  queue in order and awaits ``Inbox.deliver`` for each before the next. Everything else the worker does (flushing
  acks, a resync after a reconnect, a catch-up of a user's mailbox, markers) is queued on the same queue, so it
  happens exactly between the deliveries queued before and after it.
* **Acknowledged after delivery** (``app.backplane.rabbitmq.acks``).
* **Failed deliveries.** When ``Inbox.deliver`` raises, the delivery is requeued after a pause that grows from
  50 ms to 5 s, without holding up other deliveries; after ``RetryPolicy.max_attempts`` (8) it is dropped and logged
  as an error (it could neither be delivered nor stored, e.g. its user left and their mailbox is full).
* **Markers.** ``mark_end`` sends an empty message to the node queue: FIFO, so when the worker reaches it,
  everything routed here before was handed to the inbox. ``settle_routed`` shares one marker among the callers of
  one loop turn.
* **In hand.** ``handing_over(envelope_id)`` is true while that envelope is inside ``Inbox.deliver`` (a live
  delivery or a mailbox catch-up): the rule the backplane's ``store`` uses to tell a bounce from a put-back.
* **The channel comes back** (``app.backplane.rabbitmq.link``); if the broker cancels the consumer (its queue was
  deleted), the queue is declared again and a resync is queued before consuming restarts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from ...core.abc import Inbox
from ...core.envelope import Envelope
from ...core.errors import BackplaneUnavailable, InvalidMessage
from .acks import Acks
from .channels import BROKER_ERRORS, close_channel, open_channel
from .link import Link
from .publisher import Publishing

__all__ = ["CONSUME_CHANNEL", "NodeConsumer", "RetryPolicy"]

log = logging.getLogger(__name__)

CONSUME_CHANNEL = "consume"


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after which pauses, a delivery whose ``Inbox.deliver`` raised is tried again."""

    max_attempts: int = 8
    first_pause: float = 0.05
    max_pause: float = 5.0

    def pause(self, attempts: int) -> float:
        return min(self.max_pause, self.first_pause * 2.0 ** (attempts - 1))


class _Resync:
    """Queued behind everything the lost connection delivered: re-bind and catch up once reconnected."""


class _FlushAcks:
    """Queued ``ACK_DELAY`` after the first delivery of an ack batch."""


class _CatchUp:
    """Queued when this node put mail back into the mailbox of a user who is bound here."""

    def __init__(self, user: str, generation: int) -> None:
        self.user = user
        self.generation = generation


class _LocalMark:
    """Set when the worker reaches it: everything queued before it has been handed to the inbox."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()


_Item = DeliveredMessage | _FlushAcks | _Resync | _CatchUp | _LocalMark


class NodeConsumer:
    def __init__(
        self,
        link: Link,
        publishing: Publishing,
        queue: str,
        *,
        tag: str,
        prefetch: int,
        timeout: float,
        retries: RetryPolicy | None = None,
    ) -> None:
        self._retries = retries or RetryPolicy()
        self._link = link
        self._publishing = publishing
        self.queue = queue
        self.tag = tag
        self._prefetch = prefetch
        self._timeout = timeout
        self._inbox: Inbox | None = None
        self._on_resync: Callable[[], Awaitable[None]] | None = None
        self._on_catch_up: Callable[[str, int], Awaitable[None]] | None = None
        self._on_queue_lost: Callable[[], None] = self.queue_resync
        self._items: asyncio.Queue[_Item] = asyncio.Queue()
        self._acks = Acks(lambda: self._items.put_nowait(_FlushAcks()))
        self._attempts: dict[str, int] = {}
        self._in_hand: str | None = None
        self._resync_queued = False
        self._catch_up_queued: set[str] = set()
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._settle_round: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._stopping = False
        link.keep(CONSUME_CHANNEL, self._open)

    def start(
        self,
        inbox: Inbox,
        on_resync: Callable[[], Awaitable[None]],
        on_catch_up: Callable[[str, int], Awaitable[None]],
        on_queue_lost: Callable[[], None],
    ) -> None:
        """``on_queue_lost`` is called when the node queue was deleted (with its bindings) and declared again: it
        must queue a resync (``queue_resync``) for everyone bound."""
        self._inbox, self._on_resync, self._on_catch_up = inbox, on_resync, on_catch_up
        self._on_queue_lost = on_queue_lost
        self._worker = asyncio.create_task(self._work(), name=f"warren-consumer-{self.queue}")

    async def close(self) -> None:
        self._stopping = True
        tasks = [task for task in (self._worker, *self._background) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._acks.close()
        self._worker = None

    @property
    def consuming(self) -> bool:
        """Whether this node's consumer runs on the current consume channel."""
        try:
            channel = cast(aiormq.Channel, self._link.channel(CONSUME_CHANNEL))
        except BackplaneUnavailable:
            return False
        return self.tag in channel.consumers

    def handing_over(self, envelope_id: str) -> bool:
        """Whether the envelope ``envelope_id`` is inside ``Inbox.deliver`` right now."""
        return self._in_hand == envelope_id

    async def hand_over(self, envelope: Envelope) -> None:
        """``Inbox.deliver(envelope)``, with the envelope *in hand* meanwhile (for mailbox catch-ups)."""
        assert self._inbox is not None
        self._in_hand = envelope.id
        try:
            await self._inbox.deliver(envelope)
        finally:
            self._in_hand = None

    def queue_resync(self) -> None:
        """Re-bind and catch up (``on_resync``) after everything queued so far; once however often it is asked."""
        if not self._resync_queued:
            self._resync_queued = True
            self._items.put_nowait(_Resync())

    def queue_catch_up(self, user: str, generation: int) -> None:
        if user not in self._catch_up_queued:
            self._catch_up_queued.add(user)
            self._items.put_nowait(_CatchUp(user, generation))

    async def reach_local_end(self) -> None:
        """Return once the worker has handed over everything already queued in this process."""
        mark = _LocalMark()
        self._items.put_nowait(mark)
        await mark.reached.wait()

    async def settle_routed(self) -> None:
        """``mark_end`` shared by every caller of one loop turn (2,000 users leaving cost one round trip)."""
        round_ = self._settle_round
        if round_ is None:
            round_ = self._settle_round = asyncio.ensure_future(self._settle_once())
            self._background.add(round_)
            round_.add_done_callback(self._background.discard)
        # Shielded: one caller giving up must not cancel the marker the others wait for.
        await asyncio.shield(round_)

    async def _settle_once(self) -> None:
        self._settle_round = None  # from here on a caller needs a marker sent after its call
        await self.mark_end(patience=self._timeout)

    async def mark_end(self, *, patience: float | None) -> None:
        """Send a marker to the node queue and wait until the worker reaches it, or the connection (and the queue
        with it) is gone, or ``patience`` runs out. Never raises."""
        marker_id = f"marker-{uuid.uuid4().hex}"
        reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker_id] = reached
        try:
            await self._publishing.publish_marker(self.queue, marker_id)
            lost = asyncio.ensure_future(self._link.down.wait())
            try:
                await asyncio.wait_for(asyncio.wait((reached, lost), return_when=asyncio.FIRST_COMPLETED), patience)
            finally:
                lost.cancel()
        except (TimeoutError, BackplaneUnavailable) as exc:
            log.warning("could not mark the end of queue %s: %s", self.queue, exc or type(exc).__name__)
        finally:
            self._markers.pop(marker_id, None)

    # -- the channel ------------------------------------------------------------------------------------------

    async def _open(self, connection: AbstractConnection) -> AbstractChannel:
        channel = await open_channel(connection, self._timeout, publisher_confirms=False)
        try:
            async with asyncio.timeout(self._timeout):
                await channel.basic_qos(prefetch_count=self._prefetch)
                # Exclusive: it lives exactly as long as this node's connection, and a second process that claims
                # the same NODE_ID is refused instead of silently sharing the queue.
                await channel.queue_declare(self.queue, exclusive=True, durable=False)
                cast(aiormq.Channel, channel).on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
                await channel.basic_consume(self.queue, self._on_delivery, no_ack=False, consumer_tag=self.tag)
        except BaseException:
            await close_channel(channel, self._timeout)
            raise
        return channel

    def _on_consumer_cancelled(self, frame: spec.Basic.Cancel) -> None:
        # The broker cancels a consumer whose queue was deleted (being exclusive, only by this node's own
        # connection). Declare it again, re-bind and catch up as after a reconnect; what sat in it is lost.
        if frame.consumer_tag != self.tag or self._stopping:
            return
        log.error("RabbitMQ cancelled the consumer of queue %s (deleted?); declaring it again", self.queue)
        task = asyncio.ensure_future(self._consume_again())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _consume_again(self) -> None:
        try:
            channel = cast(aiormq.Channel, self._link.channel(CONSUME_CHANNEL))
            async with asyncio.timeout(self._timeout):
                await channel.queue_declare(self.queue, exclusive=True, durable=False)
            # Queued before consuming restarts, so the new queue's deliveries come after the catch-up.
            self._on_queue_lost()
            async with asyncio.timeout(self._timeout):
                try:
                    await channel.basic_consume(self.queue, self._on_delivery, no_ack=False, consumer_tag=self.tag)
                except BaseException:
                    channel.consumers.pop(self.tag, None)  # aiormq registers it before the consume-ok
                    raise
        except (TimeoutError, BackplaneUnavailable, *BROKER_ERRORS) as exc:
            # The channel or the connection died: reopening it declares the queue and consumes again.
            log.warning("could not consume queue %s again: %s", self.queue, exc or type(exc).__name__)

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        # aiormq runs this in a task of its own per delivery, in delivery order, and nothing here awaits.
        self._items.put_nowait(message)

    # -- the worker ---------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        get = self._items.get
        while True:
            item = await get()
            try:
                if type(item) is DeliveredMessage:
                    await self._handle(item)
                elif isinstance(item, _FlushAcks):
                    self._acks.timer_fired()
                    await self._acks.flush()
                elif isinstance(item, _Resync):
                    await self._acks.flush()
                    self._resync_queued = False
                    # Deliveries from the lost connection cannot be requeued any more: forget their failures.
                    self._attempts.clear()
                    assert self._on_resync is not None
                    await self._on_resync()
                elif isinstance(item, _CatchUp):
                    await self._acks.flush()
                    self._catch_up_queued.discard(item.user)
                    assert self._on_catch_up is not None
                    try:
                        await self._on_catch_up(item.user, item.generation)
                    except BackplaneUnavailable as exc:
                        log.warning("could not hand %r's mail over now (%s); it waits in the mailbox", item.user, exc)
                elif isinstance(item, _LocalMark):
                    await self._acks.flush()
                    item.reached.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the consumer of %s failed on %r; continuing", self.queue, item)

    async def _handle(self, message: DeliveredMessage) -> None:
        channel = message.channel
        # Always set on a Basic.Deliver (pamqp types every field as optional).
        tag = cast(int, cast(spec.Basic.Deliver, message.delivery).delivery_tag)
        body = message.body
        if not body and (marker := self._markers.get(cast(str, message.header.properties.message_id))):
            # Envelopes are never empty; markers are.
            await self._acks.ack_now(channel, tag)
            if not marker.done():
                marker.set_result(None)
            return
        try:
            envelope = Envelope.from_body(body)
        except InvalidMessage as exc:
            log.warning("dropping a message in %s that is not a Warren envelope: %s", self.queue, exc)
            await self._acks.reject(channel, tag)
            return
        try:
            await self.hand_over(envelope)
        except Exception as exc:
            await self._delivery_failed(channel, tag, envelope, exc)
            return
        if self._attempts:
            self._attempts.pop(envelope.id, None)
        await self._acks.handed_over(channel, tag)

    async def _delivery_failed(self, channel: AbstractChannel, tag: int, envelope: Envelope, exc: Exception) -> None:
        attempts = self._attempts.pop(envelope.id, 0) + 1
        if attempts >= self._retries.max_attempts:
            log.error(
                "giving up on message %s to %r after %d failed deliveries; it is dropped",
                envelope.id,
                envelope.receiver,
                attempts,
                exc_info=exc,
            )
            await self._acks.reject(channel, tag)
            return
        self._attempts[envelope.id] = attempts
        pause = self._retries.pause(attempts)
        log.warning(
            "delivering %s to %r failed (%s: %s); requeueing it in %.2g s",
            envelope.id,
            envelope.receiver,
            type(exc).__name__,
            exc,
            pause,
        )
        self._acks.requeue_later(channel, tag, pause)
