"""Publishing with publisher confirms on an aiormq channel, many messages per socket write.

aiormq's ``Channel.basic_publish`` spends more CPU per message than the broker does: it builds pamqp frame objects
and marshals them field by field, queues one write per message for the connection's writer task (one ``send``
system call each) and wakes the publisher once more when that write has happened. ``ConfirmingPublisher``
encodes the three frames of a publish directly (``encode_publish``, checked against pamqp in the tests), and
writes every message published during one turn of the event loop with one write: under load, one system call
carries dozens of messages.

It keeps aiormq's bookkeeping, so aiormq's frame reader settles the publishes exactly as its own: each message
gets the channel's next delivery tag and a future in ``channel.confirmations`` (a ``basic.ack`` resolves it, a
``basic.nack`` fails it with ``DeliveryError``), and its message id in ``channel.message_id_delivery_tag`` (a
``basic.return`` of a ``mandatory`` message fails it with ``PublishError``, the channel having
``on_return_raises``). Futures come from the channel, so a closed channel fails them with its close reason.

Order: messages are written, and numbered, in the order of the ``publish`` calls, and delivery tags are assigned
in the same synchronous step that queues the frames for the writer. So nothing else may publish on the channel
(its tags would interleave with ours): the backplane publishes everything on its publish channel through here.

**The reliance on aiormq's internals is explicit**: ``AIORMQ_CHANNEL_STATE`` names every private attribute the
batched publisher reads or writes, with its expected type, and ``aiormq_state_problems`` checks a live channel
against it (``ConfirmingPublisher`` refuses to start on a mismatch, naming the fix). ``make test-newest-deps``
runs the backplane tests on the newest aiormq, so a release that changes this is seen the day it ships.
``PlainPublisher`` is the same interface over aiormq's public ``basic_publish`` (one write per message), chosen
with ``AMQP_PUBLISHER=plain``: the fallback when the check fails, and the baseline for the batched one's figures.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import importlib.metadata
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Required, TypedDict, Unpack

import aiormq
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec

__all__ = [
    "AIORMQ_CHANNEL_STATE",
    "ConfirmingPublisher",
    "IncompatibleAiormq",
    "PlainPublisher",
    "PublishProperties",
    "Publisher",
    "aiormq_state_problems",
    "encode_publish",
    "make_publisher",
]

_FRAME_END = b"\xce"
#: Frame header (type, channel, size) + Basic.Publish's class, method and reserved short.
_METHOD_HEAD = struct.Struct(">BHIHHH")
_FRAME_HEAD = struct.Struct(">BHI")
#: Content header: class (basic), weight (0), body size, property flags.
_HEADER_HEAD = struct.Struct(">HHQH")
_U64 = struct.Struct(">Q")
_BASIC = 60
_PUBLISH = 40
_METHOD, _HEADER, _BODY = 1, 2, 3


class PublishProperties(TypedDict, total=False):
    """The basic properties Warren sets on a publish, as keyword arguments of ``encode_publish`` and
    ``Publisher.publish``. ``timestamp`` is in seconds since the epoch, as AMQP carries it; ``message_type`` is
    the ``type`` property; ``message_id`` is required (a ``basic.return`` is matched to its publish by it)."""

    content_type: str | None
    delivery_mode: int | None
    message_id: Required[str]
    timestamp: int | None
    message_type: str | None
    app_id: str | None


def _short_str(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"an AMQP short string holds at most 255 bytes: {value[:40]!r}...")
    return bytes((len(data),)) + data


#: The basic properties Warren sets, in the order AMQP 0-9-1 (section 4.2.6.1) lays them out: name, property flag,
#: how the value is written.
_PROPERTIES: tuple[tuple[str, int, Callable[[Any], bytes]], ...] = (
    ("content_type", 0x8000, _short_str),
    ("delivery_mode", 0x1000, lambda mode: bytes((mode,))),
    ("message_id", 0x0080, _short_str),
    ("timestamp", 0x0040, _U64.pack),
    ("message_type", 0x0020, _short_str),
    ("app_id", 0x0008, _short_str),
)


def encode_publish(
    channel_number: int,
    max_body_frame: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    mandatory: bool = False,
    **properties: Unpack[PublishProperties],
) -> bytes:
    """The frames of one ``basic.publish``: method, content header, body (split at ``max_body_frame`` bytes)."""
    method = _short_str(exchange) + _short_str(routing_key) + (b"\x01" if mandatory else b"\x00")
    parts = [_METHOD_HEAD.pack(_METHOD, channel_number, 6 + len(method), _BASIC, _PUBLISH, 0), method, _FRAME_END]
    flags = 0
    encoded = []
    for name, flag, encode_value in _PROPERTIES:
        value = properties.get(name)
        if value is not None:
            flags |= flag
            encoded.append(encode_value(value))
    header = _HEADER_HEAD.pack(_BASIC, 0, len(body), flags) + b"".join(encoded)
    parts += (_FRAME_HEAD.pack(_HEADER, channel_number, len(header)), header, _FRAME_END)
    for start in range(0, len(body), max_body_frame):
        chunk = body[start : start + max_body_frame]
        parts += (_FRAME_HEAD.pack(_BODY, channel_number, len(chunk)), chunk, _FRAME_END)
    return b"".join(parts)


#: The private parts of aiormq's ``Channel`` that ``ConfirmingPublisher`` reads or writes, and their types:
#: the futures of unconfirmed publishes by delivery tag, delivery tags by message id (``basic.return``), the last
#: delivery tag, the queue of the connection's writer, the largest body frame. Plus ``ChannelFrame``'s fields.
AIORMQ_CHANNEL_STATE: dict[str, type] = {
    "confirmations": dict,
    "message_id_delivery_tag": dict,
    "delivery_tag": int,
    "write_queue": asyncio.Queue,
    "max_content_size": int,
}
_CHANNEL_FRAME_FIELDS = {"payload", "should_close"}


class IncompatibleAiormq(RuntimeError):
    """The installed aiormq keeps its channel state differently from what ``ConfirmingPublisher`` relies on."""


def aiormq_state_problems(channel: object) -> list[str]:
    """What of ``AIORMQ_CHANNEL_STATE`` (and ``ChannelFrame``'s fields) ``channel`` lacks; empty when it fits."""
    problems = []
    for name, kind in AIORMQ_CHANNEL_STATE.items():
        if not hasattr(channel, name):
            problems.append(f"Channel.{name} is missing")
        elif not isinstance(getattr(channel, name), kind):
            problems.append(f"Channel.{name} is a {type(getattr(channel, name)).__name__}, not a {kind.__name__}")
    is_dataclass = dataclasses.is_dataclass(ChannelFrame)
    fields = {field.name for field in dataclasses.fields(ChannelFrame)} if is_dataclass else set()
    if not _CHANNEL_FRAME_FIELDS <= fields:
        problems.append(f"ChannelFrame has no field(s) {', '.join(sorted(_CHANNEL_FRAME_FIELDS - fields))}")
    return problems


class Publisher(abc.ABC):
    """Publishes with confirms on one aiormq channel (opened with ``publisher_confirms`` and ``on_return_raises``).

    ``publish`` queues one message and returns a future for the broker's answer, in call order: it resolves on
    ``basic.ack`` and fails with aiormq's ``DeliveryError`` (nack), ``PublishError`` (returned) or the channel's
    close reason. A future cancelled before the message was written means it is never sent. Await the future,
    then call ``forget`` however the wait ended. Once the channel is closed, make a new publisher for its successor.
    """

    def __init__(self, channel: aiormq.Channel) -> None:
        if not channel.publisher_confirms:
            raise ValueError(f"{type(self).__name__} needs a channel with publisher confirms")
        self.channel = channel

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        mandatory: bool = True,
        **properties: Unpack[PublishProperties],
    ) -> asyncio.Future[Any]:
        """Queue one message (properties as for ``encode_publish``). Await the future, then call ``forget``."""
        if self.channel.is_closed:
            raise ChannelInvalidStateError(f"{self.channel!r} closed")
        return self._queue(exchange, routing_key, body, mandatory, properties)

    @abc.abstractmethod
    def _queue(
        self, exchange: str, routing_key: str, body: bytes, mandatory: bool, properties: PublishProperties
    ) -> asyncio.Future[Any]:
        """``publish`` on an open channel."""

    @abc.abstractmethod
    def forget(self, message_id: str, future: asyncio.Future[Any]) -> None:
        """Stop matching returns to a publish that is settled or abandoned (call it however the wait ended)."""


#: ``AMQP_PUBLISHER`` values.
PUBLISHERS = ("batched", "plain")


def make_publisher(kind: str, channel: aiormq.Channel) -> Publisher:
    """``batched`` (``ConfirmingPublisher``) or ``plain`` (``PlainPublisher``) on ``channel``."""
    if kind == "plain":
        return PlainPublisher(channel)
    if kind == "batched":
        return ConfirmingPublisher(channel)
    raise ValueError(f"unknown publisher {kind!r}: use one of {', '.join(PUBLISHERS)}")


class PlainPublisher(Publisher):
    """``Publisher`` over aiormq's public ``Channel.basic_publish``: one pamqp-marshalled write per message.

    Each publish runs in a task of its own; tasks start in creation order and aiormq numbers publishes under the
    channel's lock in the order they take it, so the call order is kept. aiormq forgets returns by itself.
    """

    def _queue(
        self, exchange: str, routing_key: str, body: bytes, mandatory: bool, properties: PublishProperties
    ) -> asyncio.Future[Any]:
        timestamp = properties.get("timestamp")
        basic = spec.Basic.Properties(
            content_type=properties.get("content_type"),
            delivery_mode=properties.get("delivery_mode"),
            message_id=properties["message_id"],
            timestamp=datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None,
            message_type=properties.get("message_type"),
            app_id=properties.get("app_id"),
        )
        return asyncio.ensure_future(
            self.channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=basic, mandatory=mandatory, wait=False
            )
        )

    def forget(self, message_id: str, future: asyncio.Future[Any]) -> None:
        return  # aiormq forgets returns by itself


class ConfirmingPublisher(Publisher):
    """``Publisher`` that writes the frames of every message queued during one turn of the event loop to the
    connection's writer as one write, right after it (a future cancelled before that write is left out of it)."""

    def __init__(self, channel: aiormq.Channel) -> None:
        super().__init__(channel)
        problems = aiormq_state_problems(channel)
        if problems:
            # Fail at start-up, not with unconfirmed messages.
            raise IncompatibleAiormq(
                f"aiormq {importlib.metadata.version('aiormq')} keeps its channel state differently "
                f"({'; '.join(problems)}): set AMQP_PUBLISHER=plain, or install the aiormq version in setup.cfg"
            )
        self._loop = asyncio.get_running_loop()
        self._max_body_frame = channel.max_content_size
        #: (future, message id, frames) waiting for this turn's write.
        self._batch: list[tuple[asyncio.Future[Any], str, bytes]] = []
        #: The delivery tag of each written publish until ``forget``.
        self._tags: dict[asyncio.Future[Any], int] = {}
        #: Writes the writer's queue had no room for, oldest first, and the task feeding them to it.
        self._backlog: list[ChannelFrame] = []
        self._feeder: asyncio.Task[None] | None = None

    def _queue(
        self, exchange: str, routing_key: str, body: bytes, mandatory: bool, properties: PublishProperties
    ) -> asyncio.Future[Any]:
        channel = self.channel
        frames = encode_publish(
            channel.number,
            self._max_body_frame,
            exchange,
            routing_key,
            body,
            mandatory=mandatory,
            **properties,
        )
        future: asyncio.Future[Any] = channel.create_future()
        if not self._batch:
            self._loop.call_soon(self._write)
        self._batch.append((future, properties["message_id"], frames))
        return future

    def forget(self, message_id: str, future: asyncio.Future[Any]) -> None:
        """Stop matching returns to a publish that is settled or abandoned (call it however the wait ended).

        Without this, a ``basic.return`` arriving for a publish whose caller gave up would meet a cancelled
        future, which stops aiormq's frame reader.
        """
        tag = self._tags.pop(future, None)
        if tag is not None and self.channel.message_id_delivery_tag.get(message_id) == tag:
            del self.channel.message_id_delivery_tag[message_id]

    def _write(self) -> None:
        batch, self._batch = self._batch, []
        channel = self.channel
        if channel.is_closed:
            # Closed during this turn: none of these was sent. (The close fails futures it knows of; these may
            # have come after it.)
            for future, _, _ in batch:
                if not future.done():
                    future.set_exception(ChannelInvalidStateError(f"{channel!r} closed"))
            return
        confirmations = channel.confirmations
        by_message_id = channel.message_id_delivery_tag
        payload = []
        for future, message_id, frames in batch:
            if future.done():
                continue  # cancelled by its caller before it was sent: never send it
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            confirmations[tag] = future
            by_message_id[message_id] = tag
            self._tags[future] = tag
            payload.append(frames)
        if not payload:
            return
        frame = ChannelFrame(payload=b"".join(payload), should_close=False)
        # Tags are assigned above in the same step as the frames are queued here: the broker numbers the messages in
        # the order it reads them, so ours must reach the writer in tag order, behind any earlier backlog.
        if self._backlog or channel.write_queue.full():
            self._backlog.append(frame)
            if self._feeder is None:
                self._feeder = self._loop.create_task(self._feed())
        else:
            channel.write_queue.put_nowait(frame)

    async def _feed(self) -> None:
        # Only when the writer fell behind (its queue holds a few frames). A closed channel's futures are failed by
        # the close, and a dead connection's writer never frees a slot: stop then instead of waiting for ever.
        closed = self.channel.closing
        try:
            while self._backlog and not closed.done():
                put = asyncio.ensure_future(self.channel.write_queue.put(self._backlog[0]))
                await asyncio.wait((put, closed), return_when=asyncio.FIRST_COMPLETED)
                if not put.done():
                    put.cancel()
                    break
                del self._backlog[0]
        finally:
            closed.cancel()  # only this observer of the close
            self._backlog.clear()
            self._feeder = None
