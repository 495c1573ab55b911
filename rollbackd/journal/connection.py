"""One SQLite connection: pragmas and migrations, queries, write transactions in one call each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiosqlite

from rollbackd.journal.rows import JournalError
from rollbackd.journal.schema import MIGRATIONS, SCHEMA_VERSION

# Parameters per statement for ``IN (...)`` lists, well under SQLite's limit.
SQL_CHUNK = 500

# How long a write waits for another connection's write transaction.
BUSY_TIMEOUT_MS = 5000

# Test-only: cap the journal at this many pages, so a test can fill it as a
# full disk would (SQLITE_FULL) without root or a small mount.
MAX_PAGES_ENV = "ROLLBACKD_TEST_JOURNAL_MAX_PAGES"

T = TypeVar("T")


def page_cap_pragma() -> str | None:
    """The test-only page cap (``MAX_PAGES_ENV``) as a pragma, for every connection on the file."""
    max_pages = os.environ.get(MAX_PAGES_ENV, "")
    return f"PRAGMA max_page_count={int(max_pages)}" if max_pages.isdigit() else None


class Connection:
    """The connection and its transactions, shared by the journal's stores."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._conn.row_factory = sqlite3.Row
        self._synchronous = "NORMAL"
        self.path = path

    async def _prepare(self) -> None:
        try:
            # Takes effect only on a file with no tables yet (a new journal):
            # retention can then give freed pages back (PRAGMA incremental_vacuum).
            await self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            await self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL (the default): in WAL mode a commit survives the process
            # dying at any instant (SIGKILL, OOM, a crash), which is what the
            # 2xx promises; only a power cut or kernel crash can lose the last
            # commits, and the chart's emptyDir journal does not outlive its
            # node anyway. It spares an fsync per commit, a few milliseconds
            # on every webhook answer. FULL adds that fsync, for a journal on
            # a persistent volume that must survive a power cut.
            await self._conn.execute(f"PRAGMA synchronous={self._synchronous}")
            await self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await self._conn.execute("PRAGMA foreign_keys=ON")
            version = await self._scalar("PRAGMA user_version")
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path}: not a usable SQLite file: {exc}") from exc
        version = int(version or 0)
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path}: schema version {version} is newer than this "
                f"rollbackd understands ({SCHEMA_VERSION}); upgrade rollbackd"
            )
        for target_version in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[target_version - 1]
            # executescript commits; the version bump is in the same script so
            # a crash mid-migration leaves the old version and the script re-runs.
            await self._conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version={target_version};\nCOMMIT;"
            )
        cap = page_cap_pragma()
        if cap is not None:
            await self._conn.execute(cap)

    async def _close_connection(self) -> None:
        """Close once every write already sent has committed or rolled back.

        A write whose caller was cancelled (a shielded "delivered" mark on
        shutdown) still runs; closing under it would drop its COMMIT, and the
        next start would send that page again. Each write is one call on the
        connection's thread, and the close is queued behind them.
        """
        await self._conn.close()

    async def schema_version(self) -> int:
        return int(await self._scalar("PRAGMA user_version") or 0)

    # --- low-level helpers -------------------------------------------------

    # One round trip to the connection's thread each (execute_fetchall), not
    # three (execute, fetch, close): every round trip waits for a turn of a
    # busy event loop.

    async def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = list(await self._conn.execute_fetchall(sql, tuple(params)))
        return rows[0][0] if rows else None

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, tuple(params)))

    # Public for the stores that keep their tables in this file (the outbox,
    # retention): one connection, one place that commits.
    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return await self._rows(sql, params)

    async def transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body(connection)`` inside one write transaction (BEGIN IMMEDIATE .. COMMIT).

        ``body`` runs on the journal's thread: plain sqlite3, no awaiting
        (see ``_transaction_in_thread``).
        """
        return await self._transaction_in_thread(body)

    async def release_free_pages(self) -> None:
        """Give free pages back to the file system (journals with incremental auto-vacuum).

        One call on the journal's thread, where no transaction is ever left
        open; executescript, because a plain execute steps the pragma once
        and frees a single page.
        """
        await self._conn.executescript("PRAGMA incremental_vacuum;")

    async def _write(self, sql: str, params: Iterable[Any]) -> None:
        """One statement in its own transaction, committed before returning."""
        values = tuple(params)
        await self._transaction_in_thread(lambda conn: conn.execute(sql, values))

    def _post(self, job: Callable[[], None]) -> None:
        """Queue ``job`` on the journal's thread without waiting for it.

        aiosqlite's own queue, the one its calls go through (so ``job`` runs
        in order with them); nothing reports back: ``job`` catches what it
        raises and answers its callers itself (``ThreadGroupCommit``).
        """
        if not self._conn._running:
            raise ValueError("Connection closed")
        self._conn._tx.put_nowait((None, job))

    async def _transaction_in_thread(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body(connection)`` between BEGIN IMMEDIATE and COMMIT, in one trip to the journal's thread.

        Every write is one call on the connection's thread, its COMMIT or
        ROLLBACK included: the thread runs calls one after the other, so no
        two transactions interleave and none needs a lock on the event loop.
        A transaction sent statement by statement held a lock there for a
        loop turn per statement, and every webhook and decision behind it
        waited for all of them on a busy loop (a fleet polled, hundreds of
        alerts a second); a write that queued behind another waited for the
        loop to see the first one finish before it even reached the thread.
        A cancelled caller can never leave a transaction open. ``body`` runs
        on that thread: plain sqlite3, no awaiting.
        """
        raw = self._conn._conn  # the sqlite3 connection aiosqlite runs calls on
        return await _busy_retried(lambda: self._conn._execute(_run_transaction, raw, body))

    async def _read_in_thread(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body(connection)``'s reads in one trip to the journal's thread (no transaction).

        A decision's history was four reads, four trips: each waits for a
        turn of a busy loop, and the webhooks' commits queue behind them on
        the connection's one thread.
        """
        return await self._conn._execute(body, self._conn._conn)


class _BeginBusy(Exception):
    """BEGIN IMMEDIATE answered busy at once: nothing ran, the call may be sent again."""

    def __init__(self, cause: sqlite3.OperationalError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _run_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """On the journal's thread: BEGIN IMMEDIATE, ``body``, COMMIT; ROLLBACK if anything fails.

    Raises ``_BeginBusy`` when BEGIN answered busy at once (nothing ran).
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _BeginBusy(exc) from exc
        raise
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL, IOERR), or the
        # COMMIT failed: a failing ROLLBACK must not hide the cause, and no
        # transaction may stay open for the next BEGIN.
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("ROLLBACK")
        raise
    return result


async def _busy_retried(begin: Callable[[], Awaitable[T]]) -> T:
    """``begin()`` again while SQLite answers busy without waiting, up to the busy timeout.

    Another coroutine's read may be open on this shared connection; if
    another connection (a second process on the file) wrote since that read
    began, BEGIN IMMEDIATE fails at once (SQLITE_BUSY_SNAPSHOT: the busy
    timeout does not apply). The read ends within a few loop turns, so the
    pause is on the loop, never on the journal's thread that read needs.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return await begin()
        except _BeginBusy as busy:
            if time.monotonic() > deadline:
                raise busy.cause from None
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
