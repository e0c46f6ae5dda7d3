"""One connection's subscriptions and the messages they hold unacknowledged.

Guarantees:

* **Only one's own destinations.** A client subscribes to ``/user/topic/reply`` (chat) or ``/user/queue/errors``
  (refusals of its SENDs), or to the Spring-style ``/user/<name>/...`` forms of them for its own name only;
  anything else is a ``FrameError`` (ERROR, close).
* **Bounded.** At most ``MAX_SUBSCRIPTIONS`` per connection, each holding at most ``MAX_UNACKED`` envelopes in a
  client-ack mode (past that the client is a slow consumer); SUBSCRIBE/UNSUBSCRIBE are limited per connection
  (``SUBSCRIPTION_RATE``) and, by the hub, per user, since each can bind or unbind the user on the broker.
* **Acknowledgement order.** ``ack:client`` settles cumulatively (the message and every earlier one of that
  subscription), ``ack:client-individual`` one message. What is taken back (``take_unacknowledged``) comes in
  delivery order, each envelope once even when several subscriptions hold it.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..core.envelope import Envelope
from ..core.limits import TokenBucket
from .frames import Frame, FrameError

MAX_SUBSCRIPTIONS = 16
#: SUBSCRIBE and UNSUBSCRIBE frames one connection may send per second, and the burst above that. A page subscribes
#: two or three times when it connects; every subscribe and unsubscribe of the chat channel can bind or unbind
#: the user on the broker, so a client that churns them (250 pairs a second, measured) is refused. The hub also
#: limits them per user (``Hub.subscription_limits``), so reconnecting does not buy a fresh allowance.
SUBSCRIPTION_RATE = 2.0
SUBSCRIPTION_BURST = 20
#: Envelopes one subscription may hold unacknowledged in a client-ack mode before it is a slow consumer.
MAX_UNACKED = 1_000

ACK_MODES = ("auto", "client", "client-individual")


class Channel(enum.Enum):
    """The destinations a client may subscribe to, by code (the seed's channel enum)."""

    REPLY = "/user/topic/reply"
    ERRORS = "/user/queue/errors"


@dataclass(slots=True)
class Subscription:
    id: str
    channel: Channel
    ack: str  # auto | client | client-individual
    unacked: OrderedDict[str, Envelope] = field(default_factory=OrderedDict)


class Subscriptions:
    """A connection's subscriptions by id, in the order they were made."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_id.values())

    def add(self, frame: Frame, user: str, version: str | None) -> Subscription:
        """The subscription a SUBSCRIBE frame asks for, added; a ``FrameError`` says what is wrong with it."""
        destination = frame.get("destination")
        if not destination:
            raise FrameError("SUBSCRIBE needs a destination header")
        channel = channel_for(destination, user)
        sub_id = frame.get("id") or (destination if version == "1.0" else None)
        if sub_id is None:
            raise FrameError("SUBSCRIBE needs an id header")
        if sub_id in self._by_id:
            raise FrameError(f"subscription id {sub_id!r} is already in use")
        if len(self._by_id) >= MAX_SUBSCRIPTIONS:
            raise FrameError(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        ack = frame.get("ack") or "auto"
        if ack not in ACK_MODES:
            raise FrameError(f"unknown ack mode {ack[:30]!r}: use auto, client or client-individual")
        subscription = self._by_id[sub_id] = Subscription(sub_id, channel, ack)
        return subscription

    def named(self, frame: Frame, version: str | None) -> Subscription:
        """The subscription an UNSUBSCRIBE frame names."""
        sub_id = frame.get("id") or (frame.get("destination") if version == "1.0" else None)
        subscription = self._by_id.get(sub_id or "")
        if subscription is None:
            raise FrameError(f"no subscription with id {sub_id!r}")
        return subscription

    def remove(self, subscription: Subscription) -> None:
        del self._by_id[subscription.id]

    def errors(self) -> Subscription | None:
        """The first subscription to ``/user/queue/errors``, if any."""
        return next((s for s in self._by_id.values() if s.channel is Channel.ERRORS), None)

    def replies_besides(self, subscription: Subscription) -> bool:
        """Whether another subscription than ``subscription`` is to the chat channel."""
        return any(s.channel is Channel.REPLY for s in self._by_id.values() if s is not subscription)

    def over(self, count: int) -> bool:
        """Whether a subscription holds more than ``count`` unacknowledged envelopes."""
        return any(len(s.unacked) > count for s in self._by_id.values())

    def settle(self, frame: Frame, version: str | None) -> list[tuple[Subscription, Envelope]]:
        """Take what an ACK or NACK frame settles out of the unacknowledged ones, oldest first."""
        message_id = frame.get("id") if version == "1.2" else frame.get("message-id")
        if not message_id:
            raise FrameError(f"{frame.command} needs an {'id' if version == '1.2' else 'message-id'} header")
        sub_id = frame.get("subscription")
        subs = [self._by_id[sub_id]] if sub_id in self._by_id else list(self._by_id.values())
        settled: list[tuple[Subscription, Envelope]] = []
        for sub in subs:
            if message_id not in sub.unacked:
                continue
            if sub.ack == "client":
                # Cumulative: this message and every earlier one of the subscription.
                while sub.unacked:
                    key, envelope = sub.unacked.popitem(last=False)
                    settled.append((sub, envelope))
                    if key == message_id:
                        break
            else:
                settled.append((sub, sub.unacked.pop(message_id)))
        return settled

    @staticmethod
    def keep(settled: Sequence[tuple[Subscription, Envelope]]) -> None:
        """Put settled envelopes back in front of their subscriptions' unacknowledged ones, in their order."""
        for sub, envelope in reversed(settled):
            sub.unacked[envelope.id] = envelope
            sub.unacked.move_to_end(envelope.id, last=False)

    def take_unacknowledged(self) -> list[Envelope]:
        seen: dict[str, Envelope] = {}
        for sub in self._by_id.values():
            for message_id, envelope in sub.unacked.items():
                seen.setdefault(message_id, envelope)
            sub.unacked.clear()
        # In delivery order (of the first subscription that holds each).
        return list(seen.values())


def subscription_refusal(connection: TokenBucket, user: TokenBucket) -> str | None:
    """Take a SUBSCRIBE/UNSUBSCRIBE token from the connection's and the user's buckets; past either limit, the
    reason to tell the client (nothing is taken then from the connection's)."""
    if connection.available() and user.take():
        connection.take()
        return None
    limit = connection if not connection.available() else user
    return (
        f"subscribing and unsubscribing too fast: at most {limit.rate:g} a second"
        f"{'' if limit is connection else ' for one user'}; reconnect in {max(1.0, limit.retry_after()):.0f} s"
    )


def channel_for(destination: str, user: str) -> Channel:
    for channel in Channel:
        if destination == channel.value:
            return channel
    # Spring-style explicit user destinations: /user/<name>/topic/reply, only for oneself.
    if destination.startswith("/user/"):
        rest = destination[len("/user/") :]
        for channel in Channel:
            suffix = channel.value[len("/user") :]
            if rest.endswith(suffix):
                owner = rest[: -len(suffix)]
                if owner == user:
                    return channel
                raise FrameError("cannot subscribe to another user's destination")
    raise FrameError(f"unknown destination {destination[:60]!r}: subscribe to /user/topic/reply")
