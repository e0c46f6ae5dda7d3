"""The RabbitMQ backplane: nodes that share nothing but a broker.

Topology (names in ``app.backplane.topology``): every message is published, with publisher confirms, to the topic
exchange ``warren.messages`` under ``user.<token>`` (the messages of one event-loop turn in one socket write, see
``app.backplane.amqp``). Each node owns one exclusive queue ``warren.node.<node_id>``, bound once per user online
on that node. When no node has the user bound, the exchange's alternate exchange
``warren.mailbox`` routes the message to the durable mailbox ``warren.mailbox.<token>``; when that does not exist
either, the broker returns the message, and the publisher creates the mailbox and publishes again through
``warren.messages`` (so it goes live if the user came online meanwhile). Mailbox limits (TTL, length, what a full
mailbox does, when an unused one is deleted) are a broker policy that operators edit; Warren only creates it
when it is missing.

Guarantees, in terms of the contract in ``app.core.abc``:

* **Stored before accepted.** ``publish`` and ``store`` return after the broker's confirm: the message sits in a
  node queue or, persisted, in a mailbox. A full mailbox nacks and the call raises ``MailboxFull``. An unreachable
  broker, or no confirm within ``publish_timeout`` (5 s), raises ``BackplaneUnavailable``; after a timeout the
  broker may still have stored the message, so a retry can show up twice (with different ids).
* **Order.** A node publishes on one channel and consumes its queue with one consumer whose deliveries one task
  hands to ``Inbox.deliver`` and acknowledges in order (each only after ``deliver`` returned; acks go out in
  batches of up to ``ACK_BATCH``, at most ``ACK_DELAY`` late), so messages published one after another from one
  node to one receiver arrive in that order, live and from the mailbox. Publishes to one receiver that overlap in
  time can swap places when the first of them has to create the receiver's mailbox.
* **The bind race.** The hub binds, then drains the mailbox (``fetch_mail``) while holding live messages. A
  message published before the binding existed was routed to the mailbox and is in it by the time bind-ok
  arrives: routing hands it to the mailbox's queue process at once, and the hub's drain (a passive declare, then a
  consumer) reaches that process only after the bind-ok round trip. So it is in the hub's drain (the hub drains
  until a batch comes back empty), and everything routed after the binding is live and held behind it. (With a
  mailbox on another cluster node than the publisher's, a message could in theory still be in transit; it stays
  in the mailbox, not lost.)
* **Mail put back while the user is bound.** When this node ``store``s mail for a user bound here (a connection
  closed with it unacknowledged, perhaps while another was coming online and draining), the worker then hands that
  user's mailbox to ``Inbox.deliver``, in order, up to what it held when it started. Not when the envelope being
  delivered is put straight back (no connection took it: it would only bounce again). Mail that another node
  puts back waits for the user's next drain or REST pull: mailboxes are read on demand, never consumed for long.
* **Broker connection loss.** The node's queue, its bindings and anything in it die with the connection; what was
  already handed to this process is still delivered. Meanwhile messages for this node's users are unroutable,
  so they go to mailboxes. On reconnect, aio-pika re-declares the exchanges and the node queue, and Warren starts
  its consumer again (as it does when the broker closed only the consume channel). Warren then re-binds every
  user still bound, in parallel (from its own set: aio-pika would also restore bindings whose unbind failed
  during the outage) and drains their mailboxes into ``Inbox.deliver`` before any live message that arrived
  after the re-bind, so order holds across the outage. ``publish`` raises ``BackplaneUnavailable`` at once while
  the connection is down.
* **Mailbox reads.** ``fetch_mail`` probes the mailbox with a passive declare on one of a small pool of channels
  (a missing mailbox closes that channel; the pool replaces it in the background), and when it holds mail takes up
  to a batch of it with a short-lived consumer whose prefetch is the batch size, on a channel of the batch's own:
  the oldest messages, unacknowledged until the batch is settled (one ``basic.ack`` with ``multiple``) or released
  (one ``basic.nack`` with ``multiple`` and requeue, which puts them back in their places). If that channel dies
  first, the broker puts them back by itself. A batch can come back smaller than asked (it stops waiting once
  deliveries pause); the next one takes the rest.
* **Bindings.** ``bind``/``unbind`` of different users run in parallel over a small pool of channels (one RPC at a
  time each); a channel on which a call failed or timed out is closed and replaced, never used again.
* **Shutdown.** ``close`` unbinds every user, in parallel over that pool (their mail goes to mailboxes from then
  on), then hands over what was already routed here: a marker sent to the node's own queue tells when all of it
  has come through. All within ``SHUTDOWN_TIMEOUT``; whatever is still in the queue after that is lost with the
  connection.
* **Failed deliveries.** When ``Inbox.deliver`` raises, the delivery is requeued after a pause that grows from
  50 ms to 5 s, without holding up other deliveries; after ``MAX_DELIVERY_ATTEMPTS`` (8) it is dropped and logged
  as an error (it could neither be delivered nor stored, e.g. its user left and their mailbox is full).
* **Lost:** messages sitting in this node's queue, not yet handed over, when its broker connection dies; mail in a
  mailbox that nobody read or checked for the policy's ``expires`` (4 x the message TTL by default; a user coming
  online checks it, publishing does not count); mail older than the message TTL; deliveries dropped as above.

Two nodes holding the same user both get every live message. If both drain that user's mailbox at the same time
(two tabs coming online together on different nodes), their drain consumers split the mailbox between them: each
message still reaches one of the user's tabs once, in order. Mailboxes are declared without single-active-consumer,
so that such a drain never waits for the other node's to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from typing import Any, cast

import aio_pika
import aiohttp
import aiormq
from aio_pika.abc import (
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError, ChannelLockedResource, ChannelNotFoundEntity
from pamqp import commands as spec
from yarl import URL

from ..config import Settings
from ..core.abc import Backplane, Inbox, MailBatch, PublishResult
from ..core.envelope import Envelope
from ..core.errors import BackplaneUnavailable, ConfigurationError, InvalidMessage, MailboxFull
from .amqp import ConfirmingPublisher
from .topology import (
    DEFAULT_TOPOLOGY,
    MailboxLimits,
    ManagementAPI,
    Topology,
    declare_mailbox,
    declare_topology,
    ensure_mailbox_policy,
    routing_key,
    setup_broker,
)

__all__ = ["RabbitMQBackplane", "setup_broker"]

log = logging.getLogger(__name__)

#: Longest wait for a confirm or an RPC before the broker counts as unavailable.
PUBLISH_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
#: AMQP heartbeat (seconds) unless AMQP_URL sets ``?heartbeat=``. aiormq declares a silent connection dead after
#: about three of them, the broker after two; the library default (60 s) would leave a node believing in a dead
#: connection for three minutes.
HEARTBEAT = 15
#: Seconds between reconnection attempts (aio-pika logs a warning for each failed one).
RECONNECT_INTERVAL = 2.0
#: AMQP delivery mode of messages the broker writes to disk (mailboxes are durable queues).
_PERSISTENT = 2
#: Unacknowledged deliveries the broker may push to this node at once.
PREFETCH = 256
#: Mailbox envelopes per batch while catching up after a reconnect.
SWEEP_BATCH = 500
#: Channels for queue.bind / queue.unbind, and for mailbox probes (passive declares): calls for different users
#: run in parallel over them (a channel carries one RPC at a time).
CONTROL_CHANNELS = 8
PROBE_CHANNELS = 8
#: While draining a mailbox with a consumer: once some deliveries have come, stop waiting for more after this
#: long without one (what is left is taken by the next batch).
_DRAIN_IDLE = 0.05
#: With no delivery at all for this long, check with the broker whether the mailbox still holds anything
#: (another node draining the same mailbox may have taken it all).
_DRAIN_RECHECK = 0.25
#: Deliveries acknowledged with one ``basic.ack(multiple)`` at most (sooner once the oldest of them has waited
#: ``ACK_DELAY``).
ACK_BATCH = 64
#: Seconds a delivery handed to the inbox waits at most for its acknowledgement: a trickle of deliveries then
#: costs one ack frame per this interval instead of one each. (Acks only free prefetch slots.)
ACK_DELAY = 0.005
#: A delivery whose ``Inbox.deliver`` keeps raising is requeued after a growing pause, and dropped (logged as an
#: error) after this many attempts: it can neither be delivered nor stored (say, the user left and their mailbox
#: is full), and retrying for ever would hold a prefetch slot for good.
MAX_DELIVERY_ATTEMPTS = 8
_FIRST_RETRY_PAUSE = 0.05
_MAX_RETRY_PAUSE = 5.0
_POLICY_TIMEOUT = 3.0
#: Errors that mean "the broker or the channel is gone", as opposed to a refusal.
_BROKER_ERRORS = (aiormq.exceptions.AMQPError, ChannelInvalidStateError, ConnectionError, OSError)


class _Resync:
    """Queued behind everything the lost connection delivered: re-bind and catch up once reconnected."""


_RESYNC = _Resync()


class _FlushAcks:
    """Queued ``ACK_DELAY`` after the first delivery of an ack batch: acknowledge the batch even if it is short."""


_FLUSH_ACKS = _FlushAcks()


class _CatchUp:
    """Queued when this node put mail back into the mailbox of a user who is bound here."""

    def __init__(self, user: str, generation: int) -> None:
        self.user = user
        self.generation = generation


class _LocalMark:
    """Set when the worker reaches it: everything queued before it has been handed to the inbox."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()


class _KeyedLocks:
    """One lock per key while anyone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def busy(self, key: str) -> bool:
        """Whether anyone holds or waits for ``key``'s lock."""
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_channel_numbers = itertools.count()


def _fresh_channel_number(raw_connection: Any) -> int:
    """A channel number not used recently on this connection.

    aiormq hands out ``max(open channels) + 1``, so a channel the broker just closed (a 404 from a mailbox probe)
    can get its number again before the broker finished closing it; RabbitMQ then closes the whole connection
    ("CHANNEL_ERROR - second 'channel.open' seen"). Pool channels count up through 1,000–65,535 instead, so a
    number comes back only after some 64,000 opens; aio-pika's own channels keep the low numbers.
    """
    while True:
        number = 1_000 + next(_channel_numbers) % 64_536
        if number not in raw_connection.channels:
            return number


class _ChannelPool:
    """Up to ``size`` raw channels on the current connection, each lent to one caller at a time.

    A channel on which a call failed (a timeout, which makes aiormq close the channel; a 404 from a passive
    declare, which makes the broker close it; a lost connection) is never lent again: it is closed and replaced
    by a fresh one, opened in the background when the channel was closed by a 404 (the usual end of a mailbox
    probe), so the next caller does not wait for it. Channels of an old connection are dropped the same way.
    """

    def __init__(self, name: str, size: int, timeout: float, connection: Any) -> None:
        self._name = name
        self._size = size
        self._timeout = timeout
        self._connection = connection
        self._slots = asyncio.Semaphore(size)
        self._idle: list[RawChannel] = []
        self._refills: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[RawChannel]:
        async with self._slots:
            channel = await self._take()
            try:
                yield channel
            except ChannelNotFoundEntity:
                self._refill()
                raise
            except BaseException:
                await _close_channel(channel, self._timeout)
                raise
            if channel.is_closed:
                self._refill()
            else:
                self._idle.append(channel)

    async def detach(self) -> RawChannel:
        """A channel of the pool's kind that the caller keeps (and closes); the pool opens a replacement."""
        async with self._slots:
            channel = await self._take()
        self._refill()
        return channel

    def clear(self) -> None:
        self._idle.clear()
        for task in self._refills:
            task.cancel()

    async def _take(self) -> RawChannel:
        transport = self._raw_connection()
        while self._idle:
            channel = self._idle.pop()
            if not channel.is_closed and channel.connection is transport:
                return channel
        return await self._open(transport)

    def _raw_connection(self) -> Any:
        transport = self._connection.transport if self._connection is not None else None
        if transport is None:
            raise BackplaneUnavailable("not connected to RabbitMQ; reconnecting")
        return transport.connection

    async def _open(self, raw_connection: Any) -> RawChannel:
        try:
            async with asyncio.timeout(self._timeout):
                channel: RawChannel = await raw_connection.channel(
                    channel_number=_fresh_channel_number(raw_connection), publisher_confirms=False
                )
        except (TimeoutError, RuntimeError, *_BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(
                f"could not open a RabbitMQ channel ({self._name}): {exc or type(exc).__name__}"
            ) from exc
        return channel

    def _refill(self) -> None:
        if len(self._idle) + len(self._refills) >= self._size:
            return
        task = asyncio.ensure_future(self._refill_one())
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill_one(self) -> None:
        with contextlib.suppress(BackplaneUnavailable):
            transport = self._raw_connection()
            channel = await self._open(transport)
            if len(self._idle) < self._size:
                self._idle.append(channel)
            else:
                await _close_channel(channel, self._timeout)


class _RabbitMailBatch(MailBatch):
    """Messages taken with a short-lived ``basic.consume`` on a channel of their own, unacknowledged until settled
    or released (one ``basic.ack``/``basic.nack`` with ``multiple`` for the whole batch).

    If the channel dies first, the broker puts them back by itself (so a settle that fails can mean duplicates,
    never loss).
    """

    def __init__(
        self, envelopes: Sequence[Envelope], channel: RawChannel | None, last_tag: int | None, timeout: float
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
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            if requeue is None:
                log.warning(
                    "could not acknowledge %d mailbox messages (%s); the broker will deliver them again",
                    len(self.envelopes),
                    exc,
                )
        await _close_channel(channel, self._timeout)


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
    ) -> None:
        if not settings.amqp_url:
            raise ConfigurationError("the RabbitMQ backplane needs AMQP_URL")
        url = URL(settings.amqp_url)
        self._amqp_url = str(url if "heartbeat" in url.query else url.update_query(heartbeat=HEARTBEAT))
        self._node_id = settings.node_id
        self._shutdown_timeout = settings.shutdown_timeout_seconds
        self._limits = MailboxLimits.from_settings(settings)
        self._topology = topology
        self._management = ManagementAPI.from_amqp_url(settings.amqp_url, management_url)
        self._timeout = publish_timeout
        self._reconnect_interval = reconnect_interval
        self._prefetch = prefetch

        self._inbox: Inbox | None = None
        self._connection: AbstractRobustConnection | None = None
        # Separate channels, so that a failed or timed-out call (which closes its channel) on one of them never
        # disturbs the others: publishes in flight, the consumer's unacknowledged deliveries, bindings.
        self._publish_channel: AbstractRobustChannel | None = None
        #: Publishes (with confirms) on the publish channel's current aiormq channel; see ``app.backplane.amqp``.
        self._confirming: ConfirmingPublisher | None = None
        self._admin_channel: AbstractRobustChannel | None = None
        #: Raw channels of the current connection for binds/unbinds and for mailbox probes (see _ChannelPool).
        self._control_pool: _ChannelPool | None = None
        self._probe_pool: _ChannelPool | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        # A strong reference: aio-pika restores only queue objects that are still alive (aio-pika#594).
        self._node_queue: AbstractRobustQueue | None = None
        #: The tag of this node's consumer of its queue (one per channel; the same on every reopened channel).
        self._consumer_tag = f"warren-node-{self._node_id}"

        #: Users bound here -> the generation of their latest bind (a later bind means the hub drained afresh).
        self._bound: dict[str, int] = {}
        self._generation = 0
        self._user_locks = _KeyedLocks()
        self._return_locks = _KeyedLocks()
        #: Mailbox declares after a return so far, and per receiver the count at its latest one (while anyone
        #: holds or waits for that receiver's return lock).
        self._declares = 0
        self._mailbox_declared: dict[str, int] = {}
        #: Users bound when the connection was lost, with their generation then: re-bind and catch up these.
        self._resync_users: dict[str, int] = {}
        self._resync_queued = False
        self._incoming: asyncio.Queue[DeliveredMessage | _FlushAcks | _Resync | _CatchUp | _LocalMark] = asyncio.Queue()
        self._catch_up_queued: set[str] = set()
        #: The id of the envelope the worker is handing to the inbox right now.
        self._delivering: str | None = None
        self._worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._closing = asyncio.Event()
        self._started = False
        #: Markers sent to the node's own queue (``_send_marker``), by message id.
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._settle_round: asyncio.Future[None] | None = None
        #: Delivery tags handed to the inbox and not yet acknowledged, oldest first, all of ``_ack_channel``.
        self._ack_tags: list[int] = []
        self._ack_channel: RawChannel | None = None
        #: Queues ``_FLUSH_ACKS`` once the oldest unacknowledged delivery has waited ``ACK_DELAY``.
        self._ack_timer: asyncio.TimerHandle | None = None
        #: Deliveries (channel, delivery tag) that failed and wait, unacknowledged, to be requeued.
        self._held_back: set[tuple[RawChannel, int]] = set()
        #: Failed attempts per envelope id, until it is delivered or dropped.
        self._attempts: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self, inbox: Inbox) -> None:
        if self._started:
            raise RuntimeError("the RabbitMQ backplane is already started")
        self._inbox = inbox
        try:
            self._connection = await aio_pika.connect_robust(
                self._amqp_url,
                timeout=CONNECT_TIMEOUT,
                client_properties={"connection_name": self._node_id},
                reconnect_interval=self._reconnect_interval,
            )
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(
                f"cannot connect to RabbitMQ at {_safe_url(self._amqp_url)}: {exc or type(exc).__name__}; "
                "check AMQP_URL and that the broker is running"
            ) from exc
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._declare()
        except ChannelLockedResource as exc:
            await self._connection.close()
            raise ConfigurationError(
                f"another Warren node with NODE_ID={self._node_id!r} is connected to this broker: "
                "give every node its own NODE_ID"
            ) from exc
        except BaseException as exc:
            await self._connection.close()
            if isinstance(exc, (TimeoutError, *_BROKER_ERRORS)):
                raise BackplaneUnavailable(f"cannot set up Warren's exchanges and queue on RabbitMQ: {exc}") from exc
            raise
        self._control_pool = _ChannelPool("bindings", CONTROL_CHANNELS, self._timeout, self._connection)
        self._probe_pool = _ChannelPool("mailbox probes", PROBE_CHANNELS, self._timeout, self._connection)
        await self._apply_policy()
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        self._worker = asyncio.create_task(self._work(), name=f"warren-backplane-{self._node_id}")
        self._connected.set()
        self._started = True
        log.info("RabbitMQ backplane connected to %s as node %s", _safe_url(self._amqp_url), self._node_id)

    async def _declare(self) -> None:
        assert self._connection is not None
        connection = self._connection
        self._publish_channel = connection.channel(publisher_confirms=True, on_return_raises=True)
        await self._publish_channel.initialize()
        # The robust channel keeps the exchange objects and declares them again after every reconnect.
        await declare_topology(self._publish_channel, self._topology)
        self._admin_channel = connection.channel(publisher_confirms=False)
        await self._admin_channel.initialize()
        self._consume_channel = connection.channel(publisher_confirms=False)
        await self._consume_channel.initialize()
        await self._consume_channel.set_qos(prefetch_count=self._prefetch)
        # Exclusive: it lives exactly as long as this node's connection, and a second process that claims the
        # same NODE_ID is refused instead of silently sharing the queue.
        queue = await self._consume_channel.declare_queue(
            self._topology.node_queue_name(self._node_id), exclusive=True, durable=False
        )
        assert isinstance(queue, AbstractRobustQueue)
        self._node_queue = queue
        # aio-pika re-declares the queue (and the prefetch) whenever it reopens this channel, after a reconnect or
        # after the broker closed the channel alone; the consumer is ours, so we start it again each time.
        self._consume_channel.reopen_callbacks.add(self._on_consume_channel_reopened)
        await self._start_consumer()

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

    async def close(self) -> None:
        if not self._started or self._closing.is_set():
            return
        self._closing.set()
        try:
            async with asyncio.timeout(self._shutdown_timeout):
                await self._hand_back()
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            log.warning(
                "RabbitMQ backplane closed before everything routed to node %s was handed over (%s); "
                "messages still in its queue are lost",
                self._node_id,
                exc or type(exc).__name__,
            )
        finally:
            tasks = [task for task in (self._worker, *self._background) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._worker = None
            if self._ack_timer is not None:
                self._ack_timer.cancel()
                self._ack_timer = None
            self._connected.clear()
            if self._connection is not None:
                with contextlib.suppress(TimeoutError, *_BROKER_ERRORS):
                    async with asyncio.timeout(self._timeout):
                        await self._connection.close()
            self._bound.clear()
            for pool in (self._control_pool, self._probe_pool):
                if pool is not None:
                    pool.clear()
            self._inbox = None

    async def _hand_back(self) -> None:
        """Unbind everyone, then hand over what was already routed here (the hub moves it to mailboxes)."""
        # Over the control pool's channels at once (unbind never raises).
        await asyncio.gather(*(self.unbind(user) for user in list(self._bound)))
        if self._connected.is_set() and self._node_queue is not None and self._publish_channel is not None:
            # Nothing can be routed here any more; a marker sent now arrives behind everything that was. However
            # long the hub takes to move it to mailboxes: SHUTDOWN_TIMEOUT bounds the whole close.
            await self._send_marker(patience=None)
        local = _LocalMark()
        self._incoming.put_nowait(local)
        await local.reached.wait()

    @property
    def ready(self) -> bool:
        return self._started and self._connected.is_set() and not self._closing.is_set()

    async def settle_routed(self) -> None:
        """A marker through the default exchange to the node's own queue: FIFO, so when the worker reaches it,
        everything routed here before has been handed to the hub. Callers in the same loop turn share one marker
        (2,000 users leaving at a shutdown cost one round trip, not 2,000). Never raises: bounded by the RPC
        timeout, and if the connection drops meanwhile the queue died with what it held."""
        if not self._connected.is_set() or self._node_queue is None or self._closing.is_set():
            return
        round_ = self._settle_round
        if round_ is None:
            round_ = self._settle_round = asyncio.ensure_future(self._settle_once())
            self._background.add(round_)
            round_.add_done_callback(self._background.discard)
        # Shielded: one caller giving up must not cancel the marker the others wait for.
        await asyncio.shield(round_)

    async def _settle_once(self) -> None:
        # From here on a caller needs a marker sent after its call: the next round.
        self._settle_round = None
        await self._send_marker(patience=self._timeout)

    async def _send_marker(self, *, patience: float | None) -> None:
        """Send an empty message straight to the node's queue and wait until the worker reaches it (or the
        connection, and the queue with it, is gone); ``patience`` bounds the wait for it, the confirm is bounded
        by the RPC timeout. Never raises."""
        marker_id = f"marker-{uuid.uuid4().hex}"
        reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[marker_id] = reached
        try:
            # Through the default exchange, straight to the queue; like every publish on the publish channel,
            # through its ConfirmingPublisher (which numbers the channel's publishes).
            async with asyncio.timeout(self._timeout):
                publisher = await self._publisher()
                confirm = publisher.publish(
                    "", self._node_queue_name, b"", message_id=marker_id, message_type="warren.marker"
                )
                try:
                    await confirm
                finally:
                    publisher.forget(marker_id, confirm)
            async with asyncio.timeout(patience):
                await _first(reached, self._disconnected.wait())
        except (TimeoutError, BackplaneUnavailable, *_BROKER_ERRORS) as exc:
            log.warning("node %s could not mark the end of its queue: %s", self._node_id, exc or type(exc).__name__)
        finally:
            self._barriers.pop(marker_id, None)

    # -- binding --------------------------------------------------------------------------------------------

    async def bind(self, user: str) -> None:
        self._require(accepting=True)
        async with self._user_locks.hold(user):
            await self._bind_rpc(user)
            self._generation += 1
            self._bound[user] = self._generation

    async def unbind(self, user: str) -> None:
        async with self._user_locks.hold(user):
            if self._bound.pop(user, None) is None:
                return
            if not self._connected.is_set():
                # The binding died with the connection's queue, and the resync only re-binds users in _bound.
                return
            try:
                await self._unbind_rpc(user)
            except BackplaneUnavailable as exc:
                # Never raise here: the hub would skip putting the user's unacknowledged mail back. A binding
                # left behind only routes mail here, where the hub moves it to the mailbox.
                log.warning("could not unbind %r on node %s (%s); retrying in the background", user, self._node_id, exc)
                self._spawn(self._unbind_later(user))

    async def _unbind_later(self, user: str) -> None:
        await asyncio.sleep(self._reconnect_interval)
        async with self._user_locks.hold(user):
            if user not in self._bound and self._connected.is_set():
                with contextlib.suppress(BackplaneUnavailable):
                    await self._unbind_rpc(user)

    def _control(self) -> _ChannelPool:
        if self._control_pool is None:
            raise BackplaneUnavailable("not connected to RabbitMQ; reconnecting")
        return self._control_pool

    async def _bind_rpc(self, user: str) -> None:
        try:
            async with self._control().lend() as raw, asyncio.timeout(self._timeout):
                await raw.queue_bind(self._node_queue_name, self._topology.messages_exchange, routing_key(user))
        except (TimeoutError, BackplaneUnavailable, *_BROKER_ERRORS) as exc:
            if self._connected.is_set():
                # The bind may have reached the broker before it timed out: do not leave it behind. (Without a
                # connection there is nothing to undo: the queue and its bindings are gone.)
                with contextlib.suppress(BackplaneUnavailable):
                    await self._unbind_rpc(user)
            raise BackplaneUnavailable(
                f"could not bind {user!r} on RabbitMQ ({exc or type(exc).__name__}); try again in a moment"
            ) from exc

    async def _unbind_rpc(self, user: str) -> None:
        try:
            async with self._control().lend() as raw, asyncio.timeout(self._timeout):
                await raw.queue_unbind(self._node_queue_name, self._topology.messages_exchange, routing_key(user))
        except BackplaneUnavailable:
            raise
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(f"could not unbind {user!r}: {exc or type(exc).__name__}") from exc

    @property
    def _node_queue_name(self) -> str:
        return self._topology.node_queue_name(self._node_id)

    # -- publishing -----------------------------------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> PublishResult:
        self._require(accepting=True)
        await self._publish(self._topology.messages_exchange, envelope)
        return PublishResult.ACCEPTED

    async def store(self, envelope: Envelope) -> None:
        # Allowed while closing: the hub stores what it can no longer deliver during the hand-back.
        self._require(accepting=False)
        try:
            await self._publish(self._topology.mailbox_exchange, envelope)
        except MailboxFull:
            log.warning(
                "mailbox of %r is full: could not put back message %s; it stays with the caller",
                envelope.receiver,
                envelope.id,
            )
            raise
        generation = self._bound.get(envelope.receiver)
        if generation is not None and envelope.id != self._delivering and not self._closing.is_set():
            # Mail put back for a user who is (again) bound here: a connection of theirs closed with it
            # unacknowledged, maybe while another one was coming online and draining. Hand it over now rather
            # than at their next drain. Not for the envelope being delivered right now: the inbox put that one
            # back because no connection could take it, and would only refuse it again.
            self._schedule_catch_up(envelope.receiver, generation)

    async def _publish(self, exchange: str, envelope: Envelope) -> None:
        key = routing_key(envelope.receiver)
        receiver = envelope.receiver
        returns = 0
        nacks = 0
        # Mailbox declares so far when the latest attempt went out.
        declares_before = self._declares
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    try:
                        if returns:
                            # One lock per receiver keeps messages that came back together in their order
                            # while the first of them creates the mailbox.
                            async with self._return_locks.hold(receiver):
                                if returns > 1 or self._mailbox_declared.get(receiver, 0) <= declares_before:
                                    # Nobody created the mailbox since this message was routed (or it came back
                                    # again): create it. A burst to a user without one comes back all at once
                                    # and needs only one declare.
                                    await declare_mailbox(self._admin(), receiver, self._topology)
                                    self._declares += 1
                                    self._mailbox_declared[receiver] = self._declares
                                declares_before = self._declares
                                # Queued (so numbered and ordered) under the lock; the confirm is awaited after
                                # it, so that a burst that came back is not resent one round trip at a time.
                                publisher, confirm = await self._send(exchange, key, envelope)
                            if not self._return_locks.busy(receiver):
                                self._mailbox_declared.pop(receiver, None)
                        else:
                            publisher, confirm = await self._send(exchange, key, envelope)
                        try:
                            await confirm
                        finally:
                            publisher.forget(envelope.id, confirm)
                        return
                    except aiormq.exceptions.PublishError as exc:
                        # Returned: nobody has the user bound and there is no mailbox (or no binding to it).
                        if returns > 1:
                            raise BackplaneUnavailable(
                                f"RabbitMQ returned a message for {receiver!r} even after creating "
                                "their mailbox; check the bindings of the mailbox exchange"
                            ) from exc
                        returns += 1
                    except aiormq.exceptions.DeliveryError:
                        # A nack: the mailbox is full (overflow reject-publish). Once more, in case the nack came
                        # from a mailbox deleted (expired) at that very moment: the retry re-creates it.
                        nacks += 1
                        if nacks > 1:
                            raise MailboxFull(envelope.receiver) from None
        except TimeoutError as exc:
            raise BackplaneUnavailable(
                f"RabbitMQ did not confirm the message within {self._timeout:g} s; it may be overloaded or "
                "unreachable. Try again in a moment"
            ) from exc
        except _BROKER_ERRORS as exc:
            raise BackplaneUnavailable(
                f"RabbitMQ could not take the message ({exc or type(exc).__name__}); try again in a moment"
            ) from exc

    async def _send(
        self, exchange: str, key: str, envelope: Envelope
    ) -> tuple[ConfirmingPublisher, asyncio.Future[Any]]:
        """Queue ``envelope`` on the publish channel (``mandatory``, persistent); await the future, then ``forget``.

        The future fails with aiormq's ``PublishError`` when the broker returns the message, ``DeliveryError`` on a
        nack, and the channel's close reason (a broker error) when the channel or the connection dies first.
        """
        publisher = await self._publisher()
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

    async def _publisher(self) -> ConfirmingPublisher:
        """The publisher of the publish channel's current aiormq channel (a new one after aio-pika reopened it)."""
        publisher = self._confirming
        if publisher is None or publisher.channel.is_closed:
            assert self._publish_channel is not None
            raw = cast(aiormq.Channel, await self._publish_channel.get_underlay_channel())
            if publisher is None or publisher.channel is not raw:
                publisher = self._confirming = ConfirmingPublisher(raw)
        return publisher

    # -- mailboxes ------------------------------------------------------------------------------------------

    async def fetch_mail(self, user: str, max_count: int) -> MailBatch:
        self._require(accepting=False)
        batch, _ = await self._take_mail(user, max_count)
        return batch

    async def _take_mail(self, user: str, max_count: int) -> tuple[_RabbitMailBatch, int]:
        """Up to ``max_count`` of ``user``'s oldest mail, and how much the mailbox held when this began.

        A passive declare on a pooled probe channel tells whether the mailbox exists and how much it holds (a
        missing one closes that channel: the pool replaces it in the background). When it holds mail, that channel
        is kept for the batch: a consumer with a prefetch of the batch size takes the oldest messages in one
        stream (one round trip per message with ``basic.get`` made big mailboxes slow to drain), is cancelled, and
        the batch settles or releases them with one ``multiple`` frame.
        """
        name = self._topology.mailbox_queue_name(user)
        empty = _RabbitMailBatch([], None, None, self._timeout)
        pool = self._probe_pool
        if pool is None:
            raise BackplaneUnavailable("not connected to RabbitMQ; reconnecting")
        try:
            async with pool.lend() as probe:
                async with asyncio.timeout(self._timeout):
                    declared = await probe.queue_declare(name, passive=True)
        except ChannelNotFoundEntity:
            # No mailbox: the usual case.
            return empty, 0
        except (TimeoutError, *_BROKER_ERRORS) as exc:
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
            await _close_channel(channel, self._timeout)
            return empty, 0
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            await _close_channel(channel, self._timeout)
            raise BackplaneUnavailable(f"could not read {user!r}'s mail: {exc or type(exc).__name__}") from exc
        except BaseException:
            await _close_channel(channel, self._timeout)
            raise
        if not deliveries:
            await _close_channel(channel, self._timeout)
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
        return _RabbitMailBatch(envelopes, channel, last_tag, self._timeout), available

    # -- consuming ------------------------------------------------------------------------------------------
    #
    # The node queue is consumed with aiormq directly, not through aio-pika's Queue.consume: aio-pika builds an
    # IncomingMessage (every property decoded into attributes) and schedules a callback for each delivery, which
    # cost about as much CPU as all the rest of the consumer. Here a delivery is aiormq's DeliveredMessage, put on
    # the worker's queue as it is; the worker decodes its body once and remembers its delivery tag for the ack.

    async def _start_consumer(self) -> None:
        """Consume the node queue on the consume channel's current aiormq channel (once per channel)."""
        assert self._consume_channel is not None
        # The concrete class: the abstract one does not declare ``consumers``.
        raw = cast(aiormq.Channel, await self._consume_channel.get_underlay_channel())
        if self._consumer_tag in raw.consumers:
            return
        if self._on_consumer_cancelled not in raw.on_consumer_cancel_callbacks:
            raw.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        try:
            async with asyncio.timeout(self._timeout):
                await raw.basic_consume(
                    self._node_queue_name, self._on_delivery, no_ack=False, consumer_tag=self._consumer_tag
                )
        except BaseException:
            # aiormq registers the callback before the broker's consume-ok; a later attempt on this channel must
            # not take it for a running consumer.
            raw.consumers.pop(self._consumer_tag, None)
            raise

    async def _on_consume_channel_reopened(self, _channel: object) -> None:
        # Called by aio-pika once it has reopened the consume channel and declared the node queue on it again
        # (before the connection's reconnect callbacks: deliveries may start before ``_on_reconnected``; they
        # queue behind the resync that the connection loss queued, so they are handed over after the catch-up).
        if self._closing.is_set():
            return
        try:
            await self._start_consumer()
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            log.warning("could not consume node %s's queue after reopening its channel (%s)", self._node_id, exc)
            self._spawn(self._retry_consumer())

    async def _retry_consumer(self) -> None:
        while not self._closing.is_set():
            await asyncio.sleep(self._reconnect_interval)
            try:
                await self._start_consumer()
                return
            except (TimeoutError, *_BROKER_ERRORS) as exc:
                # A dead channel or connection: aio-pika reopens it and calls _on_consume_channel_reopened again.
                log.warning("could not consume node %s's queue (%s); retrying", self._node_id, exc)

    def _on_consumer_cancelled(self, frame: spec.Basic.Cancel) -> None:
        # The broker cancels a consumer whose queue was deleted (being exclusive, only by this node's own connection;
        # the management API refuses). Should it happen, declare the queue again, re-bind every user bound here and
        # catch up their mailboxes, as after a reconnect, rather than stop consuming for good. Mail routed here
        # meanwhile went to the mailboxes (nothing was bound); what sat in the deleted queue is lost with it.
        if frame.consumer_tag != self._consumer_tag or self._closing.is_set():
            return
        log.error("RabbitMQ cancelled the consumer of node %s's queue (deleted?); declaring it again", self._node_id)
        self._spawn(self._redeclare_node_queue())

    async def _redeclare_node_queue(self) -> None:
        assert self._consume_channel is not None
        try:
            raw = await self._consume_channel.get_underlay_channel()
            async with asyncio.timeout(self._timeout):
                await raw.queue_declare(self._node_queue_name, exclusive=True, durable=False)
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            # The channel or the connection died: reopening it declares the queue and starts the consumer.
            log.warning("could not declare node %s's queue again: %s", self._node_id, exc)
        # Queued before the consumer starts, so every delivery from the new queue is handed over after the catch-up.
        self._resync_users.update(self._bound)
        if not self._resync_queued:
            self._resync_queued = True
            self._incoming.put_nowait(_RESYNC)
        with contextlib.suppress(TimeoutError, *_BROKER_ERRORS):
            await self._start_consumer()

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        # aiormq runs this in a task of its own per delivery, in delivery order, and nothing here awaits: the worker
        # below hands deliveries over one at a time, which keeps the order.
        self._incoming.put_nowait(message)

    async def _work(self) -> None:
        get = self._incoming.get
        while True:
            item = await get()
            try:
                if type(item) is DeliveredMessage:
                    await self._handle(item)
                elif isinstance(item, _FlushAcks):
                    self._ack_timer = None
                    await self._flush_acks()
                elif isinstance(item, _Resync):
                    await self._flush_acks()
                    await self._resync()
                elif isinstance(item, _CatchUp):
                    await self._flush_acks()
                    self._catch_up_queued.discard(item.user)
                    try:
                        await self._catch_up(item.user, item.generation)
                    except BackplaneUnavailable as exc:
                        log.warning("could not hand %r's mail over now (%s); it waits in the mailbox", item.user, exc)
                elif isinstance(item, _LocalMark):
                    await self._flush_acks()
                    item.reached.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("RabbitMQ backplane worker failed on %r; continuing", item)

    async def _handle(self, message: DeliveredMessage) -> None:
        channel = message.channel
        # Always set on a Basic.Deliver (pamqp types every field as optional).
        tag = cast(int, cast(spec.Basic.Deliver, message.delivery).delivery_tag)
        if self._ack_tags and channel is not self._ack_channel:
            # Delivery tags count per channel: never let a multiple-ack on a new channel stand for an old one.
            await self._flush_acks()
        body = message.body
        if not body and (marker := self._barriers.get(cast(str, message.header.properties.message_id))):
            # Envelopes are never empty; markers are.
            await self._flush_acks()
            await _quietly(channel.basic_ack(tag, wait=False))
            if not marker.done():
                marker.set_result(None)
            return
        try:
            envelope = Envelope.from_body(body)
        except InvalidMessage as exc:
            log.warning("dropping a message on node %s that is not a Warren envelope: %s", self._node_id, exc)
            await self._flush_acks()
            await _quietly(channel.basic_reject(tag, requeue=False, wait=False))
            return
        assert self._inbox is not None
        self._delivering = envelope.id
        try:
            await self._inbox.deliver(envelope)
        except Exception as exc:
            await self._delivery_failed(channel, tag, envelope, exc)
            return
        finally:
            self._delivering = None
        if self._attempts:
            self._attempts.pop(envelope.id, None)
        self._ack_channel = channel
        tags = self._ack_tags
        tags.append(tag)
        if len(tags) >= ACK_BATCH:
            await self._flush_acks()
        elif self._ack_timer is None:
            # One timer per batch (cheaper than a timeout around every wait for the next delivery); what it queues
            # comes after the deliveries already queued, so a busy worker fills the batch first.
            self._ack_timer = asyncio.get_running_loop().call_later(
                ACK_DELAY, self._incoming.put_nowait, _FLUSH_ACKS
            )

    async def _delivery_failed(self, channel: RawChannel, tag: int, envelope: Envelope, exc: Exception) -> None:
        attempts = self._attempts.pop(envelope.id, 0) + 1
        if attempts >= MAX_DELIVERY_ATTEMPTS:
            log.error(
                "giving up on message %s to %r after %d failed deliveries; it is dropped",
                envelope.id,
                envelope.receiver,
                attempts,
                exc_info=exc,
            )
            await self._flush_acks()
            await _quietly(channel.basic_reject(tag, requeue=False, wait=False))
            return
        self._attempts[envelope.id] = attempts
        pause = min(_MAX_RETRY_PAUSE, _FIRST_RETRY_PAUSE * 2 ** (attempts - 1))
        log.warning(
            "delivering %s to %r failed (%s: %s); requeueing it in %.2g s",
            envelope.id,
            envelope.receiver,
            type(exc).__name__,
            exc,
            pause,
        )
        # Requeued later, off the worker: the pause must not hold up every other user's messages.
        held = (channel, tag)
        self._held_back.add(held)
        self._spawn(self._requeue_later(held, pause))

    async def _requeue_later(self, held: tuple[RawChannel, int], pause: float) -> None:
        try:
            await asyncio.sleep(pause)
            channel, tag = held
            await _quietly(channel.basic_nack(tag, requeue=True, wait=False))
        finally:
            self._held_back.discard(held)

    async def _flush_acks(self) -> None:
        """Acknowledge every delivery handed to the inbox so far; with one frame unless some are held back."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        tags, self._ack_tags = self._ack_tags, []
        channel = self._ack_channel
        if not tags or channel is None:
            return
        # If the channel died meanwhile, the broker has requeued these (or dropped them with the queue): either
        # way they were delivered once already, and envelope ids let clients drop duplicates. ``wait=False``: the
        # frame only has to be queued for the connection's writer, not written yet (acks free prefetch slots).
        if self._held_back:
            # A multiple-ack would also settle the held-back deliveries, whose tags are lower.
            for tag in tags:
                await _quietly(channel.basic_ack(tag, wait=False))
        else:
            await _quietly(channel.basic_ack(tags[-1], multiple=True, wait=False))

    # -- reconnection ---------------------------------------------------------------------------------------

    def _on_connection_lost(self, _connection: object, exc: BaseException | None) -> None:
        self._connected.clear()
        self._disconnected.set()
        if self._closing.is_set() or not self._started:
            return
        log.warning(
            "lost the RabbitMQ connection of node %s (%s); reconnecting every %g s. Mail for its %d users goes to "
            "their mailboxes meanwhile",
            self._node_id,
            exc or "closed",
            self._reconnect_interval,
            len(self._bound),
        )
        self._resync_users.update(self._bound)
        if not self._resync_queued:
            self._resync_queued = True
            self._incoming.put_nowait(_RESYNC)

    def _on_reconnected(self, _connection: object) -> None:
        if self._closing.is_set():
            return
        log.info("reconnected node %s to RabbitMQ", self._node_id)
        self._disconnected.clear()
        self._connected.set()

    async def _resync(self) -> None:
        """Re-bind the users bound before the connection was lost, then deliver what reached their mailboxes."""
        self._resync_queued = False
        await _first(self._connected.wait(), self._closing.wait())
        if self._closing.is_set():
            return
        users, self._resync_users = self._resync_users, {}
        # Deliveries from the lost connection cannot be requeued any more: forget their failures.
        self._attempts.clear()

        async def rebind(user: str, generation: int) -> bool:
            async with self._user_locks.hold(user):
                if self._bound.get(user) != generation:
                    return False
                await self._bind_rpc(user)
                return True

        # In parallel over the control pool's channels.
        outcomes = await asyncio.gather(
            *(rebind(user, generation) for user, generation in users.items()), return_exceptions=True
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
        log.info("node %s re-bound %d users after reconnecting", self._node_id, len(rebound))
        for user, generation in rebound.items():
            try:
                await self._catch_up(user, generation)
            except BackplaneUnavailable as exc:
                log.warning("catching up mail after reconnect stopped: %s", exc)
                return

    async def _catch_up(self, user: str, generation: int) -> None:
        """Hand ``user``'s mailbox to the inbox, up to what it held when this began.

        Bounded, so mail the hub puts straight back (no connection could take it) cannot loop.
        """
        assert self._inbox is not None
        quota: int | None = None
        while self._bound.get(user) == generation and (quota is None or quota > 0):
            batch, available = await self._take_mail(user, SWEEP_BATCH if quota is None else min(quota, SWEEP_BATCH))
            if quota is None:
                quota = available
            if not batch.envelopes:
                await batch.settle()
                return
            quota -= len(batch.envelopes)
            try:
                for envelope in batch.envelopes:
                    self._delivering = envelope.id
                    await self._inbox.deliver(envelope)
            except Exception:
                log.exception("handing %r's mailbox to the inbox failed; the rest stays in the mailbox", user)
                await batch.release()
                return
            finally:
                self._delivering = None
            await batch.settle()

    def _schedule_catch_up(self, user: str, generation: int) -> None:
        if user not in self._catch_up_queued:
            self._catch_up_queued.add(user)
            self._incoming.put_nowait(_CatchUp(user, generation))

    # -- helpers --------------------------------------------------------------------------------------------

    def _require(self, *, accepting: bool) -> None:
        if not self._started or (accepting and self._closing.is_set()):
            raise BackplaneUnavailable("this node's RabbitMQ backplane is not running (starting or shutting down)")
        if not self._connected.is_set():
            raise BackplaneUnavailable("the connection to RabbitMQ is lost; reconnecting. Try again in a moment")

    def _admin(self) -> AbstractRobustChannel:
        assert self._admin_channel is not None
        return self._admin_channel

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _first(*waits: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> None:
    """Wait until the first of ``waits`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _close_channel(channel: RawChannel, timeout: float) -> None:
    """Close a short-lived channel, never cancelling the close itself.

    aiormq answers a cancelled ``Channel.Close`` by sending a second one, which RabbitMQ treats as a connection
    error (504 CHANNEL_ERROR) and closes the whole connection. So the close runs in its own task: a caller that
    is cancelled or times out stops waiting, the close carries on.
    """
    closing = asyncio.ensure_future(channel.close())
    closing.add_done_callback(_ignore_outcome)
    with contextlib.suppress(TimeoutError, *_BROKER_ERRORS):
        await asyncio.wait_for(asyncio.shield(closing), timeout)


def _ignore_outcome(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _quietly(settlement: Awaitable[None]) -> None:
    try:
        await settlement
    except (*_BROKER_ERRORS, RuntimeError) as exc:
        log.debug("could not settle a delivery (channel gone): %s", exc)


def _safe_url(amqp_url: str) -> str:
    url = URL(amqp_url)
    return str(url.with_password("***")) if url.password else str(url)
