"""Which users this node's queue is bound to, and the ``queue.bind``/``queue.unbind`` calls that make it so.

Guarantees:

* After ``bind(user)`` returns, the node queue is bound to ``user``'s routing key; each bind gives the user a new
  *generation* (a later bind means the hub drained their mailbox afresh: work queued for an older generation,
  such as a catch-up, is stale).
* ``bind``/``unbind`` of one user never interleave (a lock per user); those of different users run in parallel
  over a small pool of channels (one RPC at a time each).
* A bind that fails is undone (it may have reached the broker before it timed out) and raises
  ``BackplaneUnavailable``. ``unbind`` never raises: the hub must still put the user's unacknowledged mail back.
  An unbind that fails is retried in the background; a binding left behind only routes mail here, where the hub
  moves it to the mailbox.
* While the connection is down there is nothing to unbind (the exclusive queue died with its bindings):
  ``unbind`` forgets the user, and the re-bind after the reconnect (``app.backplane.rabbitmq.resync``) skips them.
* ``unbind_all`` (shutdown) unbinds everyone at once over a wide pool of channels opened for it, and from then on
  ``bind`` refuses: with round trips of 40 ms, 2,000 users cost about 20 of them instead of 250.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiormq.abc import AbstractConnection

from ...core.errors import BackplaneUnavailable
from ...core.keyed_lock import KeyedLock
from ..topology import Topology, routing_key
from .channels import BROKER_ERRORS, ChannelPool

__all__ = ["Bindings"]

log = logging.getLogger(__name__)

#: Channels opened for the shutdown's unbind of every user (RabbitMQ allows 2,047 per connection by default).
UNBIND_ALL_CHANNELS = 100


class Bindings:
    def __init__(
        self,
        control: ChannelPool,
        topology: Topology,
        node_queue: str,
        *,
        connection: Callable[[], AbstractConnection | None],
        timeout: float,
        retry_interval: float,
    ) -> None:
        self._control = control
        self._topology = topology
        self._queue = node_queue
        self._connection = connection
        self._timeout = timeout
        self._retry_interval = retry_interval
        #: Users bound here -> the generation of their latest bind.
        self._bound: dict[str, int] = {}
        self._generation = 0
        self._locks = KeyedLock()
        self._refusing: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    def generation(self, user: str) -> int | None:
        """The generation of ``user``'s binding here, or None when they are not bound here."""
        return self._bound.get(user)

    def snapshot(self) -> dict[str, int]:
        """Every user bound here, with their generation."""
        return dict(self._bound)

    def __len__(self) -> int:
        return len(self._bound)

    async def bind(self, user: str) -> None:
        if self._refusing is not None:
            raise BackplaneUnavailable(self._refusing)
        async with self._locks.hold(user):
            await self._bind_rpc(user, self._control)
            self._generation += 1
            self._bound[user] = self._generation

    async def rebind(self, user: str, generation: int) -> bool:
        """Bind ``user`` again if their binding here is still of ``generation`` (after a reconnect)."""
        async with self._locks.hold(user):
            if self._bound.get(user) != generation:
                return False
            await self._bind_rpc(user, self._control)
            return True

    async def unbind(self, user: str) -> None:
        await self._unbind(user, self._control)

    async def unbind_all(self, reason: str) -> None:
        """Unbind every user now, in parallel over channels of their own; ``bind`` refuses with ``reason``."""
        self._refusing = reason
        users = list(self._bound)
        if not users:
            return
        wide = ChannelPool("shutdown unbinds", min(UNBIND_ALL_CHANNELS, len(users)), self._timeout, self._connection)
        try:
            await asyncio.gather(*(self._unbind(user, wide) for user in users))
        finally:
            await wide.close()

    def forget_all(self) -> None:
        self._bound.clear()
        for task in self._background:
            task.cancel()

    async def _unbind(self, user: str, pool: ChannelPool) -> None:
        async with self._locks.hold(user):
            if self._bound.pop(user, None) is None:
                return
            if self._connection() is None:
                return  # the binding died with the connection's queue
            try:
                await self._unbind_rpc(user, pool)
            except BackplaneUnavailable as exc:
                log.warning("could not unbind %r (%s); retrying in the background", user, exc)
                self._spawn(self._unbind_later(user))

    async def _unbind_later(self, user: str) -> None:
        await asyncio.sleep(self._retry_interval)
        async with self._locks.hold(user):
            if user not in self._bound and self._connection() is not None:
                with contextlib.suppress(BackplaneUnavailable):
                    await self._unbind_rpc(user, self._control)

    async def _bind_rpc(self, user: str, pool: ChannelPool) -> None:
        try:
            async with pool.lend() as channel, asyncio.timeout(self._timeout):
                await channel.queue_bind(self._queue, self._topology.messages_exchange, routing_key(user))
        except (TimeoutError, BackplaneUnavailable, *BROKER_ERRORS) as exc:
            if self._connection() is not None:
                # The bind may have reached the broker before it timed out: do not leave it behind.
                with contextlib.suppress(BackplaneUnavailable):
                    await self._unbind_rpc(user, pool)
            raise BackplaneUnavailable(
                f"could not bind {user!r} on RabbitMQ ({exc or type(exc).__name__}); try again in a moment"
            ) from exc

    async def _unbind_rpc(self, user: str, pool: ChannelPool) -> None:
        try:
            async with pool.lend() as channel, asyncio.timeout(self._timeout):
                await channel.queue_unbind(self._queue, self._topology.messages_exchange, routing_key(user))
        except BackplaneUnavailable:
            raise
        except (TimeoutError, *BROKER_ERRORS) as exc:
            raise BackplaneUnavailable(f"could not unbind {user!r}: {exc or type(exc).__name__}") from exc

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
