"""Supervised tasks: a crash is never silent, and an essential one stops the daemon."""

from __future__ import annotations

import asyncio

from rollbackd.supervision import Supervisor, retrying


async def test_an_essential_task_that_crashes_sets_failed_with_its_name() -> None:
    supervisor = Supervisor()

    async def dispatcher() -> None:
        raise RuntimeError("boom")

    supervisor.spawn("dispatcher", dispatcher())
    async with asyncio.timeout(2):
        await supervisor.failed.wait()
    assert supervisor.failure == "dispatcher: RuntimeError: boom"


async def test_an_essential_task_that_simply_returns_is_a_failure_too() -> None:
    supervisor = Supervisor()

    async def poller() -> None:
        return None

    supervisor.spawn("poller", poller())
    async with asyncio.timeout(2):
        await supervisor.failed.wait()
    assert supervisor.failure == "poller ended"


async def test_cancelling_tasks_is_not_a_failure() -> None:
    supervisor = Supervisor()
    supervisor.spawn("dispatcher", asyncio.Event().wait())
    supervisor.spawn("poller", asyncio.Event().wait())
    assert sorted(supervisor.running()) == ["dispatcher", "poller"]

    await supervisor.cancel("dispatcher")
    assert supervisor.running() == ["poller"]
    await supervisor.cancel()
    assert supervisor.running() == [] and not supervisor.failed.is_set()


async def test_a_crash_of_a_task_that_is_not_essential_is_logged_only() -> None:
    supervisor = Supervisor()

    async def cleanup() -> None:
        raise OSError("disk")

    supervisor.spawn("cleanup", cleanup(), essential=False)
    await asyncio.sleep(0.01)
    assert not supervisor.failed.is_set()


async def test_retrying_runs_again_after_errors_and_calls_on_error() -> None:
    attempts = 0
    errors = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("api down")
        done.set()
        await asyncio.Event().wait()  # then runs for good

    async def on_error() -> None:
        nonlocal errors
        errors += 1

    task = asyncio.create_task(
        retrying("leader-election", flaky, on_error=on_error, first_delay=0.01, max_delay=0.02)
    )
    async with asyncio.timeout(2):
        await done.wait()
    task.cancel()
    assert (attempts, errors) == (3, 2)
