"""The audit trail: every signal, decision, phase change and notification, in SQLite.

The journal is the raw material of the post-incident review and rollbackd's
own memory across restarts (which signals it already handled, which rollback
is in flight, when the last one finished, which revisions it restored).
Every write is committed before the call returns, so a crash loses nothing
that was acknowledged.

Storage choices, and why:
- SQLite through aiosqlite: embedded, one file, no server to run.
- WAL journal mode: readers (the HTTP API, the CLI) do not block the writer.
- ``PRAGMA user_version`` holds the schema version; opening a file written
  by a newer rollbackd fails with a clear error instead of misreading it.
- Times are ISO-8601 UTC strings with microseconds, fixed width, so text
  order is time order and the file is readable with the ``sqlite3`` shell.
- Structured payloads (labels, details, event data) are JSON text.

``timeline(rollback_id)`` merges, in time order: the signals behind the
rollback's decisions, the decisions, the recorded events (phase changes,
patch, images, verification intervals, ...) and the notification outcomes
(``record_notification``), so callers need not also record notifications as
events.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import aiosqlite

from rollbackd.groupcommit import GroupCommit
from rollbackd.jsonable import to_jsonable
from rollbackd.model import (
    Action,
    Decision,
    History,
    Phase,
    RecordKind,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.notify.model import Notification

SCHEMA_VERSION = 2

# Key of ``save_rollback(details=...)`` under which the executor records the
# revision number the restored ReplicaSet got (Kubernetes gives a restored
# template a new, higher revision). ``history().restored_revisions`` lists it.
DETAIL_RESTORED_REVISION = "restored_revision"

# Terminal phases that mean rollbackd acted (or tried to) on the cluster; a
# dry run or a skip changed nothing, so it neither starts a cooldown nor counts
# as the "last finished" rollback.
_ACTED_TERMINAL = (Phase.ROLLBACK_COMPLETED.value, Phase.ESCALATED.value)
_NON_TERMINAL = tuple(p.value for p in Phase if not p.terminal)

_SCHEMA_V1 = """
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    signal TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    value REAL,
    threshold REAL,
    labels TEXT NOT NULL,
    summary TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX signals_key ON signals (key);
CREATE INDEX signals_target ON signals (namespace, name, observed_at);

CREATE TABLE unresolved_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    signal_key TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_revision INTEGER,
    to_revision INTEGER,
    rollback_id TEXT
);
CREATE INDEX decisions_rollback ON decisions (rollback_id);
CREATE INDEX decisions_target ON decisions (namespace, name, at);

CREATE TABLE rollbacks (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    phase TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    from_revision INTEGER,
    to_revision INTEGER,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX rollbacks_target ON rollbacks (namespace, name, started_at);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollback_id TEXT,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_rollback ON events (rollback_id, at);

CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    rollback_id TEXT,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    resolves INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    summary TEXT NOT NULL,
    channel TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX notifications_dedup ON notifications (dedup_key);
CREATE INDEX notifications_rollback ON notifications (rollback_id);
"""

# Version 2: the journal becomes the durable queue and the page outbox.
# - signals.decided_at / decision_id: an accepted signal with no decision yet
#   is replayed at start and on election (``undecided_signals``).
# - unresolved_alerts keeps one row per fingerprint with a count, so the same
#   unmappable alert delivered 200 times is one row, not 200.
# - outbox: every page meant for a channel, until delivered or too old.
_SCHEMA_V2 = """
ALTER TABLE signals ADD COLUMN decided_at TEXT;
ALTER TABLE signals ADD COLUMN decision_id INTEGER;
-- Signals from before version 2 were handled (or lost) by the process that
-- took them; replaying days-old signals now would page about the past.
UPDATE signals SET decided_at = observed_at;
CREATE INDEX signals_undecided ON signals (id) WHERE accepted = 1 AND decided_at IS NULL;
CREATE INDEX signals_decision ON signals (decision_id);

CREATE TABLE unresolved_alerts_v2 (
    fingerprint TEXT PRIMARY KEY,
    first_at TEXT NOT NULL,
    at TEXT NOT NULL,
    count INTEGER NOT NULL,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    reason TEXT NOT NULL
);
INSERT INTO unresolved_alerts_v2 (fingerprint, first_at, at, count, alertname, labels, reason)
    SELECT fingerprint, MIN(at), MAX(at), COUNT(*), alertname, labels, reason
    FROM unresolved_alerts GROUP BY fingerprint;
DROP TABLE unresolved_alerts;
ALTER TABLE unresolved_alerts_v2 RENAME TO unresolved_alerts;
CREATE INDEX unresolved_alerts_at ON unresolved_alerts (at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    resolves INTEGER NOT NULL,
    severity TEXT NOT NULL,
    rollback_id TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    finished_at TEXT,
    UNIQUE (channel, dedup_key, kind, resolves)
);
CREATE INDEX outbox_pending ON outbox (channel, id) WHERE state = 'pending';
CREATE INDEX outbox_created ON outbox (created_at);

-- What a record is: a rollback, a dry run (would-be rollback) or an escalation
-- with no rollback, so every decision that pages is listed, and history
-- (cooldown, in flight, restored revisions) counts real rollbacks only.
ALTER TABLE rollbacks ADD COLUMN kind TEXT NOT NULL DEFAULT 'rollback';
UPDATE rollbacks SET kind = 'dry_run' WHERE phase = 'DRY_RUN';
CREATE INDEX rollbacks_kind ON rollbacks (kind, namespace, name, started_at);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_target ON events (namespace, name, kind, at);
CREATE INDEX notifications_at ON notifications (at);
CREATE INDEX decisions_at ON decisions (at);
"""

# One entry per schema version: the script that brings version i-1 to i.
_MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2)

# Timeline order for entries with the same timestamp: cause before effect.
_ORDER = {"signal": 0, "decision": 1, "event": 2, "notification": 3}


# Parameters per statement for ``IN (...)`` lists, well under SQLite's limit.
_SQL_CHUNK = 500

_INSERT_SIGNAL = (
    "INSERT INTO signals (key, namespace, name, source, signal, status, started_at,"
    " observed_at, value, threshold, labels, summary, accepted, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# One row per fingerprint: a repeat bumps the count and the last time.
_UPSERT_UNRESOLVED = (
    "INSERT INTO unresolved_alerts (fingerprint, first_at, at, count, alertname, labels, reason)"
    " VALUES (?, ?, ?, 1, ?, ?, ?)"
    " ON CONFLICT (fingerprint) DO UPDATE SET at = excluded.at, count = count + 1,"
    " alertname = excluded.alertname, labels = excluded.labels, reason = excluded.reason"
)


@dataclass(frozen=True)
class UnresolvedRecord:
    """An alert that is journaled but not acted on: no target found, or invalid."""

    fingerprint: str
    alertname: str
    labels: Mapping[str, str]
    reason: str
    at: datetime


class JournalError(Exception):
    """The journal file cannot be opened or used (corrupt, newer schema, unwritable)."""


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a rollback's timeline."""

    at: datetime
    kind: str  # "signal", "decision", "notification", or the recorded event kind
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def format_time(at: datetime) -> str:
    """ISO-8601 UTC with microseconds; naive datetimes are refused (which zone?).

    Cached: a storm repeats a few anomaly starts and one arrival time per batch.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"timezone-aware datetime required, got naive {at.isoformat()}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _opt_time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value or {}), sort_keys=True, allow_nan=False)


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


class Journal:
    """One SQLite file; open it with ``await Journal.open(path)``, close with ``close()``."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._conn.row_factory = sqlite3.Row
        self._write_lock = asyncio.Lock()
        self._synchronous = "NORMAL"
        self._intake_commit: GroupCommit[Signal | UnresolvedRecord, int | None] = GroupCommit(
            self._flush_intake
        )
        self.path = path

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> Journal:
        """Open (creating file, parent directory and schema as needed) and migrate.

        ``create=False`` is for readers (CLI history/show/report): a mistyped
        path is an error instead of a new, empty journal. ``synchronous`` is
        SQLite's durability level (see ``_prepare``).
        """
        text = os.fspath(path)
        if not create and text != ":memory:" and not await asyncio.to_thread(os.path.isfile, text):
            raise JournalError(f"journal {text} does not exist")
        if text != ":memory:":
            parent = Path(text).parent
            try:
                await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(f"journal {text}: cannot create directory: {exc}") from exc
        try:
            conn = await aiosqlite.connect(text, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {text}: cannot open: {exc}") from exc
        journal = cls(conn, text)
        journal._synchronous = synchronous.upper()
        try:
            await journal._prepare()
        except BaseException:
            await conn.close()
            raise
        return journal

    @property
    def intake_commits(self) -> int:
        """Transactions the intake has used so far (group commit shares them)."""
        return self._intake_commit.flushes

    async def close(self) -> None:
        await self._intake_commit.close()
        await self._conn.close()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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
            await self._conn.execute("PRAGMA busy_timeout=5000")
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
            script = _MIGRATIONS[target_version - 1]
            # executescript commits; the version bump is in the same script so
            # a crash mid-migration leaves the old version and the script re-runs.
            await self._conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version={target_version};\nCOMMIT;"
            )

    async def schema_version(self) -> int:
        return int(await self._scalar("PRAGMA user_version") or 0)

    # --- low-level helpers -------------------------------------------------

    async def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._conn.execute(sql, tuple(params)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._conn.execute(sql, tuple(params)) as cur:
            rows = await cur.fetchall()
        return list(rows)

    # Public for the stores that keep their tables in this file (the outbox,
    # retention): one connection, one write lock, one place that commits.
    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return await self._rows(sql, params)

    async def transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> None:
        """Run ``body(connection)`` inside one write transaction (BEGIN IMMEDIATE .. COMMIT)."""
        await self._transaction(lambda: body(self._conn))

    async def release_free_pages(self) -> None:
        """Give free pages back to the file system (journals with incremental auto-vacuum).

        Under the write lock, so no transaction is open; executescript, because
        a plain execute steps the pragma once and frees a single page.
        """
        async with self._write_lock:
            await self._conn.executescript("PRAGMA incremental_vacuum;")

    async def _write(self, sql: str, params: Iterable[Any]) -> None:
        """One statement in its own transaction, committed before returning."""
        await self._transaction(lambda: self._conn.execute(sql, tuple(params)))

    async def _transaction(self, body: Callable[[], Awaitable[Any]]) -> None:
        # aiosqlite runs calls in order on one thread, but two coroutines'
        # statements would interleave between BEGIN and COMMIT on the shared
        # connection; the lock keeps each write in a transaction of its own.
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                await body()
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    # --- writes ------------------------------------------------------------

    async def record_signal(self, signal: Signal, *, accepted: bool, note: str = "") -> None:
        """One signal, outside the intake (a manual request, a test)."""
        if accepted:
            await self.accept([signal])
            return
        await self._write(_INSERT_SIGNAL, _signal_row(signal, accepted=False, note=note))

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
        results = await self._intake_commit.submit(items)
        return results[: len(signals)]

    async def _flush_intake(self, items: list[Signal | UnresolvedRecord]) -> list[int | None]:
        results: list[int | None] = [None] * len(items)
        signal_at = [i for i, item in enumerate(items) if isinstance(item, Signal)]
        unresolved = [item for item in items if isinstance(item, UnresolvedRecord)]

        async def body() -> None:
            signals = [cast(Signal, items[i]) for i in signal_at]
            seen = await self._accepted_keys([s.key for s in signals if s.key])
            fresh: list[int] = []  # positions in ``items``
            for position, signal in zip(signal_at, signals, strict=True):
                if signal.key:
                    if signal.key in seen:
                        continue
                    seen.add(signal.key)
                fresh.append(position)
            if fresh:
                await self._conn.executemany(
                    _INSERT_SIGNAL,
                    [_signal_row(cast(Signal, items[p]), accepted=True) for p in fresh],
                )
                # One transaction holding the write lock, AUTOINCREMENT, no
                # deletes in between: the new ids are consecutive and end here.
                last = int(await self._scalar("SELECT last_insert_rowid()"))
                for offset, position in enumerate(fresh):
                    results[position] = last - len(fresh) + 1 + offset
            if unresolved:
                await self._conn.executemany(
                    _UPSERT_UNRESOLVED, [_unresolved_row(u) for u in unresolved]
                )

        await self._transaction(body)
        return results

    async def _accepted_keys(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start : start + _SQL_CHUNK]
            rows = await self._rows(
                f"SELECT key FROM signals WHERE accepted = 1 AND key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update(r[0] for r in rows)
        return found

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
        return [(int(r["id"]), _signal(r)) for r in rows]

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

    async def record_decision(
        self,
        decision: Decision,
        *,
        signal_key: str,
        at: datetime,
        rollback_id: str | None = None,
        covers: Sequence[int] = (),
    ) -> int:
        """Record ``decision`` and mark as decided the signals it answers; its row id.

        ``covers`` lists the row ids of every accepted signal this decision
        settles (the dispatcher decides once for all signals of a target);
        signals with ``signal_key`` are settled too. Settled signals are never
        replayed.
        """
        stamp = format_time(at)
        decision_id = 0

        async def body() -> None:
            nonlocal decision_id
            cursor = await self._conn.execute(
                "INSERT INTO decisions (at, signal_key, namespace, name, action, reason_code,"
                " reason, from_revision, to_revision, rollback_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stamp,
                    signal_key,
                    decision.target.namespace,
                    decision.target.name,
                    str(decision.action),
                    decision.reason_code,
                    decision.reason,
                    decision.from_revision,
                    decision.to_revision,
                    rollback_id or decision.rollback_id,
                ),
            )
            decision_id = int(cursor.lastrowid or 0)
            if signal_key:
                await self._conn.execute(
                    "UPDATE signals SET decided_at = ?, decision_id = ?"
                    " WHERE key = ? AND accepted = 1 AND decided_at IS NULL",
                    (stamp, decision_id, signal_key),
                )
            ids = list(covers)
            for start in range(0, len(ids), _SQL_CHUNK):
                chunk = ids[start : start + _SQL_CHUNK]
                await self._conn.execute(
                    "UPDATE signals SET decided_at = ?, decision_id = ?"
                    f" WHERE decided_at IS NULL AND id IN ({','.join('?' * len(chunk))})",
                    (stamp, decision_id, *chunk),
                )

        await self._transaction(body)
        return decision_id

    async def link_decision(self, decision_id: int, record_id: str) -> None:
        """Attach a decision to the record its action produced (an escalation's page)."""
        await self._write(
            "UPDATE decisions SET rollback_id = ? WHERE id = ?", (record_id, decision_id)
        )

    async def save_rollback(
        self, rollback: Rollback, *, details: Mapping[str, Any] | None = None
    ) -> None:
        """Insert or update the rollback's current state; ``details`` merge into what is stored."""
        values = (
            rollback.target.namespace,
            rollback.target.name,
            str(rollback.phase),
            format_time(rollback.started_at),
            format_time(rollback.updated_at),
            format_time(rollback.finished_at) if rollback.finished_at else None,
            rollback.from_revision,
            rollback.to_revision,
            rollback.reason_code,
            rollback.reason,
            str(rollback.kind),
        )
        new_details = to_jsonable(dict(details or {}))

        async def upsert() -> None:
            async with self._conn.execute(
                "SELECT namespace, name, details FROM rollbacks WHERE id = ?", (rollback.id,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                await self._conn.execute(
                    "INSERT INTO rollbacks (id, namespace, name, phase, started_at, updated_at,"
                    " finished_at, from_revision, to_revision, reason_code, reason, kind, details)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rollback.id, *values, _dumps(new_details)),
                )
                return
            if (row[0], row[1]) != (rollback.target.namespace, rollback.target.name):
                raise ValueError(
                    f"rollback {rollback.id} belongs to {row[0]}/{row[1]}, not {rollback.target}"
                )
            merged = {**_loads(row[2]), **new_details}
            await self._conn.execute(
                "UPDATE rollbacks SET namespace = ?, name = ?, phase = ?, started_at = ?,"
                " updated_at = ?, finished_at = ?, from_revision = ?, to_revision = ?,"
                " reason_code = ?, reason = ?, kind = ?, details = ? WHERE id = ?",
                (*values, _dumps(merged), rollback.id),
            )

        await self._transaction(upsert)

    async def record_event(
        self,
        rollback_id: str | None,
        target: Target,
        kind: str,
        message: str,
        *,
        at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        if not kind:
            raise ValueError("event kind must not be empty")
        await self._write(
            "INSERT INTO events (rollback_id, namespace, name, at, kind, message, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                rollback_id,
                target.namespace,
                target.name,
                format_time(at),
                kind,
                message,
                _dumps(data),
            ),
        )

    async def record_notification(
        self, n: Notification, channel: str, ok: bool, detail: str, at: datetime
    ) -> None:
        rollback_id = n.details.get("rollback_id")
        await self._write(
            "INSERT INTO notifications (at, created_at, dedup_key, rollback_id, kind, severity,"
            " resolves, namespace, name, summary, channel, ok, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                format_time(at),
                format_time(n.created_at),
                n.dedup_key,
                str(rollback_id) if rollback_id else None,
                str(n.kind),
                n.severity,
                int(n.resolves),
                n.target.namespace,
                n.target.name,
                n.summary,
                channel,
                int(ok),
                detail,
            ),
        )

    # --- reads -------------------------------------------------------------

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        rows = await self._rows("SELECT * FROM rollbacks WHERE id = ?", (rollback_id,))
        return _rollback(rows[0]) if rows else None

    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT details FROM rollbacks WHERE id = ?", (rollback_id,))
        return dict(_loads(rows[0]["details"])) if rows else None

    async def list_rollbacks(
        self,
        *,
        limit: int = 50,
        target: Target | None = None,
        kind: RecordKind | None = None,
    ) -> list[Rollback]:
        """Records newest first: rollbacks, dry runs and escalations (``kind`` filters)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        where: list[str] = []
        params: list[Any] = []
        if target is not None:
            where.append("namespace = ? AND name = ?")
            params += [target.namespace, target.name]
        if kind is not None:
            where.append("kind = ?")
            params.append(str(kind))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._rows(
            f"SELECT * FROM rollbacks {clause} ORDER BY started_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_rollback(r) for r in rows]

    async def history(self, target: Target) -> History:
        """What rollbackd remembers about ``target`` for the next decision.

        in_flight: the newest rollback not in a terminal phase.
        last_finished: the newest ROLLBACK_COMPLETED or ESCALATED one, by
        finish time (dry runs and skips changed nothing).
        restored_revisions: revisions recorded under ``restored_revision``
        in rollback details, newest first.
        """
        key = (target.namespace, target.name, str(RecordKind.ROLLBACK))
        in_flight = await self._rows(
            "SELECT * FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
            f" AND phase IN ({','.join('?' * len(_NON_TERMINAL))})"
            " ORDER BY started_at DESC, id DESC LIMIT 1",
            (*key, *_NON_TERMINAL),
        )
        finished = await self._rows(
            "SELECT * FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
            f" AND phase IN ({','.join('?' * len(_ACTED_TERMINAL))})"
            " ORDER BY COALESCE(finished_at, updated_at) DESC, id DESC LIMIT 1",
            (*key, *_ACTED_TERMINAL),
        )
        restored_rows = await self._rows(
            "SELECT details FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
            " ORDER BY started_at DESC, id DESC",
            key,
        )
        dry_run = await self._rows(
            "SELECT * FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
            " ORDER BY started_at DESC, id DESC LIMIT 1",
            (target.namespace, target.name, str(RecordKind.DRY_RUN)),
        )
        restored: list[int] = []
        for row in restored_rows:
            value = _loads(row["details"]).get(DETAIL_RESTORED_REVISION)
            if isinstance(value, int) and not isinstance(value, bool) and value not in restored:
                restored.append(value)
        return History(
            in_flight=_rollback(in_flight[0]) if in_flight else None,
            last_finished=_rollback(finished[0]) if finished else None,
            restored_revisions=tuple(restored),
            last_dry_run=_rollback(dry_run[0]) if dry_run else None,
        )

    async def decisions(
        self, *, target: Target | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first, as plain dicts (for the API and the CLI)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        where, params = (
            ("", ())
            if target is None
            else (
                "WHERE namespace = ? AND name = ?",
                (target.namespace, target.name),
            )
        )
        rows = await self._rows(
            f"SELECT * FROM decisions {where} ORDER BY at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_decision_dict(r) for r in rows]

    async def last_event(
        self, target: Target, kind: str, *, since: datetime, reason_code: str | None = None
    ) -> dict[str, Any] | None:
        """The data of the newest ``kind`` event for ``target`` at or after ``since``."""
        sql = "SELECT data FROM events WHERE namespace = ? AND name = ? AND kind = ? AND at >= ?"
        params: list[Any] = [target.namespace, target.name, kind, format_time(since)]
        if reason_code is not None:
            sql += " AND json_extract(data, '$.reason_code') = ?"
            params.append(reason_code)
        rows = await self._rows(sql + " ORDER BY at DESC, id DESC LIMIT 1", params)
        return dict(_loads(rows[0]["data"])) if rows else None

    async def unresolved_alerts(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT * FROM unresolved_alerts ORDER BY at DESC, fingerprint LIMIT ?", (limit,)
        )
        return [
            {
                "at": parse_time(r["at"]),
                "first_at": parse_time(r["first_at"]),
                "count": r["count"],
                "fingerprint": r["fingerprint"],
                "alertname": r["alertname"],
                "labels": _loads(r["labels"]),
                "reason": r["reason"],
            }
            for r in rows
        ]

    async def timeline(self, rollback_id: str) -> list[TimelineEntry]:
        """Everything known about one rollback, oldest first (see the module docstring)."""
        keyed: list[tuple[str, int, int, TimelineEntry]] = []

        decisions = await self._rows(
            "SELECT * FROM decisions WHERE rollback_id = ? ORDER BY at, id", (rollback_id,)
        )
        signal_keys = list(dict.fromkeys(r["signal_key"] for r in decisions if r["signal_key"]))
        decision_ids = [r["id"] for r in decisions]
        if signal_keys or decision_ids:
            # The signals each decision named, and those it settled with them.
            signals = await self._rows(
                f"SELECT * FROM signals WHERE key IN ({','.join('?' * len(signal_keys))})"
                f" OR decision_id IN ({','.join('?' * len(decision_ids))})"
                " ORDER BY observed_at, id",
                [*signal_keys, *decision_ids],
            )
            seen: set[str] = set()
            for r in signals:
                if r["key"] in seen:  # repeats of the same signal add nothing
                    continue
                seen.add(r["key"])
                keyed.append((r["observed_at"], _ORDER["signal"], r["id"], _signal_entry(r)))
        for r in decisions:
            keyed.append((r["at"], _ORDER["decision"], r["id"], _decision_entry(r)))
        for r in await self._rows(
            "SELECT * FROM events WHERE rollback_id = ? ORDER BY at, id", (rollback_id,)
        ):
            entry = TimelineEntry(parse_time(r["at"]), r["kind"], r["message"], _loads(r["data"]))
            keyed.append((r["at"], _ORDER["event"], r["id"], entry))
        for r in await self._rows(
            "SELECT * FROM notifications WHERE rollback_id = ? OR dedup_key = ? ORDER BY at, id",
            (rollback_id, rollback_id),
        ):
            keyed.append((r["at"], _ORDER["notification"], r["id"], _notification_entry(r)))
        keyed.sort(key=lambda item: item[:3])
        return [item[3] for item in keyed]


# --- row conversion ----------------------------------------------------------


def _rollback(row: sqlite3.Row) -> Rollback:
    return Rollback(
        id=row["id"],
        target=Target(row["namespace"], row["name"]),
        phase=Phase(row["phase"]),
        started_at=parse_time(row["started_at"]),
        updated_at=parse_time(row["updated_at"]),
        from_revision=row["from_revision"],
        to_revision=row["to_revision"],
        reason_code=row["reason_code"],
        reason=row["reason"],
        finished_at=_opt_time(row["finished_at"]),
        kind=RecordKind(row["kind"]),
    )


def _signal_row(signal: Signal, *, accepted: bool, note: str = "") -> tuple[Any, ...]:
    return (
        signal.key,
        signal.target.namespace,
        signal.target.name,
        str(signal.source),
        signal.name,
        str(signal.status),
        format_time(signal.started_at),
        format_time(signal.observed_at),
        to_jsonable(signal.value),
        to_jsonable(signal.threshold),
        _dumps_labels(signal.labels),
        signal.summary,
        int(accepted),
        note,
    )


def _dumps_labels(labels: Mapping[str, str]) -> str:
    # Labels are text to text (validated at intake): skip the general converter.
    if all(type(v) is str for v in labels.values()):
        return json.dumps(labels, sort_keys=True)
    return _dumps(labels)


def _signal(row: sqlite3.Row) -> Signal:
    return Signal(
        target=Target(row["namespace"], row["name"]),
        source=SignalSource(row["source"]),
        name=row["signal"],
        status=SignalStatus(row["status"]),
        started_at=parse_time(row["started_at"]),
        observed_at=parse_time(row["observed_at"]),
        value=row["value"],
        threshold=row["threshold"],
        key=row["key"],
        labels=_loads(row["labels"]),
        summary=row["summary"],
    )


def _unresolved_row(u: UnresolvedRecord) -> tuple[Any, ...]:
    stamp = format_time(u.at)
    return (u.fingerprint, stamp, stamp, u.alertname, _dumps(u.labels), u.reason)


def _decision_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "at": parse_time(row["at"]),
        "signal_key": row["signal_key"],
        "target": Target(row["namespace"], row["name"]),
        "action": Action(row["action"]),
        "reason_code": row["reason_code"],
        "reason": row["reason"],
        "from_revision": row["from_revision"],
        "to_revision": row["to_revision"],
        "rollback_id": row["rollback_id"],
    }


def _fmt_number(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def _signal_entry(row: sqlite3.Row) -> TimelineEntry:
    data = {
        "key": row["key"],
        "source": row["source"],
        "name": row["signal"],
        "status": row["status"],
        "started_at": row["started_at"],
        "observed_at": row["observed_at"],
        "value": row["value"],
        "threshold": row["threshold"],
        "labels": _loads(row["labels"]),
        "summary": row["summary"],
    }
    message = f"{row['source']} signal {row['signal']} {row['status']}"
    if row["value"] is not None or row["threshold"] is not None:
        message += f": {_fmt_number(row['value'])} (threshold {_fmt_number(row['threshold'])})"
    message += f"; anomaly began {row['started_at']}"
    return TimelineEntry(parse_time(row["observed_at"]), "signal", message, data)


def _decision_entry(row: sqlite3.Row) -> TimelineEntry:
    data = {k: v for k, v in _decision_dict(row).items() if k not in ("at", "target")}
    data["action"] = str(data["action"])
    message = f"decision {row['action']} ({row['reason_code']}): {row['reason']}"
    return TimelineEntry(parse_time(row["at"]), "decision", message, data)


def _notification_entry(row: sqlite3.Row) -> TimelineEntry:
    ok = bool(row["ok"])
    verb = "resolve" if row["resolves"] else row["kind"]
    data = {
        "channel": row["channel"],
        "ok": ok,
        "detail": row["detail"],
        "kind": row["kind"],
        "severity": row["severity"],
        "resolves": bool(row["resolves"]),
        "dedup_key": row["dedup_key"],
        "summary": row["summary"],
    }
    outcome = "sent" if ok else "FAILED"
    message = f"notification {verb} ({row['severity']}) via {row['channel']}: {outcome}"
    if row["detail"] and row["detail"] != "sent":
        message += f" ({row['detail']})"
    return TimelineEntry(parse_time(row["at"]), "notification", message, data)
