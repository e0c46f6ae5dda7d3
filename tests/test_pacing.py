"""The set-up pacer and the collector policy: a burst is spread over loop iterations, in order, and full
garbage collections wait for it to end."""

from __future__ import annotations

import asyncio
import gc

import pytest

from app.collector import CollectorPolicy
from app.core.pacing import Pacer


async def test_quiet_steps_pass_at_once() -> None:
    pacer = Pacer(initial_limit=4)
    for _ in range(4):
        await pacer.turn()  # would hang if the fast path needed another iteration to be released
    assert pacer.deferred == 0


async def test_a_burst_passes_in_order_a_limited_number_per_iteration() -> None:
    # A fixed clock: every iteration looks instant, so the limit only grows by one per iteration.
    pacer = Pacer(initial_limit=3, max_limit=3, clock=lambda: 0.0)
    passed: list[int] = []
    iteration = 0
    per_iteration: dict[int, int] = {}

    async def count_iterations() -> None:
        nonlocal iteration
        while len(passed) < 20:
            iteration += 1
            await asyncio.sleep(0)

    async def step(number: int) -> None:
        await pacer.turn()
        passed.append(number)
        per_iteration[iteration] = per_iteration.get(iteration, 0) + 1

    counter = asyncio.create_task(count_iterations())
    await asyncio.gather(*(step(n) for n in range(20)))
    await counter
    assert passed == list(range(20))
    assert pacer.deferred == 17
    assert max(per_iteration.values()) <= 2 * pacer.limit  # the fast path and the released share an iteration


async def test_the_limit_halves_after_a_long_iteration_and_grows_back() -> None:
    now = [0.0]
    pacer = Pacer(target_seconds=0.01, initial_limit=8, clock=lambda: now[0])
    waiting = [asyncio.ensure_future(pacer.turn()) for _ in range(40)]
    await asyncio.sleep(0)  # the first 8 pass, the rest queue
    now[0] += 0.05  # a 50 ms iteration
    await asyncio.sleep(0)
    assert pacer.limit == 4
    for _ in range(20):
        await asyncio.sleep(0)  # instant iterations
    assert pacer.limit > 4
    await asyncio.gather(*waiting)
    assert pacer.waiting == 0


async def test_a_cancelled_waiter_gives_its_place_up() -> None:
    pacer = Pacer(initial_limit=1, max_limit=1, clock=lambda: 0.0)
    await pacer.turn()
    first = asyncio.ensure_future(pacer.turn())
    second = asyncio.ensure_future(pacer.turn())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert pacer.waiting == 0


async def test_bursts_are_reported_when_they_start_and_end() -> None:
    pacer = Pacer(initial_limit=1, max_limit=1, clock=lambda: 0.0)
    events: list[bool] = []
    pacer.on_burst = events.append
    await asyncio.gather(*(pacer.turn() for _ in range(5)))
    for _ in range(3):
        await asyncio.sleep(0)
    assert events == [True, False]


@pytest.fixture
def gc_thresholds() -> object:
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)


async def test_full_collections_wait_for_the_burst_to_end(gc_thresholds: tuple[int, int, int]) -> None:
    policy = CollectorPolicy(grace=0.05, max_deferral=5)
    pacer = Pacer()
    pacer.on_burst = policy._burst  # install() also freezes the heap; not in a test process
    policy._burst(True)
    assert policy.deferring and gc.get_threshold()[2] > 10**6
    policy._burst(False)
    await asyncio.sleep(0.1)
    assert not policy.deferring
    assert gc.get_threshold() == gc_thresholds


async def test_a_burst_cannot_postpone_full_collections_forever(gc_thresholds: tuple[int, int, int]) -> None:
    policy = CollectorPolicy(grace=0.05, max_deferral=0.05)
    policy._burst(True)
    await asyncio.sleep(0.1)
    assert not policy.deferring and gc.get_threshold() == gc_thresholds
    policy._burst(True)  # the same burst going on: no deferring again until it has ended
    assert not policy.deferring
