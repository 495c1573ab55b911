"""Accepted signals waiting for a decision, grouped by target.

The journal is the queue (every signal here is committed there first); this
is its in-memory front, shaped for the dispatcher: signals are grouped per
Deployment, so however many alerts arrive for one target, the dispatcher
takes them all at once and decides once. Targets are served in the order
they first became pending, so a noisy Deployment cannot starve a quiet one.

Memory is bounded without refusing anything: past ``max_in_memory`` signals
the copies are not kept, a reload is requested, and the dispatcher pages the
undecided rest back in from the journal when the in-memory part runs dry.

A target just taken rests for ``rest`` seconds (``DECIDE_REST``): what
arrives for it meanwhile waits and is taken at once when the rest ends. A
target's first signal is taken at once. In an alert storm the dispatcher
took every target after every webhook (five decisions for a body of ten
alerts about five Deployments, each a history read and two commits), and
those decisions were most of the process's CPU and of the work the webhooks'
answers queued behind; resting, a target costs at most a few decisions a
second whatever the alert rate, and nothing is decided later than ``rest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from rollbackd.model import Signal, Target

__all__ = ["Accepted", "PendingSignals", "ReadPage"]

log = structlog.get_logger("rollbackd.pending")

# Undecided signals read back from the journal per query.
RELOAD_PAGE = 1000

# Seconds a target rests after it was taken (see the module's docstring).
DECIDE_REST = 0.25
# Resting entries kept before ended rests are swept out.
_SWEEP_AT_LEAST = 64


class ReadPage(Protocol):
    """The journal's ``undecided_signals``: (row id, signal) pairs after ``after_id``."""

    def __call__(
        self, *, after_id: int = 0, limit: int = 1000
    ) -> Awaitable[list[tuple[int, Signal]]]: ...


@dataclass(frozen=True)
class Accepted:
    """A signal as committed to the journal, with its row id."""

    row_id: int
    signal: Signal


class PendingSignals:
    """Per-target batches of accepted signals, FIFO over targets."""

    def __init__(
        self,
        max_in_memory: int = 50_000,
        *,
        rest: float = DECIDE_REST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_memory < 1:
            raise ValueError("max_in_memory must be >= 1")
        if rest < 0:
            raise ValueError("rest must be >= 0")
        self._max = max_in_memory
        self._rest = rest
        self._clock = clock
        self._by_target: OrderedDict[Target, dict[int, Signal]] = OrderedDict()
        # Targets taken less than ``rest`` ago: when each may be taken again.
        self._resting: dict[Target, float] = {}
        self._sweep_at = _SWEEP_AT_LEAST
        self._size = 0
        self._wakeup = asyncio.Event()
        # The journal holds undecided signals that are not (or may not be) here:
        # true at start (replay) and after an overflow.
        self.reload_needed = True

    def __len__(self) -> int:
        return self._size

    def add(self, items: Iterable[Accepted]) -> None:
        """Make committed signals visible to the dispatcher (never refuses)."""
        wake = False
        for item in items:
            if self._size >= self._max:
                # Already durable; the dispatcher reads it back from the journal.
                self.reload_needed = wake = True
                break
            batch = self._by_target.get(item.signal.target)
            if batch is None:
                # Newly pending: takeable now, or at its rest's end, which the waiter must learn.
                batch = self._by_target[item.signal.target] = {}
                wake = True
            if item.row_id not in batch:
                batch[item.row_id] = item.signal
                self._size += 1
        if wake:
            # A target already pending is takeable (the waiter is awake) or resting
            # (the waiter wakes at its end): more signals for it change nothing.
            self._wakeup.set()

    def request_reload(self) -> None:
        """The journal may hold undecided signals (a new term as leader, say)."""
        self.reload_needed = True
        self._wakeup.set()

    def take(self) -> tuple[Target, list[Accepted]] | None:
        """The oldest pending target not resting and all its signals; None when there is none."""
        now = self._clock()
        for target in self._by_target:
            if self._resting.get(target, now) <= now:
                break
        else:
            return None
        batch = self._by_target.pop(target)
        self._size -= len(batch)
        if self._rest > 0:
            self._forget_rested(now)
            self._resting[target] = now + self._rest
        return target, [Accepted(row_id, signal) for row_id, signal in batch.items()]

    def _forget_rested(self, now: float) -> None:
        # Bounded by the targets taken within one rest. Swept when it doubled since
        # the last sweep: a storm over thousands of targets pays O(1) per take, not a
        # walk of every resting target on every take. (A rest that ended is inert.)
        if len(self._resting) > self._sweep_at:
            self._resting = {t: until for t, until in self._resting.items() if until > now}
            self._sweep_at = max(_SWEEP_AT_LEAST, 2 * len(self._resting))

    def _ready_in(self) -> float | None:
        """Seconds until a pending target may be taken: 0 now, None when nothing is pending."""
        now, soonest = self._clock(), None
        # Resting targets are those taken within one rest: the walk stops soon.
        for target in self._by_target:
            until = self._resting.get(target, now)
            if until <= now:
                return 0.0
            soonest = until if soonest is None else min(soonest, until)
        return None if soonest is None else soonest - now

    async def reload(self, read_page: ReadPage) -> int:
        """Page undecided signals back in from the journal (start, election, overflow)."""
        self.reload_needed = False
        after, loaded = 0, 0
        while not self.reload_needed:
            rows = await read_page(after_id=after, limit=RELOAD_PAGE)
            if not rows:
                break
            self.add(Accepted(row_id, signal) for row_id, signal in rows)
            loaded += len(rows)
            after = rows[-1][0]
        if loaded:
            log.info("undecided_signals_replayed", count=loaded, more=self.reload_needed)
        return loaded

    async def wait(self) -> None:
        """Until a pending target may be taken (its rest is over) or a reload was requested."""
        while not self.reload_needed:
            ready_in = self._ready_in()
            if ready_in == 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), ready_in)
