"""Group commit: many concurrent callers, one transaction, batched on the journal's thread.

A synced SQLite commit costs an fsync; one per webhook request caps intake at
a few hundred requests a second. Here every caller that arrives while a flush
is running joins the next flush, so a burst of N concurrent requests costs
about two commits, and the caller still returns only after its own items are
durable (the acknowledgement promise of safety rule 14).

The batching happens on the journal's thread, not on the event loop: the job
that flushes takes whatever is waiting when it starts there, and queues
itself again behind the thread's other calls when more arrived meanwhile. So
the next batch never waits for a busy loop to notice that the previous one
committed, and a caller's answer costs the loop two turns (the results handed
over, the caller woken), where a flushing task cost four or more.

A caller that is cancelled (a client that hung up) only stops waiting: the
flush its items share with other callers goes on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

_Batch = list[tuple[Sequence[T], "asyncio.Future[list[R]]"]]


class GroupCommit(Generic[T, R]):
    """Batch ``submit`` calls into calls of ``flush(items) -> one result per item``.

    ``flush`` runs on the journal's thread (plain, blocking); ``post(job)``
    queues ``job`` there without waiting. ``flush`` must return exactly one
    result per item, in order; if it raises, every caller of that batch gets
    the exception (nothing of the batch was committed, so nothing may be
    acknowledged).
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Sequence[R]],
        post: Callable[[Callable[[], None]], None],
    ) -> None:
        self._flush = flush
        self._post = post
        self._mutex = threading.Lock()  # the loop adds, the journal's thread takes
        self._waiting: _Batch[T, R] = []
        self._in_flight: _Batch[T, R] = []
        self._posted = False  # a flushing job is queued or running on the thread
        self.flushes = 0  # for tests and the benchmark: how many transactions ran

    @property
    def idle(self) -> bool:
        """Nothing waiting, nothing being flushed: a commit made elsewhere jumps no queue."""
        return not self._posted

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Return the results for ``items`` once the batch holding them is committed."""
        if not items:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        entry = (items, future)
        with self._mutex:
            self._waiting.append(entry)
            start, self._posted = not self._posted, True
        if start:
            try:
                self._post(self._run)
            except BaseException:
                with self._mutex:
                    self._waiting.remove(entry)
                    self._posted = False
                raise
        # Not shielded: a cancelled caller cancels only its own future.
        return await future

    async def close(self) -> None:
        """Wait for the flush in progress and every batch queued behind it."""
        while True:
            with self._mutex:
                futures = [f for _, f in (*self._in_flight, *self._waiting) if not f.done()]
            if not futures:
                return
            await asyncio.wait(futures)

    def _run(self) -> None:
        """On the journal's thread: flush what is waiting, then queue again if more came."""
        with self._mutex:
            batch, self._waiting = self._waiting, []
            self._in_flight = batch
        if batch:
            self._flush_batch(batch)
        with self._mutex:
            self._in_flight = []
            again = self._posted = bool(self._waiting)
        if again:
            try:
                # Behind the thread's other calls: a storm of webhooks never starves them.
                self._post(self._run)
            except BaseException as exc:  # the journal is closing: nothing more commits
                with self._mutex:
                    left, self._waiting, self._posted = self._waiting, [], False
                _hand_over(left, [], exc)

    def _flush_batch(self, batch: _Batch[T, R]) -> None:
        flat = [item for items, _ in batch for item in items]
        try:
            results = list(self._flush(flat))
            if len(results) != len(flat):
                raise RuntimeError(
                    f"group commit flush returned {len(results)} results for {len(flat)} items"
                )
            error: BaseException | None = None
        except BaseException as exc:
            results, error = [], exc
        self.flushes += 1
        _hand_over(batch, results, error)


def _hand_over(batch: _Batch[T, R], results: list[R], error: BaseException | None) -> None:
    """From the journal's thread: one callback on the loop answers every caller of ``batch``."""
    if not batch:
        return
    loop = batch[0][1].get_loop()
    try:
        loop.call_soon_threadsafe(_answer, batch, results, error)
    except RuntimeError:
        pass  # the loop is closed: no caller is left to answer


def _answer(batch: _Batch[T, R], results: list[R], error: BaseException | None) -> None:
    start = 0
    for items, future in batch:
        if not future.done():  # a cancelled caller stopped waiting
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[start : start + len(items)])
        start += len(items)
