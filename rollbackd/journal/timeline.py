"""A rollback's timeline: signals, decisions, events and notifications in time order."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollbackd.journal.connection import Connection
from rollbackd.journal.rows import decision_from_row, loads_json, parse_time

# Timeline order for entries with the same timestamp: cause before effect.
_ORDER = {"signal": 0, "decision": 1, "event": 2, "notification": 3}


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a rollback's timeline."""

    at: datetime
    kind: str  # "signal", "decision", "notification", or the recorded event kind
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


class TimelineStore(Connection):
    """Reads one rollback's story back."""

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
            entry = TimelineEntry(
                parse_time(r["at"]), r["kind"], r["message"], loads_json(r["data"])
            )
            keyed.append((r["at"], _ORDER["event"], r["id"], entry))
        for r in await self._rows(
            "SELECT * FROM notifications WHERE rollback_id = ? OR dedup_key = ? ORDER BY at, id",
            (rollback_id, rollback_id),
        ):
            keyed.append((r["at"], _ORDER["notification"], r["id"], _notification_entry(r)))
        keyed.sort(key=lambda item: item[:3])
        return [item[3] for item in keyed]


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
        "labels": loads_json(row["labels"]),
        "summary": row["summary"],
    }
    message = f"{row['source']} signal {row['signal']} {row['status']}"
    if row["value"] is not None or row["threshold"] is not None:
        message += f": {_fmt_number(row['value'])} (threshold {_fmt_number(row['threshold'])})"
    message += f"; anomaly began {row['started_at']}"
    return TimelineEntry(parse_time(row["observed_at"]), "signal", message, data)


def _decision_entry(row: sqlite3.Row) -> TimelineEntry:
    data = {k: v for k, v in decision_from_row(row).items() if k not in ("at", "target")}
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
