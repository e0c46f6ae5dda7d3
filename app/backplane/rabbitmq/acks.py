"""Acknowledging the node queue's deliveries in batches, and requeueing failed ones after a pause.

Guarantees:

* A delivery is acknowledged only after ``Inbox.deliver`` returned for it (``handed_over``), at most
  ``ACK_BATCH`` deliveries or ``ACK_DELAY`` late, with one ``basic.ack(multiple)`` when nothing is held back.
* Delivery tags count per channel: a batch never spans two channels (a multiple-ack on a new channel must not
  stand for an old one).
* A delivery held back for a later requeue (``requeue_later``) is never covered by a multiple-ack.
* Acks and nacks only have to be queued for the connection's writer (``wait=False``): they free prefetch slots.
  If the channel died meanwhile the broker requeued them itself; envelope ids let clients drop duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiormq.abc import AbstractChannel

from .channels import quietly

__all__ = ["ACK_BATCH", "ACK_DELAY", "Acks"]

#: Deliveries acknowledged with one ``basic.ack(multiple)`` at most (sooner once the oldest of them has waited
#: ``ACK_DELAY``).
ACK_BATCH = 64
#: Seconds a delivery handed to the inbox waits at most for its acknowledgement: a trickle of deliveries then
#: costs one ack frame per this interval instead of one each.
ACK_DELAY = 0.005


class Acks:
    """``schedule_flush`` is called ``ACK_DELAY`` after the first delivery of a batch; it must make the owner call
    ``flush`` after what it has already queued (so a busy worker fills the batch first)."""

    def __init__(self, schedule_flush: Callable[[], None]) -> None:
        self._schedule_flush = schedule_flush
        self._tags: list[int] = []
        self._channel: AbstractChannel | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._held_back: set[tuple[AbstractChannel, int]] = set()
        self._background: set[asyncio.Task[None]] = set()

    async def handed_over(self, channel: AbstractChannel, tag: int) -> None:
        if self._tags and channel is not self._channel:
            await self.flush()
        self._channel = channel
        self._tags.append(tag)
        if len(self._tags) >= ACK_BATCH:
            await self.flush()
        elif self._timer is None:
            # One timer per batch, cheaper than a timeout around every wait for the next delivery.
            self._timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._schedule_flush)

    def timer_fired(self) -> None:
        self._timer = None

    async def flush(self) -> None:
        """Acknowledge every delivery handed over so far; with one frame unless some are held back."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tags, self._tags = self._tags, []
        channel = self._channel
        if not tags or channel is None:
            return
        if self._held_back:
            # A multiple-ack would also settle the held-back deliveries, whose tags are lower.
            for tag in tags:
                await quietly(channel.basic_ack(tag, wait=False))
        else:
            await quietly(channel.basic_ack(tags[-1], multiple=True, wait=False))

    async def reject(self, channel: AbstractChannel, tag: int) -> None:
        """Drop a delivery for good (after flushing the batch before it)."""
        await self.flush()
        await quietly(channel.basic_reject(tag, requeue=False, wait=False))

    async def ack_now(self, channel: AbstractChannel, tag: int) -> None:
        await self.flush()
        await quietly(channel.basic_ack(tag, wait=False))

    def requeue_later(self, channel: AbstractChannel, tag: int, pause: float) -> None:
        """Requeue a delivery after ``pause``, off the caller: the pause must not hold up other deliveries."""
        held = (channel, tag)
        self._held_back.add(held)
        task = asyncio.ensure_future(self._requeue(held, pause))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _requeue(self, held: tuple[AbstractChannel, int], pause: float) -> None:
        try:
            await asyncio.sleep(pause)
            channel, tag = held
            await quietly(channel.basic_nack(tag, requeue=True, wait=False))
        finally:
            self._held_back.discard(held)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
