"""Short intake commits on the caller's thread, when the write lock is free this instant.

A webhook's commit sent to the journal's thread costs the answer three
waits a busy machine stretches: that thread woken, the GIL handed to it,
the event loop woken with the result. Behind a decision's write or a
history read queued on the same thread, the wait is the sum of all of them.
Under 500 alerts/s, that hop was most of the tail of the webhook handler's
time (its p99 was 11 ms of the handler's 13 ms, at 100 Deployments).

So the intake first tries its own connection, here, in one step: BEGIN
IMMEDIATE with no busy wait, a few inserts, COMMIT. In WAL mode at
``synchronous=NORMAL`` a commit is an append to the WAL in the page cache,
no fsync, a fraction of a millisecond; the same promise as the thread's
commit (it survives the process dying at any instant). When the lock is
held (another write in progress) nothing ran, and the caller uses the
journal's thread as before; so do batches over ``MAX_ITEMS``. Never used
where a commit must fsync (``synchronous=FULL``): that would stall the
loop on the disk.

This connection never checkpoints (a checkpoint writes the database file
and syncs it); every ``CHECKPOINT_EVERY`` commits it asks the journal's
thread for a passive one, so the WAL stays bounded even in a storm of
webhooks while nothing else writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

from rollbackd.journal.connection import _BeginBusy, _run_transaction, page_cap_pragma

__all__ = ["CHECKPOINT_EVERY", "MAX_ITEMS", "DirectCommit"]

T = TypeVar("T")

# Direct commits between passive checkpoints requested from the journal's thread.
CHECKPOINT_EVERY = 100

# Larger batches go to the journal's thread: their rows and inserts would hold
# the loop for milliseconds (a body of 1 000 alerts, about 60 ms), where the
# thread builds them off it.
MAX_ITEMS = 64


class DirectCommit:
    """A second connection on the file, used only from the thread that opened it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        post: Callable[[Callable[[], None]], None],
        checkpoint: Callable[[], None],
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._post = post
        self._checkpoint = checkpoint
        self._thread = threading.get_ident()
        self.commits = 0  # for tests and the benchmark
        self.fallbacks = 0  # the lock was held: the journal's thread took the commit

    @classmethod
    def open(
        cls, path: str, post: Callable[[Callable[[], None]], None], checkpoint: Callable[[], None]
    ) -> DirectCommit:
        """Open the connection (the file exists, in WAL mode, migrated) on this thread.

        ``post`` queues a job on the journal's thread; ``checkpoint`` is the
        job that checkpoints there.
        """
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=0")  # never wait for the lock on this thread
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            cap = page_cap_pragma()
            if cap is not None:
                conn.execute(cap)
        except BaseException:
            conn.close()
            raise
        return cls(conn, post, checkpoint)

    def try_transaction(self, body: Callable[[sqlite3.Connection], T]) -> tuple[T] | None:
        """``(body(connection),)`` committed, or None when it could not run here (nothing ran).

        Raises what the transaction raised otherwise (rolled back: nothing of
        it was committed).
        """
        conn = self._conn
        if conn is None or threading.get_ident() != self._thread:
            return None
        try:
            result = _run_transaction(conn, body)
        except _BeginBusy:
            self.fallbacks += 1
            return None
        self.commits += 1
        if self.commits % CHECKPOINT_EVERY == 0:
            # A closing journal refuses new jobs; its own close checkpoints anyway.
            with contextlib.suppress(ValueError):
                self._post(self._checkpoint)
        return (result,)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
