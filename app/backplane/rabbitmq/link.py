"""The node's one AMQP connection, and the long-lived channels kept open on it.

Warren speaks AMQP through aiormq alone. The hot paths need aiormq's channels anyway (the node-queue consumer
reads ``DeliveredMessage`` as it comes, the publisher batches frames into aiormq's writer), and aio-pika's robust
connection, used before beside them, restored things on its own that Warren must decide about: the mailboxes it
ever declared, bindings whose unbind had failed, queue objects only while referenced (aio-pika#594). So the
reconnect is written once, here, and what a connection needs is set up by the modules that need it, through
``keep``.

Guarantees:

* ``up`` is set while a connection is open and every kept channel is set up on it; ``down`` while it is not.
* A kept channel the broker closes alone (a channel error) is opened and set up again on the same connection by
  its own ``setup``, in the background; ``channel(name)`` raises ``BackplaneUnavailable`` until then.
* When the connection is lost, every ``on_lost`` callback runs at once (synchronously, so nothing runs in
  between); then a new connection is tried every ``reconnect_interval`` until one is open with every kept channel
  set up on it, in ``keep`` order; then every ``on_restored`` callback runs.
* ``close`` stops reconnecting and closes the connection; ``on_lost`` is not called for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from yarl import URL

from ...core.errors import BackplaneUnavailable
from .channels import BROKER_ERRORS, close_channel

__all__ = ["Link", "Setup"]

log = logging.getLogger(__name__)

#: Opens and prepares one kept channel on the given connection.
Setup = Callable[[AbstractConnection], Awaitable[AbstractChannel]]


class Link:
    def __init__(self, url: str, name: str, *, connect_timeout: float, timeout: float, reconnect_interval: float):
        self.url = url
        self.name = name
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._reconnect_interval = reconnect_interval
        #: The open connection, or None while there is none.
        self.connection: AbstractConnection | None = None
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()
        self._setups: dict[str, Setup] = {}
        self._channels: dict[str, AbstractChannel] = {}
        self._on_lost: list[Callable[[BaseException | None], None]] = []
        self._on_restored: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def keep(self, name: str, setup: Setup) -> None:
        """Keep a channel called ``name`` open, prepared by ``setup`` (register before ``start``)."""
        self._setups[name] = setup

    def on_lost(self, callback: Callable[[BaseException | None], None]) -> None:
        self._on_lost.append(callback)

    def on_restored(self, callback: Callable[[], None]) -> None:
        self._on_restored.append(callback)

    def channel(self, name: str) -> AbstractChannel:
        """The kept channel ``name`` if it is open; else ``BackplaneUnavailable``."""
        channel = self._channels.get(name)
        if channel is None or channel.is_closed or not self.up.is_set():
            raise BackplaneUnavailable("the connection to RabbitMQ is lost; reconnecting. Try again in a moment")
        return channel

    def current(self) -> AbstractConnection | None:
        return self.connection if self.up.is_set() else None

    async def start(self) -> None:
        """Connect and set up every kept channel. Errors of the connect raise ``BackplaneUnavailable``; those of
        a setup propagate as they are (the caller knows what they mean)."""
        try:
            connection = await self._connect()
        except (TimeoutError, *BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(
                f"cannot connect to RabbitMQ at {safe_url(self.url)}: {exc or type(exc).__name__}; "
                "check AMQP_URL and that the broker is running"
            ) from exc
        await self._set_up(connection)

    async def close(self) -> None:
        self._closing = True
        self.up.clear()
        self.down.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        connection, self.connection = self.connection, None
        self._channels.clear()
        if connection is not None:
            with contextlib.suppress(TimeoutError, *BROKER_ERRORS):
                await asyncio.wait_for(connection.close(), self._timeout)

    # -- internals ------------------------------------------------------------------------------------------

    async def _connect(self) -> AbstractConnection:
        async with asyncio.timeout(self._connect_timeout):
            return await aiormq.connect(self.url, client_properties={"connection_name": self.name})

    async def _set_up(self, connection: AbstractConnection) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                for name, setup in self._setups.items():
                    self._channels[name] = await setup(connection)
        except BaseException:
            self._channels.clear()
            with contextlib.suppress(TimeoutError, *BROKER_ERRORS):
                await asyncio.wait_for(connection.close(), self._timeout)
            raise
        self.connection = connection
        self.down.clear()
        self.up.set()
        self._spawn(self._supervise(connection))
        for name, channel in self._channels.items():
            self._spawn(self._keep_open(connection, name, channel))

    async def _supervise(self, connection: AbstractConnection) -> None:
        reason: BaseException | None = None
        try:
            await connection.closing
        except asyncio.CancelledError:
            if not connection.is_closed:
                raise  # our own close
        except Exception as exc:
            reason = exc
        if self._closing or self.connection is not connection:
            return
        self.up.clear()
        self.down.set()
        self.connection = None
        self._channels.clear()
        for lost in self._on_lost:
            lost(reason)
        while not self._closing:
            await asyncio.sleep(self._reconnect_interval)
            try:
                fresh = await self._connect()
                await self._set_up(fresh)
            except (TimeoutError, RuntimeError, *BROKER_ERRORS) as exc:
                log.warning("could not reconnect %s to RabbitMQ (%s); retrying", self.name, exc or type(exc).__name__)
                continue
            for restored in self._on_restored:
                restored()
            return

    async def _keep_open(self, connection: AbstractConnection, name: str, channel: AbstractChannel) -> None:
        """Reopen ``name`` when the broker closes it alone; stop once the connection is gone (reconnect's job)."""
        while True:
            with contextlib.suppress(Exception):
                await channel.closing
            await asyncio.sleep(0)  # a dying connection closes its channels first: let it finish
            if self._closing or connection.is_closed or self.connection is not connection:
                return
            log.warning("RabbitMQ closed channel %r of %s; opening it again", name, self.name)
            while True:
                try:
                    channel = await self._setups[name](connection)
                    break
                except (TimeoutError, RuntimeError, *BROKER_ERRORS) as exc:
                    if connection.is_closed:
                        return
                    log.warning("could not reopen channel %r (%s); retrying", name, exc or type(exc).__name__)
                    await asyncio.sleep(self._reconnect_interval)
            if connection.is_closed:
                await close_channel(channel, self._timeout)
                return
            self._channels[name] = channel

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def safe_url(amqp_url: str) -> str:
    url = URL(amqp_url)
    return str(url.with_password("***")) if url.password else str(url)
