"""Accepted signals waiting for a decision, grouped by target.

The journal is the queue (every signal here is committed there first); this
is its in-memory front, shaped for the dispatcher: signals are grouped per
Deployment, so however many alerts arrive for one target, the dispatcher
takes them all at once and decides once. Targets are served in the order
they first became pending, so a noisy Deployment cannot starve a quiet one.

Memory is bounded without refusing anything: past ``max_in_memory`` signals
the copies are not kept, a reload is requested, and the dispatcher pages the
undecided rest back in from the journal when the in-memory part runs dry.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from rollbackd.model import Signal, Target

__all__ = ["Accepted", "PendingSignals", "ReadPage"]

log = structlog.get_logger("rollbackd.pending")

# Undecided signals read back from the journal per query.
RELOAD_PAGE = 1000


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

    def __init__(self, max_in_memory: int = 50_000) -> None:
        if max_in_memory < 1:
            raise ValueError("max_in_memory must be >= 1")
        self._max = max_in_memory
        self._by_target: OrderedDict[Target, dict[int, Signal]] = OrderedDict()
        self._size = 0
        self._wakeup = asyncio.Event()
        # The journal holds undecided signals that are not (or may not be) here:
        # true at start (replay) and after an overflow.
        self.reload_needed = True

    def __len__(self) -> int:
        return self._size

    def add(self, items: Iterable[Accepted]) -> None:
        """Make committed signals visible to the dispatcher (never refuses)."""
        for item in items:
            if self._size >= self._max:
                # Already durable; the dispatcher reads it back from the journal.
                self.reload_needed = True
                break
            batch = self._by_target.setdefault(item.signal.target, {})
            if item.row_id not in batch:
                batch[item.row_id] = item.signal
                self._size += 1
        self._wakeup.set()

    def request_reload(self) -> None:
        """The journal may hold undecided signals (a new term as leader, say)."""
        self.reload_needed = True
        self._wakeup.set()

    def take(self) -> tuple[Target, list[Accepted]] | None:
        """The oldest pending target and all its signals, or None when empty."""
        if not self._by_target:
            return None
        target, batch = self._by_target.popitem(last=False)
        self._size -= len(batch)
        return target, [Accepted(row_id, signal) for row_id, signal in batch.items()]

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
        """Until something was added or a reload was requested."""
        while not self._by_target and not self.reload_needed:
            self._wakeup.clear()
            await self._wakeup.wait()
