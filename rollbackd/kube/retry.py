"""One retry policy for the Kubernetes adapter: transient faults are waited out, within a budget.

Incidents are exactly when API servers throttle (429), fail behind a proxy
(5xx), drop connections and time out. A rollback that gives up on the first
such error leaves the bad version live, so every adapter call retries
transient errors (:attr:`KubeError.transient`) with jittered exponential
backoff, honouring the server's Retry-After.

What bounds the retrying is a :class:`RetryBudget`: seconds a piece of work
(one rollback) may spend waiting out faults, shared by all its calls and
derived by its owner from the rollout timeout. The executor puts one in
scope with :func:`budget_scope`; the adapter reads it from a context
variable, so tasks the rollback starts share it. Outside any scope, a call
gets a fresh budget of the adapter's default.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from rollbackd.kube.errors import KubeError

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "RetryBudget",
    "backoff_delay",
    "budget_scope",
    "current_budget",
    "is_transient",
    "with_retries",
]

log = structlog.get_logger("rollbackd.kube")

T = TypeVar("T")

# First backoff and its ceiling: short enough to notice recovery within seconds.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0


class RetryBudget:
    """Seconds of waiting out transient faults that a piece of work may still spend.

    Spending is recorded when a retried call ends (the time from its first
    failure to its end), so concurrent calls share one account. A child
    budget is capped by its own limit and by what its parent has left, and
    charges the parent too.
    """

    def __init__(
        self,
        seconds: float,
        *,
        parent: RetryBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seconds < 0:
            raise ValueError(f"a retry budget cannot be negative, got {seconds}")
        self.total = float(seconds)
        self.spent = 0.0
        self._parent = parent
        self._clock = clock

    @property
    def remaining(self) -> float:
        own = max(0.0, self.total - self.spent)
        return own if self._parent is None else min(own, self._parent.remaining)

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0.0

    def spend(self, seconds: float) -> None:
        self.spent += max(0.0, seconds)
        if self._parent is not None:
            self._parent.spend(seconds)

    def child(self, seconds: float) -> RetryBudget:
        """A budget of at most ``seconds`` that also draws on this one."""
        return RetryBudget(min(seconds, self.remaining), parent=self, clock=self._clock)

    def now(self) -> float:
        return self._clock()


_current: ContextVar[RetryBudget | None] = ContextVar("rollbackd_kube_retry_budget", default=None)


def current_budget() -> RetryBudget | None:
    """The budget in scope for this task, if any."""
    return _current.get()


@contextlib.contextmanager
def budget_scope(budget: RetryBudget) -> Iterator[RetryBudget]:
    """Make ``budget`` the one every adapter call in this task (and its child tasks) draws on."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, KubeError) and exc.transient


def backoff_delay(attempt: int, error: BaseException | None) -> float:
    """Retry-After when the server gave one, else full-jitter exponential backoff."""
    retry_after = error.retry_after if isinstance(error, KubeError) else None
    if retry_after is not None:
        return retry_after
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    budget: RetryBudget,
    describe: str,
) -> T:
    """Run ``call``; retry transient KubeErrors while ``budget`` can pay for the wait.

    Gives up (re-raising the last error) when the next wait would not fit in
    what is left, so a rollback learns "the API is down" while it still has
    time to say so.
    """
    started = budget.now()
    failed = False
    delays: dict[int, float] = {}

    def delay_for(state: RetryCallState) -> float:
        # Computed once per attempt: tenacity asks wait and stop in either order.
        if state.attempt_number not in delays:
            error = state.outcome.exception() if state.outcome else None
            delays[state.attempt_number] = backoff_delay(state.attempt_number, error)
        return delays[state.attempt_number]

    def stop(state: RetryCallState) -> bool:
        nonlocal failed
        failed = True
        # The failed attempts count too: a timeout may have taken a while.
        left = budget.remaining - (budget.now() - started)
        give_up = delay_for(state) > left
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "kube_request_failed" if give_up else "kube_request_retry",
            request=describe,
            attempt=state.attempt_number,
            delay=None if give_up else round(delay_for(state), 3),
            budget_left=round(max(0.0, left), 3),
            error=str(error),
        )
        return give_up

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=delay_for,
        stop=stop,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises when it stops")  # pragma: no cover
    finally:
        if failed:
            budget.spend(budget.now() - started)
