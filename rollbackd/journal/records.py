"""Decisions, records (rollbacks, dry runs, escalations), events, notifications, history."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from rollbackd.journal.connection import SQL_CHUNK, Connection
from rollbackd.journal.rows import (
    decision_from_row,
    dumps_json,
    format_time,
    loads_json,
    parse_time,
    rollback_from_row,
)
from rollbackd.jsonable import to_jsonable
from rollbackd.model import Decision, History, Phase, RecordKind, Rollback, Target

if TYPE_CHECKING:  # only the type: the journal does not need notify to run
    from rollbackd.notify.model import Notification

# Key of ``save_rollback(details=...)`` under which the executor records the
# revision number the restored ReplicaSet got (Kubernetes gives a restored
# template a new, higher revision). ``history().restored_revisions`` lists it.
DETAIL_RESTORED_REVISION = "restored_revision"

# Terminal phases that mean rollbackd acted (or tried to) on the cluster; a
# dry run or a skip changed nothing, so it neither starts a cooldown nor counts
# as the "last finished" rollback.
# A rejection counts too: the human said no, so the same anomaly is not proposed
# again (and paged again) before the cooldown ends.
_ACTED_TERMINAL = (Phase.ROLLBACK_COMPLETED.value, Phase.ESCALATED.value, Phase.REJECTED.value)
_NON_TERMINAL = tuple(p.value for p in Phase if not p.terminal)


class DecisionNote(NamedTuple):
    """A timeline entry journaled with its decision: a signal that joins a record, say."""

    rollback_id: str
    kind: str
    message: str
    data: Mapping[str, Any] | None = None


class RecordStore(Connection):
    """What was decided and done, and what the next decision must remember."""

    async def record_decision(
        self,
        decision: Decision,
        *,
        signal_key: str,
        at: datetime,
        rollback_id: str | None = None,
        covers: Sequence[int] = (),
        note: DecisionNote | None = None,
    ) -> int:
        """Record ``decision`` and mark as decided the signals it answers; its row id.

        ``covers`` lists the row ids of every accepted signal this decision
        settles (the dispatcher decides once for all signals of a target);
        signals with ``signal_key`` are settled too. Settled signals are never
        replayed. ``note`` goes on the decision's target's timeline in the same
        transaction: one trip to the journal's thread, not two, per decision.
        """
        stamp = format_time(at)
        event = (
            None
            if note is None
            else _event_row(
                note.rollback_id, decision.target, note.kind, note.message, at, note.data
            )
        )
        row = (
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
        )
        ids = list(covers)

        def body(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO decisions (at, signal_key, namespace, name, action, reason_code,"
                " reason, from_revision, to_revision, rollback_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            decision_id = int(cursor.lastrowid or 0)
            if event is not None:
                conn.execute(_INSERT_EVENT, event)
            if signal_key:
                conn.execute(
                    "UPDATE signals SET decided_at = ?, decision_id = ?"
                    " WHERE key = ? AND accepted = 1 AND decided_at IS NULL",
                    (stamp, decision_id, signal_key),
                )
            for start in range(0, len(ids), SQL_CHUNK):
                chunk = ids[start : start + SQL_CHUNK]
                conn.execute(
                    "UPDATE signals SET decided_at = ?, decision_id = ?"
                    f" WHERE decided_at IS NULL AND id IN ({','.join('?' * len(chunk))})",
                    (stamp, decision_id, *chunk),
                )
            return decision_id

        # One trip to the journal's thread: see ``_transaction_in_thread``.
        return await self._transaction_in_thread(body)

    async def link_decision(self, decision_id: int, record_id: str) -> None:
        """Attach a decision to the record its action produced (an escalation's page)."""
        await self._write(
            "UPDATE decisions SET rollback_id = ? WHERE id = ?", (record_id, decision_id)
        )

    async def save_rollback(
        self, rollback: Rollback, *, details: Mapping[str, Any] | None = None
    ) -> None:
        """Insert or update the rollback's current state; ``details`` merge into what is stored."""
        # One trip to the journal's thread: see ``_transaction_in_thread``.
        await self._transaction_in_thread(self._upsert(rollback, details))

    async def save_phase(
        self,
        rollback: Rollback,
        message: str,
        *,
        at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """The rollback's new phase and its ``phase:X`` timeline entry, in one transaction.

        Written apart, a reader (the API, ``rollbackd show``, a test) could see
        the phase with no entry for it, and a kill in between would leave the
        timeline without the step for good.
        """
        upsert = self._upsert(rollback, data)
        event = _event_row(
            rollback.id, rollback.target, f"phase:{rollback.phase}", message, at, data
        )

        def both(conn: sqlite3.Connection) -> None:
            upsert(conn)
            conn.execute(_INSERT_EVENT, event)

        await self._transaction_in_thread(both)

    def _upsert(
        self, rollback: Rollback, details: Mapping[str, Any] | None
    ) -> Callable[[sqlite3.Connection], None]:
        """The statements that insert or update ``rollback``'s row, to run in a transaction."""
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

        def upsert(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT namespace, name, details FROM rollbacks WHERE id = ?", (rollback.id,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO rollbacks (id, namespace, name, phase, started_at, updated_at,"
                    " finished_at, from_revision, to_revision, reason_code, reason, kind, details)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rollback.id, *values, dumps_json(new_details)),
                )
                return
            if (row[0], row[1]) != (rollback.target.namespace, rollback.target.name):
                raise ValueError(
                    f"rollback {rollback.id} belongs to {row[0]}/{row[1]}, not {rollback.target}"
                )
            merged = {**loads_json(row[2]), **new_details}
            conn.execute(
                "UPDATE rollbacks SET namespace = ?, name = ?, phase = ?, started_at = ?,"
                " updated_at = ?, finished_at = ?, from_revision = ?, to_revision = ?,"
                " reason_code = ?, reason = ?, kind = ?, details = ? WHERE id = ?",
                (*values, dumps_json(merged), rollback.id),
            )

        return upsert

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
        await self._write(_INSERT_EVENT, _event_row(rollback_id, target, kind, message, at, data))

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
        return rollback_from_row(rows[0]) if rows else None

    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT details FROM rollbacks WHERE id = ?", (rollback_id,))
        return dict(loads_json(rows[0]["details"])) if rows else None

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
        return [rollback_from_row(r) for r in rows]

    async def history(self, target: Target) -> History:
        """What rollbackd remembers about ``target`` for the next decision.

        in_flight: the newest rollback not in a terminal phase.
        last_finished: the newest ROLLBACK_COMPLETED, ESCALATED or REJECTED one, by
        finish time (dry runs and skips changed nothing).
        restored_revisions: revisions recorded under ``restored_revision``
        in rollback details, newest first.
        """
        key = (target.namespace, target.name, str(RecordKind.ROLLBACK))

        def read(conn: sqlite3.Connection) -> list[list[sqlite3.Row]]:
            return [
                conn.execute(
                    "SELECT * FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
                    f" AND phase IN ({','.join('?' * len(_NON_TERMINAL))})"
                    " ORDER BY started_at DESC, id DESC LIMIT 1",
                    (*key, *_NON_TERMINAL),
                ).fetchall(),
                conn.execute(
                    "SELECT * FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
                    f" AND phase IN ({','.join('?' * len(_ACTED_TERMINAL))})"
                    " ORDER BY COALESCE(finished_at, updated_at) DESC, id DESC LIMIT 1",
                    (*key, *_ACTED_TERMINAL),
                ).fetchall(),
                conn.execute(
                    "SELECT details FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
                    " ORDER BY started_at DESC, id DESC",
                    key,
                ).fetchall(),
                conn.execute(
                    "SELECT * FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
                    " ORDER BY started_at DESC, id DESC LIMIT 1",
                    (target.namespace, target.name, str(RecordKind.DRY_RUN)),
                ).fetchall(),
            ]

        # Every decision reads it: one trip to the journal's thread, not four.
        in_flight, finished, restored_rows, dry_run = await self._read_in_thread(read)
        restored: list[int] = []
        for row in restored_rows:
            value = loads_json(row["details"]).get(DETAIL_RESTORED_REVISION)
            if isinstance(value, int) and not isinstance(value, bool) and value not in restored:
                restored.append(value)
        return History(
            in_flight=rollback_from_row(in_flight[0]) if in_flight else None,
            last_finished=rollback_from_row(finished[0]) if finished else None,
            restored_revisions=tuple(restored),
            last_dry_run=rollback_from_row(dry_run[0]) if dry_run else None,
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
        return [decision_from_row(r) for r in rows]

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
        return dict(loads_json(rows[0]["data"])) if rows else None

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
                "labels": loads_json(r["labels"]),
                "reason": r["reason"],
            }
            for r in rows
        ]


_INSERT_EVENT = (
    "INSERT INTO events (rollback_id, namespace, name, at, kind, message, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _event_row(
    rollback_id: str | None,
    target: Target,
    kind: str,
    message: str,
    at: datetime,
    data: Mapping[str, Any] | None,
) -> tuple[Any, ...]:
    if not kind:
        raise ValueError("event kind must not be empty")
    return (
        rollback_id,
        target.namespace,
        target.name,
        format_time(at),
        kind,
        message,
        dumps_json(data),
    )
