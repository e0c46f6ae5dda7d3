"""Raw aiormq channels: opening one safely, closing one safely, and a pool of short-lived ones.

Guarantees:

* ``open_channel`` never reuses a channel number the broker may still be closing (see ``fresh_channel_number``).
* ``close_channel`` never cancels a ``Channel.Close`` half-way (which would make RabbitMQ close the connection).
* ``ChannelPool.lend`` lends each channel to one caller at a time; a channel on which a call failed is never lent
  again (it is closed and replaced); channels of a connection that is gone are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity

from ...core.errors import BackplaneUnavailable

__all__ = ["BROKER_ERRORS", "ChannelPool", "close_channel", "open_channel", "quietly"]

log = logging.getLogger(__name__)

#: Errors that mean "the broker or the channel is gone", as opposed to a refusal.
BROKER_ERRORS = (aiormq.exceptions.AMQPError, ChannelInvalidStateError, ConnectionError, OSError)

_channel_numbers = itertools.count()


def fresh_channel_number(connection: AbstractConnection) -> int:
    """A channel number not used recently on this connection.

    aiormq hands out ``max(open channels) + 1``, so a channel the broker just closed (a 404 from a mailbox probe)
    can get its number again before the broker finished closing it; RabbitMQ then closes the whole connection
    ("CHANNEL_ERROR - second 'channel.open' seen"). Numbers count up through 1 to the broker's ``channel_max``
    (65,535 when it sets none) instead, so one comes back only after that many opens.
    """
    channels: Any = getattr(connection, "channels", {})
    limit = getattr(getattr(connection, "connection_tune", None), "channel_max", 0) or 65_535
    while True:
        number = 1 + next(_channel_numbers) % limit
        if number not in channels:
            return number


async def open_channel(connection: AbstractConnection, timeout: float, **options: Any) -> AbstractChannel:
    """A new channel on ``connection`` (``options`` as for aiormq's ``Connection.channel``)."""
    async with asyncio.timeout(timeout):
        return await connection.channel(channel_number=fresh_channel_number(connection), **options)


async def close_channel(channel: AbstractChannel, timeout: float) -> None:
    """Close a channel, never cancelling the close itself.

    aiormq answers a cancelled ``Channel.Close`` by sending a second one, which RabbitMQ treats as a connection
    error (504 CHANNEL_ERROR) and closes the whole connection. So the close runs in its own task: a caller that
    is cancelled or times out stops waiting, the close carries on.
    """
    closing = asyncio.ensure_future(channel.close())
    closing.add_done_callback(_ignore_outcome)
    with contextlib.suppress(TimeoutError, *BROKER_ERRORS):
        await asyncio.wait_for(asyncio.shield(closing), timeout)


def _ignore_outcome(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def quietly(settlement: Awaitable[object]) -> None:
    """Await an ack, nack or reject whose channel may be gone (the broker then requeued the delivery itself)."""
    try:
        await settlement
    except (*BROKER_ERRORS, RuntimeError) as exc:
        log.debug("could not settle a delivery (channel gone): %s", exc)


class ChannelPool:
    """Up to ``size`` raw channels on the current connection, each lent to one caller at a time.

    A channel on which a call failed (a timeout, which makes aiormq close the channel; a 404 from a passive
    declare, which makes the broker close it; a lost connection) is never lent again: it is closed and replaced
    by a fresh one, opened in the background when the channel was closed by a 404 (the usual end of a mailbox
    probe), so the next caller does not wait for it. Channels of an old connection are dropped the same way.
    ``connection`` returns the current connection, or None while there is none.
    """

    def __init__(
        self, name: str, size: int, timeout: float, connection: Callable[[], AbstractConnection | None]
    ) -> None:
        self.name = name
        self._size = size
        self._timeout = timeout
        self._connection = connection
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AbstractChannel] = []
        self._refills: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[AbstractChannel]:
        async with self._slots:
            channel = await self._take()
            try:
                yield channel
            except ChannelNotFoundEntity:
                self._refill()
                raise
            except BaseException:
                await close_channel(channel, self._timeout)
                raise
            if channel.is_closed:
                self._refill()
            else:
                self._idle.append(channel)

    async def detach(self) -> AbstractChannel:
        """A channel of the pool's kind that the caller keeps (and closes); the pool opens a replacement."""
        async with self._slots:
            channel = await self._take()
        self._refill()
        return channel

    async def close(self) -> None:
        """Close every idle channel and stop refilling (shutdown, or a pool made for one job)."""
        for task in self._refills:
            task.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(close_channel(channel, self._timeout) for channel in idle))

    async def _take(self) -> AbstractChannel:
        connection = self._current()
        while self._idle:
            channel = self._idle.pop()
            if not channel.is_closed and channel.connection is connection:
                return channel
        return await self._open(connection)

    def _current(self) -> AbstractConnection:
        connection = self._connection()
        if connection is None or connection.is_closed:
            raise BackplaneUnavailable("not connected to RabbitMQ; reconnecting")
        return connection

    async def _open(self, connection: AbstractConnection) -> AbstractChannel:
        try:
            return await open_channel(connection, self._timeout, publisher_confirms=False)
        except (TimeoutError, RuntimeError, *BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(
                f"could not open a RabbitMQ channel ({self.name}): {exc or type(exc).__name__}"
            ) from exc

    def _refill(self) -> None:
        if len(self._idle) + len(self._refills) >= self._size:
            return
        task = asyncio.ensure_future(self._refill_one())
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill_one(self) -> None:
        with contextlib.suppress(BackplaneUnavailable):
            connection = self._current()
            channel = await self._open(connection)
            if len(self._idle) < self._size:
                self._idle.append(channel)
            else:
                await close_channel(channel, self._timeout)
