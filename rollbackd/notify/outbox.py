"""The page outbox: every page meant for a channel, kept in the journal until it is out.

One row per (channel, notification). ``Notifier.enqueue`` writes rows and
returns once they are committed, so a page that was meant survives a crash,
a restart and a change of leader; the channel workers read them back here and
record each attempt. All SQL on the ``outbox`` table (journal schema
version 2) lives in this module.

Row identity is UNIQUE(channel, dedup_key, kind, resolves): writing the same
page twice (a resumed rollback re-sending its start page) is a no-op. A
failover copy (a page carried by another channel because its own channel is
down) stores ``<kind>+failover_from=<channel>`` in the kind column, so it has
an identity of its own, once per failed channel, while the page it carries
keeps its real kind and dedup_key in the body.

Delivery order per channel and dedup_key: triggers before resolves, then by
id. ``heads`` picks the first pending row of each dedup_key, so a resolve
is never sent while a trigger for the same key is pending on that channel,
and one key stuck in backoff does not hold back another.

States: pending -> delivered | failed (not retryable) | expired (older than
``notify.max_age``) | withdrawn (grouped into another page, or a stale
rollback trigger: see ``rollbackd.notify.stale``; the reason is kept in
``last_error``). Only pending rows change; every update is guarded by
``state = 'pending'``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollbackd.journal import Journal
    from rollbackd.notify.model import Notification

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
WITHDRAWN = "withdrawn"  # taken back before any attempt (grouped into another page)

_FAILOVER_MARK = "+failover_from="
_MAX_ERROR = 500  # last_error is for humans reading the journal, not a log archive


def row_kind(kind: str, failover_from: str | None = None) -> str:
    """The kind column: the notification kind, marked when the row is a failover copy."""
    return f"{kind}{_FAILOVER_MARK}{failover_from}" if failover_from else kind


def _fmt(at: datetime) -> str:
    # The journal's time format: fixed-width ISO-8601 UTC, so text order is time order.
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"timezone-aware datetime required, got naive {at.isoformat()}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class NewRow:
    """A page for one channel, as ``OutboxStore.add`` writes it."""

    channel: str
    dedup_key: str
    kind: str  # the kind column (see ``row_kind``)
    resolves: bool
    severity: str
    rollback_id: str | None
    body: dict[str, Any]  # notification_to_json(...)


@dataclass(frozen=True)
class OutboxRow:
    """One stored row."""

    id: int
    channel: str
    dedup_key: str
    kind: str
    resolves: bool
    severity: str
    rollback_id: str | None
    body: dict[str, Any]
    created_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    finished_at: datetime | None

    @property
    def is_failover_copy(self) -> bool:
        return _FAILOVER_MARK in self.kind


@dataclass(frozen=True)
class PendingEntry:
    """A pending row's identity and timing, without its body: what a worker pass reads."""

    id: int
    dedup_key: str
    kind: str
    resolves: bool
    created_at: datetime
    next_attempt_at: datetime

    @property
    def is_failover_copy(self) -> bool:
        return _FAILOVER_MARK in self.kind


def heads(entries: Sequence[PendingEntry]) -> list[PendingEntry]:
    """The next entry to send of each dedup_key, in id order.

    Per dedup_key, triggers go before resolves, then the oldest first; so a
    resolve waits for every pending trigger of its key, even one enqueued
    after it. ``entries`` are one channel's.
    """
    first: dict[str, PendingEntry] = {}
    for entry in entries:
        best = first.get(entry.dedup_key)
        if best is None or (entry.resolves, entry.id) < (best.resolves, best.id):
            first[entry.dedup_key] = entry
    return sorted(first.values(), key=lambda e: e.id)


def _row(r: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        id=int(r["id"]),
        channel=r["channel"],
        dedup_key=r["dedup_key"],
        kind=r["kind"],
        resolves=bool(r["resolves"]),
        severity=r["severity"],
        rollback_id=r["rollback_id"],
        body=json.loads(r["body"]),
        created_at=_parse(r["created_at"]),
        state=r["state"],
        attempts=int(r["attempts"]),
        next_attempt_at=_parse(r["next_attempt_at"]),
        last_error=r["last_error"],
        finished_at=_parse(r["finished_at"]) if r["finished_at"] else None,
    )


class OutboxStore:
    """The outbox table of one journal."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def add(
        self, rows: Sequence[NewRow], at: datetime, *, not_before: datetime | None = None
    ) -> list[bool]:
        """Insert ``rows`` in one transaction (INSERT OR IGNORE); True where a row is new.

        Returns after COMMIT: a row reported here is durable. ``not_before``
        holds the rows back until then (a page that may yet be grouped).
        """
        now = _fmt(at)
        due = _fmt(not_before) if not_before is not None else now
        inserted: list[bool] = []

        def body(conn: sqlite3.Connection) -> None:
            for row in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO outbox (channel, dedup_key, kind, resolves, severity,"
                    " rollback_id, body, created_at, state, attempts, next_attempt_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (
                        row.channel,
                        row.dedup_key,
                        row.kind,
                        int(row.resolves),
                        row.severity,
                        row.rollback_id,
                        json.dumps(row.body, sort_keys=True, allow_nan=False),
                        now,
                        PENDING,
                        due,
                    ),
                )
                inserted.append(cur.rowcount == 1)

        if rows:
            await self._journal.transaction(body)
        return inserted

    async def withdraw(self, dedup_keys: Sequence[str], *, at: datetime, reason: str) -> int:
        """Take back pending rows never tried; rows already tried may have reached a human."""
        if not dedup_keys:
            return 0
        marks = ",".join("?" * len(dedup_keys))
        return await self._update(
            f"UPDATE outbox SET state = ?, finished_at = ?, last_error = ?"
            f" WHERE state = ? AND attempts = 0 AND dedup_key IN ({marks})",
            (WITHDRAWN, _fmt(at), reason, PENDING, *dedup_keys),
        )

    async def withdraw_row(self, row_id: int, *, at: datetime, reason: str) -> bool:
        """Take back one pending row, tried or not (a stale trigger); True if it was pending.

        Unlike ``withdraw``, earlier attempts do not protect the row: its
        incident is over, and whatever an attempt opened was resolved since.
        """
        changed = await self._update(
            "UPDATE outbox SET state = ?, finished_at = ?, last_error = ?"
            " WHERE id = ? AND state = ?",
            (WITHDRAWN, _fmt(at), reason[:_MAX_ERROR], row_id, PENDING),
        )
        return changed == 1

    async def note_withdrawn(
        self, n: Notification, channel: str, reason: str, at: datetime
    ) -> None:
        """A withdrawn page in its rollback's timeline: the review sees why nothing went out."""
        data = {"channel": channel, "dedup_key": n.dedup_key, "kind": str(n.kind)}
        await self._journal.record_event(
            n.dedup_key, n.target, "page_withdrawn", reason, at=at, data=data
        )

    async def revise(self, dedup_key: str, kind: str, body_json: dict[str, Any]) -> int:
        """Replace the body of ``dedup_key``'s pending rows of ``kind`` never tried."""
        return await self._update(
            "UPDATE outbox SET body = ? WHERE dedup_key = ? AND kind = ? AND state = ?"
            " AND attempts = 0",
            (json.dumps(body_json, sort_keys=True, allow_nan=False), dedup_key, kind, PENDING),
        )

    async def has_trigger(self, channel: str, dedup_key: str) -> bool:
        """True when ``channel`` has (or had) a trigger for ``dedup_key`` still open or sent.

        A resolve goes to every channel that got the trigger, even when the
        channel's in-memory view (a restarted process) no longer knows it.
        """
        rows = await self._journal.query(
            "SELECT 1 FROM outbox WHERE channel = ? AND dedup_key = ? AND resolves = 0"
            " AND state IN (?, ?) LIMIT 1",
            (channel, dedup_key, PENDING, DELIVERED),
        )
        return bool(rows)

    async def has_delivered_resolve(self, channel: str, dedup_key: str) -> bool:
        rows = await self._journal.query(
            "SELECT 1 FROM outbox WHERE channel = ? AND dedup_key = ? AND resolves = 1"
            " AND state = ? LIMIT 1",
            (channel, dedup_key, DELIVERED),
        )
        return bool(rows)

    async def entries(self, channel: str) -> list[PendingEntry]:
        """The pending rows of ``channel`` without their bodies, oldest first (cheap)."""
        rows = await self._journal.query(
            "SELECT id, dedup_key, kind, resolves, created_at, next_attempt_at FROM outbox"
            " WHERE channel = ? AND state = ? ORDER BY id",
            (channel, PENDING),
        )
        return [
            PendingEntry(
                id=int(r["id"]),
                dedup_key=r["dedup_key"],
                kind=r["kind"],
                resolves=bool(r["resolves"]),
                created_at=_parse(r["created_at"]),
                next_attempt_at=_parse(r["next_attempt_at"]),
            )
            for r in rows
        ]

    async def get(self, row_id: int) -> OutboxRow | None:
        rows = await self._journal.query("SELECT * FROM outbox WHERE id = ?", (row_id,))
        return _row(rows[0]) if rows else None

    async def pending(self, channel: str | None = None) -> list[OutboxRow]:
        """Pending rows, oldest first (all channels when ``channel`` is None)."""
        if channel is None:
            rows = await self._journal.query(
                "SELECT * FROM outbox WHERE state = ? ORDER BY id", (PENDING,)
            )
        else:
            rows = await self._journal.query(
                "SELECT * FROM outbox WHERE channel = ? AND state = ? ORDER BY id",
                (channel, PENDING),
            )
        return [_row(r) for r in rows]

    async def count_pending(
        self, channels: Sequence[str], *, due_before: datetime | None = None
    ) -> int:
        """Pending rows of ``channels``; with ``due_before``, only those to be tried before it."""
        if not channels:
            return 0
        sql = (
            f"SELECT COUNT(*) AS n FROM outbox WHERE state = ?"
            f" AND channel IN ({','.join('?' * len(channels))})"
        )
        params: tuple[str, ...] = (PENDING, *channels)
        if due_before is not None:
            sql += " AND next_attempt_at < ?"
            params += (_fmt(due_before),)
        rows = await self._journal.query(sql, params)
        return int(rows[0]["n"]) if rows else 0

    async def channels_with_pending(self) -> list[str]:
        rows = await self._journal.query(
            "SELECT DISTINCT channel FROM outbox WHERE state = ? ORDER BY channel", (PENDING,)
        )
        return [r["channel"] for r in rows]

    async def rows(self, channel: str | None = None) -> list[OutboxRow]:
        """Every row, in id order (for the API, the CLI and tests)."""
        if channel is None:
            found = await self._journal.query("SELECT * FROM outbox ORDER BY id")
        else:
            found = await self._journal.query(
                "SELECT * FROM outbox WHERE channel = ? ORDER BY id", (channel,)
            )
        return [_row(r) for r in found]

    async def delivered(self, row_id: int, *, attempts: int, at: datetime) -> None:
        await self._update(
            "UPDATE outbox SET state = ?, attempts = ?, finished_at = ?, last_error = ''"
            " WHERE id = ? AND state = ?",
            (DELIVERED, attempts, _fmt(at), row_id, PENDING),
        )

    async def retry_later(
        self, row_id: int, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        await self._update(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE id = ? AND state = ?",
            (attempts, _fmt(next_attempt_at), error[:_MAX_ERROR], row_id, PENDING),
        )

    async def failed(self, row_id: int, *, attempts: int, at: datetime, error: str) -> None:
        await self._update(
            "UPDATE outbox SET state = ?, attempts = ?, finished_at = ?, last_error = ?"
            " WHERE id = ? AND state = ?",
            (FAILED, attempts, _fmt(at), error[:_MAX_ERROR], row_id, PENDING),
        )

    async def expire(
        self, channel: str, *, created_before: datetime, at: datetime
    ) -> list[OutboxRow]:
        """Mark pending rows of ``channel`` created before ``created_before`` expired; returns them."""
        expired: list[OutboxRow] = []

        def body(conn: sqlite3.Connection) -> None:
            found = [
                _row(r)
                for r in conn.execute(
                    "SELECT * FROM outbox WHERE channel = ? AND state = ? AND created_at < ?"
                    " ORDER BY id",
                    (channel, PENDING, _fmt(created_before)),
                ).fetchall()
            ]
            for row in found:
                conn.execute(
                    "UPDATE outbox SET state = ?, finished_at = ? WHERE id = ?",
                    (EXPIRED, _fmt(at), row.id),
                )
            expired.extend(found)

        await self._journal.transaction(body)
        return expired

    async def _update(self, sql: str, params: tuple[Any, ...]) -> int:
        """One UPDATE in its own transaction; how many rows it changed."""
        return await self._journal.transaction(lambda conn: conn.execute(sql, params).rowcount)
