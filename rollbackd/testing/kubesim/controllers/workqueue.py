"""The controllers' work queue and timers, like client-go's workqueue.

Work items are ``(kind, namespace, name)``; a queued item is not queued
twice, and a timer for an item that already has an earlier one is dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from datetime import datetime

from .objects import Item


class WorkQueue:
    """FIFO of work items with de-duplication; ``idle`` is set while it is empty."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._queued: set[Item] = set()
        self._has_work = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, item: Item) -> None:
        if item in self._queued:
            return
        self._queued.add(item)
        self._items.append(item)
        self._has_work.set()
        self.idle.clear()

    async def get(self) -> Item:
        while not self._items:
            self.idle.set()
            self._has_work.clear()
            await self._has_work.wait()
        item = self._items.popleft()
        self._queued.discard(item)
        return item

    def __len__(self) -> int:
        return len(self._items)


class Timers:
    """Items due at a time: readiness, minReadySeconds, progress deadlines, retries."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, Item]] = []
        self._due: dict[Item, datetime] = {}
        self._seq = itertools.count()

    def schedule(self, due: datetime, item: Item) -> None:
        """Due ``item`` at ``due``; an earlier pending timer for it already covers this one."""
        pending = self._due.get(item)
        if pending is not None and pending <= due:
            return
        self._due[item] = due
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def pop_due(self, now: datetime) -> list[Item]:
        """The items due by ``now``, in due order, removed."""
        fired: list[Item] = []
        while self._heap and self._heap[0][0] <= now:
            due, _, item = heapq.heappop(self._heap)
            if self._due.get(item) == due:
                del self._due[item]
            fired.append(item)
        return fired

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None


class Requeue(Exception):
    """A sync that must run again soon (the upstream controller returns an error)."""
