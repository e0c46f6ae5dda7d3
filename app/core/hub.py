"""The hub: this node's online users, delivery to their connections, and mailbox drain order.

A user is *online on this node* while at least one of their connections here is subscribed to their channel.
The first such subscription binds the user on the backplane; the last one leaving unbinds them.

Guarantees (given the backplane contract in ``app.core.abc``):

* **Ordering.** When a user comes online, the node binds first and then drains the mailbox; live messages that
  arrive during the drain are held and written after it. Messages from one sender to one receiver therefore
  reach the client in send order across an offline → online change. When a user's last connection here leaves,
  the node unbinds them and waits until what was routed here before the unbind has been moved to the mailbox
  (``Backplane.settle_routed``) before another subscribe of that user may drain it; drains sort by ``(ts, id)``.
* **No loss in the leave race.** A live message whose receiver has no subscribed connection here any more (they
  left between routing and delivery) is written to the mailbox before ``deliver`` returns, so before the
  backplane acknowledges it.
* **Mailbox mail is delivered once**: to this node's connections when the user comes online, or by
  ``pull_mail``, whichever takes it first. If every connection refuses it (closing or over its buffer bound),
  the batch is put back.
* **Client acknowledgements.** Envelopes a connection received in a client-ack mode and had not acknowledged
  when it closed go back to the mailbox (with the same id, so clients can drop duplicates).
* **Bounded in bytes as stored.** ``MAX_MESSAGE_BYTES`` bounds a message's content as the envelope stores it
  (UTF-8 with JSON escapes: a control character counts its six-byte escape), so what a mailbox, a batch or a pull
  holds is bounded by what was checked: a drain batch (``MAILBOX_BATCH`` envelopes) by the mailbox's own byte
  bound (``MAILBOX_MAX_BYTES``). A REST pull returns about ``BATCH_BYTES`` at most: it fetches in batches, the
  first of no more envelopes than that many of the largest possible size, later ones as many as fit at the
  largest size seen so far, and stops once it holds ``BATCH_BYTES`` (where later mail is larger than what was
  seen, one batch can take it past that, never past the mailbox's byte bound).

The parts: the ordered return path to the mailboxes is ``app.core.returns``, the counters ``app.core.stats``.

What can be lost: a message written to a connection in auto-ack mode whose socket dies before the client read
it (at-most-once past the write, as STOMP's ``ack:auto`` means).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .abc import Backplane, PublishResult, Subscriber, UserDirectory
from .envelope import Envelope
from .errors import (
    BackplaneUnavailable,
    InvalidMessage,
    InvalidUsername,
    MessageTooLarge,
    RateLimited,
    TooManySessions,
    UnknownUser,
)
from .identity import normalize_username
from .keyed_lock import KeyedLock
from .limits import RateLimiter
from .pacing import Pacer
from .returns import MailboxReturns
from .stats import HubStats

#: How many mailbox envelopes one fetch takes at most while draining.
MAILBOX_BATCH = 500
#: Bytes (as stored) one REST pull returns at most (about: see the module docstring).
BATCH_BYTES = 4 * 1024 * 1024
#: Bytes an envelope's JSON adds to its content at most: id, timestamp, keys and two usernames (64 characters of
#: up to 4 UTF-8 bytes each; usernames hold nothing JSON escapes).
ENVELOPE_OVERHEAD = 1024
#: Live envelopes held for one user while their mailbox drains; past it they go to the mailbox behind the rest.
HELD_WHILE_DRAINING_MAX = 10_000
#: SUBSCRIBE/UNSUBSCRIBE frames per second one user may send through this node, and the burst: 32 tabs opening at
#: once subscribe about 64 times.
SUBSCRIPTIONS_PER_USER_RATE = 10.0
SUBSCRIPTIONS_PER_USER_BURST = 100


class _BatchSizer:
    """How many envelopes the next mailbox fetch of one drain or pull takes, for about a byte budget."""

    __slots__ = ("_largest_possible", "_largest_seen")

    #: Below this, an envelope size seen says little about the next ones: estimate with it.
    SMALLEST_ESTIMATE = 2048

    def __init__(self, largest_possible: int) -> None:
        self._largest_possible = largest_possible
        self._largest_seen = 0

    def count(self, budget: int) -> int:
        estimate = max(self._largest_seen, self.SMALLEST_ESTIMATE) if self._largest_seen else self._largest_possible
        return max(1, min(MAILBOX_BATCH, budget // estimate))

    def saw(self, envelopes: Sequence[Envelope]) -> int:
        """Note a batch's envelopes; returns their bytes."""
        sizes = [len(envelope.body) for envelope in envelopes]
        if sizes:
            self._largest_seen = max(self._largest_seen, *sizes)
        return sum(sizes)


@dataclass
class _Presence:
    subscribers: list[Subscriber]
    #: Live envelopes waiting for the mailbox drain to finish; None once the user is fully online.
    held: list[Envelope] | None = field(default_factory=list)


class Hub:
    """Implements ``Inbox`` for the backplane and the send/subscribe API for the transports."""

    def __init__(
        self,
        backplane: Backplane,
        directory: UserDirectory,
        *,
        max_message_bytes: int,
        message_rate: float = 0,
        message_burst: float = 1,
        max_sessions_per_user: int = 1_000_000,
        connection_message_rate: float = 0,
        connection_message_burst: float = 1,
    ) -> None:
        self.backplane = backplane
        self.directory = directory
        self.max_message_bytes = max_message_bytes
        self.max_sessions_per_user = max_sessions_per_user
        # Read by each STOMP connection for its own bucket: one runaway tab cannot use a user's whole allowance.
        self.connection_message_rate = connection_message_rate
        self.connection_message_burst = connection_message_burst
        # Per sender, shared by every connection and the HTTP API on this node; 0 turns it off.
        self._send_limits = RateLimiter(message_rate, message_burst) if message_rate > 0 else None
        #: SUBSCRIBE/UNSUBSCRIBE per user on this node (each can bind or unbind the user on the broker); the STOMP
        #: layer also limits each connection. Per user too, so reconnecting does not buy a fresh allowance.
        self.subscription_limits = RateLimiter(SUBSCRIPTIONS_PER_USER_RATE, SUBSCRIPTIONS_PER_USER_BURST)
        self.stats = HubStats()
        #: Connection set-up steps (SockJS open, STOMP CONNECT/SUBSCRIBE, post-bind drain) pass through it, so a
        #: reconnect storm is spread over loop iterations instead of stalling them (``app.core.pacing``).
        self.pacer = Pacer()
        self._presence: dict[str, _Presence] = {}
        #: One lock per user while anyone needs it, so bind, drain and unbind of one user never interleave.
        self._user_locks = KeyedLock()
        #: Mail on its way back to mailboxes, in order per user (``app.core.returns``).
        self._returns = MailboxReturns(backplane)
        #: Set by ``leave_all`` (shutdown): nobody comes online here any more.
        self._leaving_all = False

    # -- what transports call -------------------------------------------------------------------------------

    def check_message(self, receiver: str, content: str) -> str:
        """Raise the error a send of ``content`` to ``receiver`` would meet, without sending; else return the
        receiver's stored name (``ｂｏｂ`` typed in fullwidth is ``bob``, as at sign-in)."""
        if not isinstance(receiver, str) or not isinstance(content, str) or not receiver:
            raise InvalidMessage("a message needs a receiver and a content, both strings")
        size = stored_size(content)
        if size > self.max_message_bytes:
            raise MessageTooLarge(size, self.max_message_bytes)
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMessage("the message is not valid UTF-8 text") from exc
        if self.directory.exists(receiver):
            return receiver
        try:
            # Only when the name as given is unknown: the common case costs no normalisation.
            normalized = normalize_username(receiver)
        except InvalidUsername:
            raise UnknownUser(receiver) from None
        if normalized == receiver or not self.directory.exists(normalized):
            raise UnknownUser(receiver)
        return normalized

    async def send(self, sender: str, receiver: str, content: str) -> tuple[Envelope, PublishResult]:
        """Accept a message from ``sender`` (always the signed-in user, never a client field)."""
        try:
            if self._send_limits is not None:
                bucket = self._send_limits.bucket(sender)
                if not bucket.take():
                    raise RateLimited(
                        f"too many messages: at most {bucket.rate:g} per second (bursts of {bucket.burst:g})",
                        bucket.retry_after(),
                    )
            receiver = self.check_message(receiver, content)
            envelope = Envelope.create(sender, receiver, content)
            started = time.monotonic()
            result = await self.backplane.publish(envelope)
            self.stats.publish_latency.observe(time.monotonic() - started)
        except Exception as exc:
            self.stats.refuse(getattr(exc, "reason", "internal"))
            raise
        self.stats.accepted += 1
        return envelope, result

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Bring ``subscriber`` online: bind its user here if it is the first, then drain their mailbox."""
        user = subscriber.user
        if self._leaving_all:
            raise BackplaneUnavailable("this node is shutting down: reconnect to another one")
        async with self._user_locks.hold(user):
            presence = self._presence.get(user)
            if presence is not None and presence.subscribers:
                if len(presence.subscribers) >= self.max_sessions_per_user:
                    raise TooManySessions(user, self.max_sessions_per_user)
                presence.subscribers.append(subscriber)
                return
            if presence is not None:
                # The user's last connection here is leaving (still bound, its mail on the way back to the
                # mailbox): take its place, and drain once that mail is stored.
                presence.subscribers.append(subscriber)
                presence.held = []
                await self._returns.flushed(user)
            else:
                presence = _Presence([subscriber])
                self._presence[user] = presence
                try:
                    await self._returns.flushed(user)
                    await self.backplane.bind(user)
                except BaseException:
                    del self._presence[user]
                    raise
            try:
                # Hundreds of binds complete in one burst of broker replies during a reconnect storm.
                await self.pacer.turn()
                await self._drain_mailbox(user, presence)
                # Live mail that arrived during the drain, with flow control; what arrives meanwhile queues
                # behind it in ``held``, so nothing overtakes.
                while presence.held and presence.subscribers:
                    envelope = presence.held.pop(0)
                    if not self._push(presence, envelope):
                        await self._to_mailbox(envelope)
                    for subscriber in list(presence.subscribers):
                        await subscriber.ready_for_more()
            finally:
                held, presence.held = presence.held or [], None
                for envelope in held:
                    if not self._push(presence, envelope):
                        await self._to_mailbox(envelope)

    def leave_now(self, subscriber: Subscriber) -> None:
        """The part of leaving that cannot wait: nothing more is pushed to ``subscriber``, and what it had not
        received is queued for the mailbox ahead of anything for the same user that arrives later (so a slow
        consumer's mail keeps its order). Called from synchronous code (a connection closing itself)."""
        presence = self._presence.get(subscriber.user)
        if presence is not None and subscriber in presence.subscribers:
            presence.subscribers.remove(subscriber)
        returned = list(subscriber.take_unacknowledged())
        if not returned:
            return
        self.stats.returned_unacked += len(returned)
        if presence is not None and presence.subscribers:
            if presence.held is not None:
                # Draining: these are older than the live mail held behind the drain.
                presence.held[0:0] = returned
                return
            # The user's other connections here take it now; only what none of them takes waits in the mailbox.
            returned = [envelope for envelope in returned if not self._push(presence, envelope)]
        if returned:
            self._returns.queue(subscriber.user, returned)

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        """Take ``subscriber`` offline; what it had not received goes back to the mailbox, in order."""
        user = subscriber.user
        self.leave_now(subscriber)
        async with self._user_locks.hold(user):
            # Returned mail is in the mailbox before the unbind: mail published after the unbind goes there
            # straight (alternate exchange) and must not overtake it. Under the lock: a subscribe of the same
            # user waits, and its drain then finds all of it.
            await self._returns.flushed(user)
            presence = self._presence.get(user)
            if presence is not None and not presence.subscribers:
                del self._presence[user]
                await self.backplane.unbind(user)
                # Mail routed here before the unbind may still be in flight; this node moves it to the mailbox
                # as it arrives. A subscribe of the same user waits for this lock, so its drain must find that
                # mail there too, or it would arrive live after newer mail drained from the mailbox.
                await self.backplane.settle_routed()
                await self._returns.flushed(user)

    async def leave_all(self) -> None:
        """Shutdown: every user here goes offline at once, not one connection at a time.

        Nobody may subscribe from now on. Every connection's unreceived mail is queued for the mailbox and stored
        before the unbind (later mail goes there straight and must not overtake it); then every user is unbound
        with one ``Backplane.unbind_all``, which returns once what was routed here meanwhile reached the inbox
        (which moves it to the mailboxes). Connections closing afterwards leave nothing to undo.
        """
        self._leaving_all = True
        users = list(self._presence)
        for user in users:
            presence = self._presence.pop(user)
            # Emptied first, so that no connection's returned mail is offered to another one that is leaving too.
            subscribers, presence.subscribers = presence.subscribers, []
            returned = [envelope for subscriber in subscribers for envelope in subscriber.take_unacknowledged()]
            if returned:
                self.stats.returned_unacked += len(returned)
                self._returns.queue(user, returned)
        await asyncio.gather(*(self._returns.flushed(user) for user in users))
        await self.backplane.unbind_all(users)
        await asyncio.gather(*(self._returns.flushed(user) for user in self._returns.users()))

    async def give_back(self, envelope: Envelope) -> None:
        """An envelope its receiver's connection handed back (STOMP NACK): into their mailbox with its id, after
        whatever is already on its way back there for them (``leave_now``'s ordered return). Raises the
        backplane's ``WarrenError`` (``MailboxFull``, ``BackplaneUnavailable``) with nothing stored: the envelope
        is then still the caller's."""
        await self._returns.flushed(envelope.receiver)
        await self.backplane.store(envelope)
        self.stats.returned_unacked += 1

    async def pull_mail(self, user: str, max_count: int, max_bytes: int = BATCH_BYTES) -> list[Envelope]:
        """Take and remove up to ``max_count`` of ``user``'s mailbox envelopes, about ``max_bytes`` of them as
        stored at most (the seed's REST pull); the rest waits for the next pull."""
        envelopes: list[Envelope] = []
        sizer = self._batch_sizer()
        size = 0
        while len(envelopes) < max_count and size < max_bytes:
            count = min(max_count - len(envelopes), sizer.count(max_bytes - size))
            batch = await self.backplane.fetch_mail(user, count)
            await batch.settle()
            if not batch.envelopes:
                break
            envelopes.extend(batch.envelopes)
            size += sizer.saw(batch.envelopes)
        envelopes.sort(key=_sent_at)
        self.stats.mailbox_delivered += len(envelopes)
        return envelopes

    def _batch_sizer(self) -> _BatchSizer:
        return _BatchSizer(self.max_message_bytes + ENVELOPE_OVERHEAD)

    def online_users(self) -> list[str]:
        return list(self._presence)

    def is_online(self, user: str) -> bool:
        return user in self._presence

    # -- Inbox: what the backplane calls ----------------------------------------------------------------------

    async def deliver(self, envelope: Envelope) -> None:
        presence = self._presence.get(envelope.receiver)
        if presence is None or not presence.subscribers:
            # The receiver left between routing and delivery: keep the message for them.
            await self._to_mailbox(envelope)
            return
        if presence.held is not None:
            if len(presence.held) < HELD_WHILE_DRAINING_MAX:
                presence.held.append(envelope)
            else:
                await self._to_mailbox(envelope)
            return
        if not self._push(presence, envelope):
            await self._to_mailbox(envelope)

    # -- internals --------------------------------------------------------------------------------------------

    def _push(self, presence: _Presence, envelope: Envelope) -> bool:
        taken = False
        # A copy: a subscriber over its send bound leaves the list while being pushed to (``leave_now``).
        for subscriber in list(presence.subscribers):
            if subscriber.push(envelope):
                taken = True
        if taken:
            self.stats.delivered_live += 1
            self.stats.delivery_latency.observe(max(0.0, time.time() - envelope.ts / 1000))
        return taken

    async def _drain_mailbox(self, user: str, presence: _Presence) -> None:
        while presence.subscribers:
            # By count: the sort below keeps order across what a batch holds, and MAILBOX_MAX_BYTES bounds its bytes.
            batch = await self.backplane.fetch_mail(user, MAILBOX_BATCH)
            if not batch.envelopes:
                await batch.settle()
                return
            # Mailbox order is arrival order. Around an unbind a message still in flight to this node can reach
            # the mailbox after one published later (which went there straight); the send time puts them back
            # in order within a batch (stable: equal times keep the mailbox's order).
            for envelope in sorted(batch.envelopes, key=_sent_at):
                if not any([subscriber.push(envelope) for subscriber in list(presence.subscribers)]):
                    # Nobody could take it: keep the whole batch (ids let clients drop what they already have).
                    await batch.release()
                    return
                # Flow control: a mailbox can hold far more than a connection's send buffer.
                for subscriber in list(presence.subscribers):
                    await subscriber.ready_for_more()
            await batch.settle()
            self.stats.mailbox_delivered += len(batch.envelopes)

    async def _to_mailbox(self, envelope: Envelope) -> None:
        """Store a live envelope in its receiver's mailbox; returns once it is stored (before the backplane acks)."""
        self.stats.moved_to_mailbox += 1
        await self._returns.store(envelope)


def stored_size(content: str) -> int:
    """Bytes ``content`` takes in an envelope: UTF-8, with JSON's escapes (a quote or newline counts two bytes, other
    control characters six). Lone surrogates count three bytes (they are refused as invalid anyway)."""
    if content.isascii() and content.isprintable() and '"' not in content and "\\" not in content:
        return len(content)
    return len(json.dumps(content, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2


def _sent_at(envelope: Envelope) -> tuple[int, str]:
    # Message ids start with the sending node's clock in nanoseconds (``new_message_id``): within one
    # millisecond they keep one sender's order. (Older ids are random, which only matters for ties.)
    return envelope.ts, envelope.id
