"""Supervised tasks: a crash is never silent, and an essential one stops the daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from rollbackd.supervision import Supervisor, cancel_and_wait, retrying
from rollbackd.testing.stack import Stack, wait_for


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


async def test_a_task_that_will_not_stop_is_logged_and_left_behind_not_waited_for() -> None:
    supervisor = Supervisor()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # the bug: a cancellation swallowed

    supervisor.spawn("stubborn", stubborn())
    supervisor.spawn("poller", asyncio.Event().wait())
    await asyncio.sleep(0)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(5):
            await supervisor.cancel(timeout=0.2)
    assert supervisor.running() == []
    [stuck] = [e for e in logs if e["event"] == "task_would_not_stop"]
    assert stuck["task"] == "rollbackd-stubborn" and stuck["log_level"] == "error"
    assert any("stubborn" in where for where in stuck["at"]), stuck["at"]
    release.set()


async def test_a_lease_won_back_while_the_daemon_stops_starts_nothing(tmp_path: Path) -> None:
    async with Stack(tmp_path / "stack") as stack:
        daemon = stack.daemon
        await daemon._lose_leadership()  # the Lease lost under load ...
        daemon._stopped = True  # ... while stop() has begun
        try:
            await daemon._become_leader()  # and won back before stop() cancels the campaign
            assert not daemon._leader
            assert "dispatcher" not in daemon.supervisor.running()
        finally:
            daemon._stopped = False  # let the stack's own stop run in full


async def test_a_stop_that_cuts_short_the_loss_of_leadership_still_runs_every_step(
    tmp_path: Path,
) -> None:
    async with Stack(tmp_path / "stack") as stack:
        daemon = stack.daemon

        async def leading() -> bool:
            return daemon._leader and daemon.notifier.running

        await wait_for(leading, 20, "leadership")
        # The Lease is lost; the election task stops the leader's work and, while
        # the dispatcher's rollbacks wind down, stop() cancels that task.
        winding_down, never = asyncio.Event(), asyncio.Event()
        real_stop = daemon.dispatcher.stop

        async def slow_stop(grace: float) -> None:
            winding_down.set()
            await never.wait()

        daemon.dispatcher.stop = slow_stop  # type: ignore[method-assign]
        losing = asyncio.create_task(daemon._lose_leadership())
        await asyncio.wait_for(winding_down.wait(), 10)
        losing.cancel()
        await asyncio.gather(losing, return_exceptions=True)
        daemon.dispatcher.stop = real_stop  # type: ignore[method-assign]
        assert daemon.notifier.running  # the steps after it never ran

        await daemon._lose_leadership()  # stop()'s own call runs them now
        assert not daemon._leader
        assert not daemon.notifier.running
        assert "dispatcher" not in daemon.supervisor.running()


async def test_cancel_and_wait_ends_every_task_and_raises_none_of_their_errors() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def fails_when_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")  # reported where it runs, not here

    tasks = [asyncio.create_task(forever()), asyncio.create_task(fails_when_cancelled())]
    await asyncio.sleep(0)
    await cancel_and_wait(tasks)
    assert tasks[0].cancelled() and isinstance(tasks[1].exception(), RuntimeError)


async def test_cancel_and_wait_does_not_swallow_a_cancellation_of_its_caller() -> None:
    """The stop that lands while cancelled work unwinds must reach the caller."""
    unwinding = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            unwinding.set()
            await asyncio.sleep(0.5)
            raise

    async def caller() -> str:
        task = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)  # started, so its cancellation runs its handler
        await cancel_and_wait([task])
        return "went on"

    work = asyncio.create_task(caller())
    await asyncio.wait_for(unwinding.wait(), 5)
    work.cancel()  # the daemon's stop
    done, _ = await asyncio.wait([work], timeout=5)
    assert done and work.cancelled()
