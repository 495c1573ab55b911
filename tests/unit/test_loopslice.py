"""LoopSlices: a long loop on the event loop yields by the clock, not by a count."""

from __future__ import annotations

import asyncio

from rollbackd.loopslice import LoopSlices


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_loop_is_let_go_only_once_the_slice_is_used_up() -> None:
    clock = FakeClock()
    slices = LoopSlices(0.002, clock=clock)
    for _ in range(50):
        await slices.pause_if_due()  # the clock has not moved: cheap items, no yield
    assert slices.pauses == 0
    clock.now += 0.0021
    await slices.pause_if_due()
    assert slices.pauses == 1
    clock.now += 0.001
    await slices.pause_if_due()  # a new slice started at the pause
    assert slices.pauses == 1


async def test_a_pause_lets_other_tasks_run() -> None:
    clock = FakeClock()
    slices = LoopSlices(0.002, clock=clock)
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    clock.now += 1.0
    await slices.pause_if_due()
    assert ran.is_set()
    await task
