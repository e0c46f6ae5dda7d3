"""Publishing an envelope until the broker has stored it: publish, returned, create the mailbox, publish again.

Every publish goes, ``mandatory`` and persistent, through one ``Publisher`` (``app.backplane.amqp``: ``batched``
or ``plain``, ``AMQP_PUBLISHER``) on the node's publish channel, so publishes are numbered and written in call
order. Guarantees:

* ``publish`` returns after the broker's confirm: the message sits in a node queue or, persisted, in a mailbox.
* **Returned** (no node has the user bound and there is no mailbox): the receiver's mailbox is created and the
  message published again through the same exchange (so it goes live if the user came online meanwhile). A burst
  that comes back together needs one declare: one lock per receiver keeps the burst in its order while the first
  of it creates the mailbox, and the others see that a mailbox was created after they were routed.
* **Nacked** (overflow reject-publish: the mailbox is full): tried once more (the nack may come from a mailbox
  that expired at that moment; the retry re-creates it), then ``MailboxFull``.
* No confirm within ``timeout``, or the broker gone: ``BackplaneUnavailable``. After a timeout the broker may still
  have stored it, so a retry can show up twice (with different ids).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection

from ...core.envelope import Envelope
from ...core.errors import BackplaneUnavailable, MailboxFull
from ...core.keyed_lock import KeyedLock
from ..amqp import Publisher, make_publisher
from ..topology import Topology, declare_mailbox, declare_topology, routing_key
from .channels import BROKER_ERRORS, ChannelPool, open_channel
from .link import Link

__all__ = ["PUBLISH_CHANNEL", "Publishing"]

log = logging.getLogger(__name__)

PUBLISH_CHANNEL = "publish"
#: AMQP delivery mode of messages the broker writes to disk (mailboxes are durable queues).
_PERSISTENT = 2


class Publishing:
    def __init__(self, link: Link, control: ChannelPool, topology: Topology, *, kind: str, timeout: float) -> None:
        self._link = link
        self._control = control
        self._topology = topology
        self._kind = kind
        self._timeout = timeout
        self._publisher: Publisher | None = None
        self._return_locks = KeyedLock()
        #: Mailboxes created after a return so far, and per receiver the count at its latest one (while anyone
        #: holds or waits for that receiver's return lock).
        self.mailboxes_created = 0
        self._created_at: dict[str, int] = {}
        link.keep(PUBLISH_CHANNEL, self._open)

    @property
    def receivers_being_returned(self) -> int:
        """Receivers with a returned publish still being resent (0 once every burst is through)."""
        return len(self._created_at)

    async def _open(self, connection: AbstractConnection) -> AbstractChannel:
        channel = await open_channel(connection, self._timeout, publisher_confirms=True, on_return_raises=True)
        # Exchanges are declared again on every connection: the broker may have lost them (a new broker node).
        await declare_topology(channel, self._topology)
        # The concrete class: publishers use its confirm bookkeeping.
        self._publisher = make_publisher(self._kind, cast(aiormq.Channel, channel))
        return channel

    def publisher(self) -> Publisher:
        """The publisher of the current publish channel; ``BackplaneUnavailable`` while it is being reopened."""
        channel = self._link.channel(PUBLISH_CHANNEL)
        publisher = self._publisher
        if publisher is None or publisher.channel is not channel:
            raise BackplaneUnavailable("the RabbitMQ publish channel is being reopened; try again in a moment")
        return publisher

    async def publish(self, exchange: str, envelope: Envelope) -> None:
        """Publish ``envelope`` through ``exchange`` and return once the broker stored it (see the module)."""
        receiver = envelope.receiver
        key = routing_key(receiver)
        returns = 0
        nacks = 0
        # Mailboxes created so far when the latest attempt went out.
        created_before = self.mailboxes_created
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    try:
                        if returns:
                            async with self._return_locks.hold(receiver):
                                if returns > 1 or self._created_at.get(receiver, 0) <= created_before:
                                    # Nobody created the mailbox since this message was routed (or it came back
                                    # again): create it.
                                    async with self._control.lend() as channel:
                                        await declare_mailbox(channel, receiver, self._topology)
                                    self.mailboxes_created += 1
                                    self._created_at[receiver] = self.mailboxes_created
                                created_before = self.mailboxes_created
                                # Queued (so numbered and ordered) under the lock; the confirm is awaited after
                                # it, so that a burst that came back is not resent one round trip at a time.
                                publisher, confirm = self._send(exchange, key, envelope)
                            if not self._return_locks.busy(receiver):
                                self._created_at.pop(receiver, None)
                        else:
                            publisher, confirm = self._send(exchange, key, envelope)
                        try:
                            await confirm
                        finally:
                            publisher.forget(envelope.id, confirm)
                        return
                    except aiormq.exceptions.PublishError as exc:
                        if returns > 1:
                            raise BackplaneUnavailable(
                                f"RabbitMQ returned a message for {receiver!r} even after creating "
                                "their mailbox; check the bindings of the mailbox exchange"
                            ) from exc
                        returns += 1
                    except aiormq.exceptions.DeliveryError:
                        nacks += 1
                        if nacks > 1:
                            raise MailboxFull(receiver) from None
        except TimeoutError as exc:
            raise BackplaneUnavailable(
                f"RabbitMQ did not confirm the message within {self._timeout:g} s; it may be overloaded or "
                "unreachable. Try again in a moment"
            ) from exc
        except BROKER_ERRORS as exc:
            raise BackplaneUnavailable(
                f"RabbitMQ could not take the message ({exc or type(exc).__name__}); try again in a moment"
            ) from exc

    async def publish_marker(self, queue: str, marker_id: str) -> None:
        """An empty message straight to ``queue`` (default exchange), confirmed; raises as ``publish`` does."""
        publisher = self.publisher()
        confirm = publisher.publish("", queue, b"", message_id=marker_id, message_type="warren.marker")
        try:
            async with asyncio.timeout(self._timeout):
                await confirm
        except (TimeoutError, *BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(f"could not send a marker: {exc or type(exc).__name__}") from exc
        finally:
            publisher.forget(marker_id, confirm)

    def _send(self, exchange: str, key: str, envelope: Envelope) -> tuple[Publisher, asyncio.Future[Any]]:
        publisher = self.publisher()
        confirm = publisher.publish(
            exchange,
            key,
            envelope.body,
            message_id=envelope.id,
            content_type="application/json",
            delivery_mode=_PERSISTENT,
            timestamp=envelope.ts // 1000,
            app_id="warren",
        )
        return publisher, confirm
