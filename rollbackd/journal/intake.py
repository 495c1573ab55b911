"""The intake side: accepted signals in shared commits, the undecided queue."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import aiosqlite
import structlog

from rollbackd.groupcommit import GroupCommit
from rollbackd.journal.connection import SQL_CHUNK, Connection, _busy_retried, _run_transaction
from rollbackd.journal.direct import MAX_ITEMS as DIRECT_MAX_ITEMS
from rollbackd.journal.direct import DirectCommit
from rollbackd.journal.rows import (
    UnresolvedRecord,
    signal_from_row,
    signal_to_row,
    unresolved_to_row,
)
from rollbackd.model import Signal

log = structlog.get_logger("rollbackd.journal")

_SIGNAL_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_SIGNALS = (
    "INSERT INTO signals (key, namespace, name, source, signal, status, started_at,"
    " observed_at, value, threshold, labels, summary, accepted, note, evidence_since) VALUES "
)
_INSERT_SIGNAL = _INSERT_SIGNALS + _SIGNAL_ROW
# 15 parameters a row: 960 a statement, under the 999 older SQLite builds allow.
_ROWS_PER_INSERT = 64

# One row per fingerprint: a repeat bumps the count and the last time.
_UPSERT_UNRESOLVED = (
    "INSERT INTO unresolved_alerts (fingerprint, first_at, at, count, alertname, labels, reason)"
    " VALUES (?, ?, ?, 1, ?, ?, ?)"
    " ON CONFLICT (fingerprint) DO UPDATE SET at = excluded.at, count = count + 1,"
    " alertname = excluded.alertname, labels = excluded.labels, reason = excluded.reason"
)


class IntakeStore(Connection):
    """Signals and unmappable alerts; accepted ones wait here until a decision settles them."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        super().__init__(conn, path)
        self._intake_commit: GroupCommit[Signal | UnresolvedRecord, int | None] = GroupCommit(
            self._flush_intake, self._post
        )
        # Set by ``open_direct``: commits on the loop's thread while the lock is free.
        self._direct: DirectCommit | None = None

    def open_direct(self) -> None:
        """Let the intake commit on this thread when it can (a file journal, ``synchronous=NORMAL``)."""
        if self.path == ":memory:" or self._synchronous != "NORMAL":
            return
        raw = self._conn._conn

        def checkpoint() -> None:
            # Rows read, nothing returned: aiosqlite's thread keeps a job's result
            # until its next job, and a live cursor keeps its statement "in
            # progress", so that job's COMMIT (a decision's) would fail.
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            self._direct = DirectCommit.open(self.path, self._post, checkpoint)
        except sqlite3.Error as exc:
            # Only a shortcut: every commit still has the journal's thread.
            log.warning("journal_direct_commit_unavailable", path=self.path, error=str(exc))

    def close_direct(self) -> None:
        """Send every later commit to the journal's thread (the counts stay, for ``/metrics``)."""
        if self._direct is not None:
            self._direct.close()

    @property
    def direct_commits(self) -> int:
        """Intake transactions committed on the caller's thread so far."""
        return self._direct.commits if self._direct is not None else 0

    def intake_commit_counts(self) -> dict[str, int]:
        """Intake transactions so far by path, for ``/metrics``."""
        return {"in_place": self.direct_commits, "journal_thread": self._intake_commit.flushes}

    @property
    def intake_commits(self) -> int:
        """Transactions the intake has used so far (direct, or shared by group commit)."""
        return self._intake_commit.flushes + self.direct_commits

    async def record_signal(self, signal: Signal, *, accepted: bool, note: str = "") -> None:
        """One signal, outside the intake (a manual request, a test)."""
        if accepted:
            await self.accept([signal])
            return
        await self._write(_INSERT_SIGNAL, signal_to_row(signal, accepted=False, note=note))

    async def accept(
        self, signals: Sequence[Signal], unresolved: Sequence[UnresolvedRecord] = ()
    ) -> list[int | None]:
        """Journal accepted signals (and unmappable alerts) durably, in a shared commit.

        Returns, per signal, its row id, or None when a signal with the same
        key was accepted before (a re-send, or a repeat after a restart). When
        this returns, the signals are committed: the caller may answer 2xx.
        When it raises, nothing of the call was committed.
        """
        items: list[Signal | UnresolvedRecord] = [*signals, *unresolved]
        # In place while the lock is free and no intake commit waits on the
        # journal's thread; while some wait there, join them: fewer
        # transactions in a storm, and none overtakes signals accepted first.
        if self._direct is not None and len(items) <= DIRECT_MAX_ITEMS and self._intake_commit.idle:
            done = self._direct.try_transaction(_intake_body(items))
            if done is not None:
                return done[0][: len(signals)]
        # A batch whose BEGIN met another connection's write is sent again (nothing ran).
        results = await _busy_retried(lambda: self._intake_commit.submit(items))
        return results[: len(signals)]

    def _flush_intake(self, items: list[Signal | UnresolvedRecord]) -> list[int | None]:
        """On the journal's thread: the batch's rows, built off the loop, in one transaction."""
        return _run_transaction(self._conn._conn, _intake_body(items))

    async def signal_seen(self, key: str) -> bool:
        """True when a signal with ``key`` was recorded as accepted (survives restarts)."""
        if not key:
            return False
        found = await self._scalar(
            "SELECT 1 FROM signals WHERE key = ? AND accepted = 1 LIMIT 1", (key,)
        )
        return found is not None

    async def undecided_signals(
        self, *, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[int, Signal]]:
        """Accepted signals with no decision yet, oldest first: the durable queue."""
        rows = await self._rows(
            "SELECT * FROM signals WHERE accepted = 1 AND decided_at IS NULL AND id > ?"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [(int(r["id"]), signal_from_row(r)) for r in rows]

    async def count_undecided(self) -> int:
        return int(
            await self._scalar(
                "SELECT COUNT(*) FROM signals WHERE accepted = 1 AND decided_at IS NULL"
            )
            or 0
        )

    async def record_unresolved_alert(
        self,
        fingerprint: str,
        alertname: str,
        labels: Mapping[str, str],
        reason: str,
        at: datetime,
    ) -> None:
        await self.accept([], [UnresolvedRecord(fingerprint, alertname, labels, reason, at)])


def _intake_body(
    items: Sequence[Signal | UnresolvedRecord],
) -> Callable[[sqlite3.Connection], list[int | None]]:
    """The transaction's body for ``items``: their rows, then ``_insert_intake``."""
    signal_rows = [
        (i, item.key, signal_to_row(item, accepted=True))
        for i, item in enumerate(items)
        if isinstance(item, Signal)
    ]
    unresolved_rows = [
        unresolved_to_row(item) for item in items if isinstance(item, UnresolvedRecord)
    ]
    return lambda conn: _insert_intake(conn, len(items), signal_rows, unresolved_rows)


def _accepted_keys(conn: sqlite3.Connection, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), SQL_CHUNK):
        chunk = keys[start : start + SQL_CHUNK]
        rows = conn.execute(
            f"SELECT key FROM signals WHERE accepted = 1 AND key IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        found.update(r[0] for r in rows)
    return found


def _insert_signal_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert ``rows`` a chunk per statement; the last row's id.

    Each SQLite call hands the GIL over and takes it back, and a busy event
    loop can keep this thread waiting for it each time: one multi-row
    statement, not a step per row (``executemany``) and a query for the id.
    """
    last = 0
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = _INSERT_SIGNALS + ", ".join([_SIGNAL_ROW] * len(chunk))
        last = int(conn.execute(sql, [value for row in chunk for value in row]).lastrowid or 0)
    return last


def _insert_intake(
    conn: sqlite3.Connection,
    count: int,
    signal_rows: list[tuple[int, str, tuple[Any, ...]]],
    unresolved_rows: list[tuple[Any, ...]],
) -> list[int | None]:
    """On the journal's thread, inside the transaction: new signals and unmappable alerts.

    Per item, the new signal's row id, or None for a signal whose key was
    accepted before (a re-send, or a repeat after a restart) and for an
    unmappable alert.
    """
    results: list[int | None] = [None] * count
    seen = _accepted_keys(conn, [key for _, key, _ in signal_rows if key])
    fresh: list[tuple[int, tuple[Any, ...]]] = []
    for position, key, row in signal_rows:
        if key:
            if key in seen:
                continue
            seen.add(key)
        fresh.append((position, row))
    if fresh:
        # One transaction holding the write lock, AUTOINCREMENT, no deletes
        # in between: the new ids are consecutive and end at the last one.
        last = _insert_signal_rows(conn, [row for _, row in fresh])
        for offset, (position, _) in enumerate(fresh):
            results[position] = last - len(fresh) + 1 + offset
    if unresolved_rows:
        conn.executemany(_UPSERT_UNRESOLVED, unresolved_rows)
    return results
