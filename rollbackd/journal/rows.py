"""Values to rows and back: times, JSON text, signals, rollbacks, decisions."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollbackd.jsonable import to_jsonable
from rollbackd.model import (
    Action,
    Phase,
    RecordKind,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
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


def opt_time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def dumps_json(value: Any) -> str:
    return json.dumps(to_jsonable(value or {}), sort_keys=True, allow_nan=False)


def loads_json(text: str | None) -> Any:
    return json.loads(text) if text else {}


def rollback_from_row(row: sqlite3.Row) -> Rollback:
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
        finished_at=opt_time(row["finished_at"]),
        kind=RecordKind(row["kind"]),
    )


def signal_to_row(signal: Signal, *, accepted: bool, note: str = "") -> tuple[Any, ...]:
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
        format_time(signal.evidence_since) if signal.evidence_since else None,
    )


# ``json.dumps(..., sort_keys=True)`` builds an encoder at every call; every
# accepted signal's labels are encoded, so one encoder is kept (it holds no state).
_LABELS_ENCODER = json.JSONEncoder(sort_keys=True)
_TEXT_ONLY = frozenset({str})


def _dumps_labels(labels: Mapping[str, str]) -> str:
    # Labels are text to text (validated at intake): skip the general converter.
    if _TEXT_ONLY.issuperset(map(type, labels.values())):
        return _LABELS_ENCODER.encode(labels)
    return dumps_json(labels)


def signal_from_row(row: sqlite3.Row) -> Signal:
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
        labels=loads_json(row["labels"]),
        summary=row["summary"],
        evidence_since=opt_time(row["evidence_since"]),
    )


def unresolved_to_row(u: UnresolvedRecord) -> tuple[Any, ...]:
    stamp = format_time(u.at)
    return (u.fingerprint, stamp, stamp, u.alertname, dumps_json(u.labels), u.reason)


def decision_from_row(row: sqlite3.Row) -> dict[str, Any]:
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
