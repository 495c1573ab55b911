"""Pending signals: per-target batches, FIFO over targets, and a rest after each take.

A target just taken rests: what arrives for it meanwhile is taken in one
batch when the rest ends, so an alert storm costs a few decisions a second
per Deployment instead of one per webhook, and a first signal never waits.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from rollbackd.model import Target
from rollbackd.pending import DECIDE_REST, Accepted, PendingSignals
from tests.factories import firing_alert

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CART, SHOP = Target("shop", "cart"), Target("shop", "checkout")


def accepted(row_id: int, target: Target = CART) -> Accepted:
    return Accepted(row_id, firing_alert(f"am:{row_id}", NOW, target=target))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def taken_ids(pending: PendingSignals) -> tuple[Target, list[int]] | None:
    taken = pending.take()
    return None if taken is None else (taken[0], [a.row_id for a in taken[1]])


def test_a_first_signal_is_taken_at_once_and_what_follows_waits_out_the_rest() -> None:
    clock = Clock()
    pending = PendingSignals(rest=0.25, clock=clock)
    pending.add([accepted(1)])
    assert taken_ids(pending) == (CART, [1])

    pending.add([accepted(2)])
    clock.now += 0.1
    pending.add([accepted(3)])
    assert taken_ids(pending) is None, "the target rests: its signals gather"
    assert len(pending) == 2

    clock.now += 0.15
    assert taken_ids(pending) == (CART, [2, 3]), "one batch once the rest is over"


def test_a_resting_target_holds_back_no_other() -> None:
    clock = Clock()
    pending = PendingSignals(rest=0.25, clock=clock)
    pending.add([accepted(1, CART)])
    assert taken_ids(pending) == (CART, [1])
    pending.add([accepted(2, CART), accepted(3, SHOP)])
    assert taken_ids(pending) == (SHOP, [3])
    clock.now += 0.3
    assert taken_ids(pending) == (CART, [2])


def test_a_target_quiet_for_longer_than_the_rest_is_taken_at_once() -> None:
    clock = Clock()
    pending = PendingSignals(rest=0.25, clock=clock)
    pending.add([accepted(1)])
    pending.take()
    clock.now += 5
    pending.add([accepted(2)])
    assert taken_ids(pending) == (CART, [2])


def test_no_rest_takes_every_batch_at_once() -> None:
    pending = PendingSignals(rest=0)
    for row_id in range(1, 4):
        pending.add([accepted(row_id)])
        assert taken_ids(pending) == (CART, [row_id])


def test_a_negative_rest_is_refused() -> None:
    with pytest.raises(ValueError, match="rest"):
        PendingSignals(rest=-1)


async def test_wait_wakes_when_the_rest_ends_with_nothing_else_added() -> None:
    pending = PendingSignals(rest=0.2)
    pending.reload_needed = False
    pending.add([accepted(1)])
    pending.take()
    pending.add([accepted(2)])
    started = time.monotonic()
    await asyncio.wait_for(pending.wait(), timeout=5)
    assert time.monotonic() - started >= 0.15, "woke before the rest ended"
    assert taken_ids(pending) == (CART, [2])


async def test_wait_wakes_at_once_for_another_target_while_one_rests() -> None:
    pending = PendingSignals(rest=30)
    pending.reload_needed = False
    pending.add([accepted(1, CART)])
    pending.take()
    pending.add([accepted(2, CART)])
    waiting = asyncio.create_task(pending.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    pending.add([accepted(3, SHOP)])
    await asyncio.wait_for(waiting, timeout=5)
    assert taken_ids(pending) == (SHOP, [3])


def test_the_default_rest_is_short_beside_the_time_to_mitigate() -> None:
    # A repeat waits at most this long; bench/mttr.py's target is a 2.5 s median.
    assert 0 < DECIDE_REST <= 0.5


class CountingEvent(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def test_more_signals_for_a_resting_target_do_not_wake_the_dispatcher() -> None:
    """The dispatcher woke for every webhook in a storm only to find its target resting."""
    clock = Clock()
    pending = PendingSignals(rest=0.25, clock=clock)
    wakeup = pending._wakeup = CountingEvent()
    pending.add([accepted(1)])
    pending.take()
    for row_id in range(2, 52):  # 50 webhooks while the target rests
        pending.add([accepted(row_id)])
    assert wakeup.sets == 2, "once when it was first pending, once when it was again"
    clock.now += 0.25
    taken = taken_ids(pending)
    assert taken is not None and taken[1] == list(range(2, 52))


def test_what_it_remembers_of_rests_stays_bounded_and_every_target_still_rests() -> None:
    clock = Clock()
    pending = PendingSignals(rest=0.25, clock=clock)
    largest = 0
    for n in range(5000):
        target = Target("shop", f"app-{n}")
        pending.add([accepted(n, target)])
        assert taken_ids(pending) == (target, [n])
        # Within its rest, a second signal for the same target waits.
        pending.add([accepted(n + 100_000, target)])
        assert taken_ids(pending) is None
        clock.now += 0.3  # every rest so far has ended
        assert taken_ids(pending) == (target, [n + 100_000])
        largest = max(largest, len(pending._resting))  # the memory the sweep bounds
    assert largest <= 130
