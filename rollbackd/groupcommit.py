"""Group commit: many concurrent callers, one transaction.

A synced SQLite commit costs an fsync; one per webhook request caps intake at
a few hundred requests a second. Here every caller that arrives while a flush
is running joins the next flush, so a burst of N concurrent requests costs
about two commits, and the caller still returns only after its own items are
durable (the acknowledgement promise of safety rule 14).

The flush runs in a task of its own, not in the caller: a caller that is
cancelled (a client that hung up) cannot abort a commit that other callers'
items share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Batch ``submit`` calls into calls of ``flush(items) -> one result per item``.

    ``flush`` must return exactly one result per item, in order; if it raises,
    every caller of that batch gets the exception (nothing of the batch was
    committed, so nothing may be acknowledged).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
        self._flush = flush
        self._waiting: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.flushes = 0  # for tests and the benchmark: how many transactions ran

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Return the results for ``items`` once the batch holding them is committed."""
        if not items:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="rollbackd-group-commit")
        # shield: a cancelled caller stops waiting; the flush goes on for the others.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait for the flush in progress and every batch queued behind it."""
        drainer = self._drainer
        if drainer is not None:
            await asyncio.gather(drainer, return_exceptions=True)

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            flat = [item for items, _ in batch for item in items]
            try:
                results = list(await self._flush(flat))
                if len(results) != len(flat):
                    raise RuntimeError(
                        f"group commit flush returned {len(results)} results for {len(flat)} items"
                    )
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    self._fail_waiting(exc)
                    raise
                continue
            finally:
                self.flushes += 1
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)

    def _fail_waiting(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(exc)
