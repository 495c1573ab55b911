"""Supervised background tasks: a crash is logged, and an essential one stops the daemon.

The idea is kopf's guarded tasks: a long-lived task (the dispatcher, the
poller, leader election, retention) must never die silently. A task that
ends with an exception is logged with its name; when it is essential, the
supervisor's ``failed`` event is set, and the daemon's main loop shuts down
in order (a restarted process replays the journal, which is safer than a
daemon that looks alive but decides nothing). Cancellation is the normal
way to stop a task and is not a failure.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType
from typing import Any

import structlog

__all__ = ["Supervisor", "cancel_and_wait", "retrying"]

log = structlog.get_logger("rollbackd.supervision")

# How long stopping waits for a cancelled task before it logs and goes on.
STOP_TIMEOUT = 15.0


class Supervisor:
    """Owns named tasks; ``failed`` is set when an essential one dies."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._bodies: dict[str, Awaitable[None]] = {}
        self.failed = asyncio.Event()
        self.failure: str | None = None

    def spawn(self, name: str, body: Awaitable[None], *, essential: bool = True) -> None:
        """Run ``body`` as the task ``name`` (a name runs once at a time)."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name} is already running")
        task = asyncio.create_task(self._guard(name, body, essential), name=f"rollbackd-{name}")
        self._tasks[name] = task
        self._bodies[name] = body

    async def cancel(self, *names: str, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel the named tasks (all when none are named) and wait for them to end.

        At most ``timeout`` seconds: a task that will not end (a bug that
        swallows its cancellation, a call that never returns) is logged with
        where it is stuck and left behind, so a stopping daemon still closes
        its journal and exits instead of hanging until it is killed.
        """
        chosen = [n for n in (names or tuple(self._tasks)) if n in self._tasks]
        tasks = [self._tasks.pop(n) for n in chosen]
        for task in await cancel_and_wait(tasks, timeout=timeout):
            log.error(
                "task_would_not_stop",
                task=task.get_name(),
                waited=timeout,
                at=_awaiting(task.get_coro()),
            )
        for name in chosen:
            body = self._bodies.pop(name)
            if inspect.iscoroutine(body):
                body.close()  # cancelled before it ever ran: close it, do not leak it

    def running(self) -> list[str]:
        return [name for name, task in self._tasks.items() if not task.done()]

    async def _guard(self, name: str, body: Awaitable[None], essential: bool) -> None:
        try:
            await body
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("task_crashed", task=name, essential=essential)
            if essential and not self.failed.is_set():
                self.failure = f"{name}: {type(exc).__name__}: {exc}"
                self.failed.set()
            return
        if essential and not self.failed.is_set():
            # An essential task never ends on its own: that is a bug too.
            log.error("task_ended", task=name)
            self.failure = f"{name} ended"
            self.failed.set()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, timeout: float | None = None
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until they end, without swallowing a cancellation of our own.

    ``with suppress(CancelledError): await task`` cannot tell the task's
    cancellation from its caller's: a stop that lands meanwhile is lost (the
    leader election once campaigned on after one). ``asyncio.wait`` raises
    only the caller's; the tasks' own outcomes are read and dropped, since
    each task reports its failures where it runs. Returns the tasks still
    running after ``timeout`` seconds (None: waits for all).
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return set()
    done, stuck = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()  # read, so asyncio does not log it as never retrieved
    return stuck


async def retrying(
    name: str,
    body: Callable[[], Awaitable[None]],
    *,
    on_error: Callable[[], Awaitable[None]] | None = None,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> None:
    """Run ``body`` again and again; an error is logged, ``on_error`` runs, backoff grows.

    For tasks whose failures are expected to be transient (leader election
    against a flaky API server): they must come back, not stop the daemon.
    """
    delay = first_delay
    while True:
        try:
            await body()
            delay = first_delay
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task_failed_retrying", task=name, retry_in=delay)
            if on_error is not None:
                await on_error()
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def _awaiting(coro: object, depth: int = 12) -> list[str]:
    """Where a suspended coroutine waits: each frame down its chain of awaits."""
    where: list[str] = []
    while coro is not None and len(where) < depth:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if isinstance(frame, FrameType):
            code = frame.f_code
            where.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where
