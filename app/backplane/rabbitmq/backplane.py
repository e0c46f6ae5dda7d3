"""``RabbitMQBackplane``: the ``Backplane`` contract (``app.core.abc``) put together from this package's parts.

Each part states its own guarantees; this front only wires them and says when each may be used:

* ``link`` — the connection and its kept channels, reconnecting (``link.py``);
* ``publishing`` — publish until stored: returns, mailbox creation, nacks (``publisher.py``);
* ``consumer`` — the node queue's worker: order, acks, retries, markers (``consumer.py``, ``acks.py``);
* ``bindings`` — who is bound here, generations, bind/unbind (``bindings.py``);
* ``mail`` — reading and settling mailboxes (``mailbox.py``);
* ``resync`` — re-bind and catch up after a reconnect (``resync.py``).

Rules of the front:

* ``publish`` and ``bind`` refuse (``BackplaneUnavailable``) while starting, shutting down or disconnected;
  ``store`` and ``fetch_mail`` work while shutting down (the hub stores what it can no longer deliver).
* **Mail put back for a user bound here** (``store``): the consumer then hands that user's mailbox to the inbox
  (``resync.catch_up``), unless the envelope stored is the one the consumer has *in hand* right now
  (``consumer.handing_over``): that is the inbox bouncing it because no connection could take it, and handing
  it over again would only bounce it again. Mail another node puts back waits for the user's next drain.
* **Shutdown** (``close``): unbind every user at once (``bindings.unbind_all``, their mail goes to mailboxes from
  then on), then a marker through the node queue tells when what was already routed here has been handed to the
  hub; all within ``SHUTDOWN_TIMEOUT`` (or what the caller has left of it). What is still in the queue after
  that is lost with the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
from aiormq.exceptions import ChannelLockedResource
from yarl import URL

from ...config import Settings
from ...core.abc import Backplane, Inbox, MailBatch, PublishResult
from ...core.envelope import Envelope
from ...core.errors import BackplaneUnavailable, ConfigurationError, MailboxFull
from ..topology import DEFAULT_TOPOLOGY, MailboxLimits, ManagementAPI, Topology, ensure_mailbox_policy
from .bindings import Bindings
from .channels import BROKER_ERRORS, ChannelPool
from .consumer import NodeConsumer, RetryPolicy
from .link import Link, safe_url
from .mailbox import MailReader
from .publisher import Publishing
from .resync import Resync

__all__ = ["RabbitMQBackplane"]

log = logging.getLogger(__name__)

#: Longest wait for a confirm or an RPC before the broker counts as unavailable.
PUBLISH_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
#: AMQP heartbeat (seconds) unless AMQP_URL sets ``?heartbeat=``. aiormq declares a silent connection dead after
#: about three of them, the broker after two; the library default (60 s) would leave a node believing in a dead
#: connection for three minutes.
HEARTBEAT = 15
#: Seconds between reconnection attempts.
RECONNECT_INTERVAL = 2.0
#: Unacknowledged deliveries the broker may push to this node at once.
PREFETCH = 256
#: Channels for queue.bind / queue.unbind / mailbox creation, and for mailbox probes (passive declares).
CONTROL_CHANNELS = 8
PROBE_CHANNELS = 8
_POLICY_TIMEOUT = 3.0


class RabbitMQBackplane(Backplane):
    name = "rabbitmq"

    def __init__(
        self,
        settings: Settings,
        *,
        topology: Topology = DEFAULT_TOPOLOGY,
        management_url: str | None = None,
        publish_timeout: float = PUBLISH_TIMEOUT,
        reconnect_interval: float = RECONNECT_INTERVAL,
        prefetch: int = PREFETCH,
        retries: RetryPolicy | None = None,
    ) -> None:
        if not settings.amqp_url:
            raise ConfigurationError("the RabbitMQ backplane needs AMQP_URL")
        url = URL(settings.amqp_url)
        amqp_url = str(url if "heartbeat" in url.query else url.update_query(heartbeat=HEARTBEAT))
        self._node_id = settings.node_id
        self._shutdown_timeout = settings.shutdown_timeout_seconds
        self._limits = MailboxLimits.from_settings(settings)
        self._topology = topology
        self._management = ManagementAPI.from_amqp_url(settings.amqp_url, management_url)
        self._stopping = asyncio.Event()
        self._started = False
        node_queue = topology.node_queue_name(settings.node_id)

        self.link = Link(
            amqp_url,
            settings.node_id,
            connect_timeout=CONNECT_TIMEOUT,
            timeout=publish_timeout,
            reconnect_interval=reconnect_interval,
        )
        self._control = ChannelPool("bindings", CONTROL_CHANNELS, publish_timeout, self.link.current)
        self._probes = ChannelPool("mailbox probes", PROBE_CHANNELS, publish_timeout, self.link.current)
        # Kept channels are set up in this order on every connection: exchanges first, then the node queue.
        self.publishing = Publishing(
            self.link, self._control, topology, kind=settings.amqp_publisher, timeout=publish_timeout
        )
        self.consumer = NodeConsumer(
            self.link,
            self.publishing,
            node_queue,
            tag=f"warren-node-{settings.node_id}",
            prefetch=prefetch,
            timeout=publish_timeout,
            retries=retries,
        )
        self.bindings = Bindings(
            self._control,
            topology,
            node_queue,
            connection=self.link.current,
            timeout=publish_timeout,
            retry_interval=reconnect_interval,
        )
        self.mail = MailReader(self._probes, topology, timeout=publish_timeout)
        self.resync = Resync(self.link, self.bindings, self.mail, self.consumer, self._stopping)
        self.link.on_lost(self._on_connection_lost)
        self.link.on_restored(self._on_reconnected)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self, inbox: Inbox) -> None:
        if self._started:
            raise RuntimeError("the RabbitMQ backplane is already started")
        try:
            await self.link.start()
        except ChannelLockedResource as exc:
            raise ConfigurationError(
                f"another Warren node with NODE_ID={self._node_id!r} is connected to this broker: "
                "give every node its own NODE_ID"
            ) from exc
        except (TimeoutError, *BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(f"cannot set up Warren's exchanges and queue on RabbitMQ: {exc}") from exc
        await self._apply_policy()
        self.consumer.start(inbox, self.resync.run, self.resync.catch_up, self.resync.bindings_lost)
        self._started = True
        log.info("RabbitMQ backplane connected to %s as node %s", safe_url(self.link.url), self._node_id)

    async def _apply_policy(self) -> None:
        try:
            outcome = await ensure_mailbox_policy(
                self._management, self._topology, self._limits, timeout=_POLICY_TIMEOUT
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning(
                "could not check the RabbitMQ mailbox policy %r through the management API at %s (%s). Until it "
                "exists, mailboxes have no TTL or length limit: import rabbitmq/definitions.json or run "
                "`python -m app broker setup`",
                self._topology.policy_name,
                self._management.base_url,
                exc or type(exc).__name__,
            )
            return
        log.info("%s", outcome)

    async def close(self, *, within: float | None = None) -> None:
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        budget = self._shutdown_timeout if within is None else max(0.0, min(within, self._shutdown_timeout))
        try:
            async with asyncio.timeout(budget):
                await self.bindings.unbind_all("this node is shutting down")
                if self.link.up.is_set():
                    # Nothing can be routed here any more; a marker sent now arrives behind everything that was.
                    await self.consumer.mark_end(patience=None)
                await self.consumer.reach_local_end()
        except (TimeoutError, *BROKER_ERRORS) as exc:
            log.warning(
                "RabbitMQ backplane closed before everything routed to node %s was handed over (%s); "
                "messages still in its queue are lost",
                self._node_id,
                exc or type(exc).__name__,
            )
        finally:
            await self.consumer.close()
            await asyncio.gather(self._control.close(), self._probes.close())
            await self.link.close()
            self.bindings.forget_all()

    @property
    def ready(self) -> bool:
        return self._started and self.link.up.is_set() and not self._stopping.is_set()

    # -- the contract ---------------------------------------------------------------------------------------

    async def bind(self, user: str) -> None:
        self._require(accepting=True)
        await self.bindings.bind(user)

    async def unbind(self, user: str) -> None:
        await self.bindings.unbind(user)

    async def unbind_all(self, users: Sequence[str]) -> None:
        # Every user bound here, not only ``users``: the shutdown leaves nobody behind.
        await self.bindings.unbind_all("this node is shutting down")
        await self.settle_routed()

    async def settle_routed(self) -> None:
        """Never raises: bounded by the RPC timeout, and if the connection drops meanwhile the queue died with
        what it held."""
        if not self.link.up.is_set() or self._stopping.is_set():
            return
        await self.consumer.settle_routed()

    async def publish(self, envelope: Envelope) -> PublishResult:
        self._require(accepting=True)
        await self.publishing.publish(self._topology.messages_exchange, envelope)
        return PublishResult.ACCEPTED

    async def store(self, envelope: Envelope) -> None:
        self._require(accepting=False)
        try:
            await self.publishing.publish(self._topology.mailbox_exchange, envelope)
        except MailboxFull:
            log.warning(
                "mailbox of %r is full: could not put back message %s; it stays with the caller",
                envelope.receiver,
                envelope.id,
            )
            raise
        generation = self.bindings.generation(envelope.receiver)
        if generation is not None and not self._stopping.is_set() and not self.consumer.handing_over(envelope.id):
            self.consumer.queue_catch_up(envelope.receiver, generation)

    async def fetch_mail(self, user: str, max_count: int) -> MailBatch:
        self._require(accepting=False)
        batch, _ = await self.mail.take(user, max_count)
        return batch

    # -- connection events ----------------------------------------------------------------------------------

    def _on_connection_lost(self, reason: BaseException | None) -> None:
        if self._stopping.is_set() or not self._started:
            return
        log.warning(
            "lost the RabbitMQ connection of node %s (%s); reconnecting. Mail for its %d users goes to their "
            "mailboxes meanwhile",
            self._node_id,
            reason or "closed",
            len(self.bindings),
        )
        self.resync.bindings_lost()

    def _on_reconnected(self) -> None:
        log.info("reconnected node %s to RabbitMQ", self._node_id)

    def _require(self, *, accepting: bool) -> None:
        if not self._started or (accepting and self._stopping.is_set()):
            raise BackplaneUnavailable("this node's RabbitMQ backplane is not running (starting or shutting down)")
        if not self.link.up.is_set():
            raise BackplaneUnavailable("the connection to RabbitMQ is lost; reconnecting. Try again in a moment")
