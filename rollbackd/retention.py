"""Journal retention: forget old history by age and by size, never the live part.

The chart gives the journal a 1 GiB volume; an alert storm writes fast. What
may go, oldest first: finished rollbacks and everything recorded about them,
decided signals, decisions, events, notification outcomes, delivered or
abandoned outbox rows, unresolved-alert rows. What never goes: a rollback
not in a terminal phase, an accepted signal without a decision, an outbox
row still pending (a page that was meant and not yet delivered), and the
newest record of each kind per Deployment with what it recorded (the next
decision reads its cooldown, restored revision and open incident there).

By age first (``max_age``); then, while the journal still uses more than
``max_bytes``, the age is halved, down to ``min_age``, so the newest history
is the last to go. Freed pages are returned to the file system where the
journal allows it (``auto_vacuum=INCREMENTAL``, set on journals created by
this version) and reused otherwise.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from rollbackd.journal import Journal, format_time
from rollbackd.model import TERMINAL_PHASES

__all__ = ["PruneResult", "Retention", "prune"]

log = structlog.get_logger("rollbackd.retention")

_TERMINAL = tuple(str(p) for p in TERMINAL_PHASES)
_IN = ",".join("?" * len(_TERMINAL))

# Each statement deletes rows older than the cutoff that nothing live needs.
# Rows of a finished rollback go with the rollback, whatever their own age.
_STATEMENTS: tuple[tuple[str, str], ...] = (
    (
        "rollbacks",
        f"DELETE FROM rollbacks WHERE phase IN ({_IN}) AND COALESCE(finished_at, updated_at) < ?"
        # The newest record of each kind per target is the next decision's
        # memory (cooldown, restored revision, open incident): it stays.
        " AND id NOT IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY"
        " namespace, name, kind ORDER BY started_at DESC, id DESC) AS newest"
        " FROM rollbacks) WHERE newest = 1)",
    ),
    (
        "events",
        "DELETE FROM events WHERE at < ? AND (rollback_id IS NULL OR rollback_id NOT IN"
        " (SELECT id FROM rollbacks))",
    ),
    (
        "decisions",
        "DELETE FROM decisions WHERE at < ? AND (rollback_id IS NULL OR rollback_id NOT IN"
        " (SELECT id FROM rollbacks))",
    ),
    (
        "notifications",
        "DELETE FROM notifications WHERE at < ? AND (rollback_id IS NULL OR rollback_id NOT IN"
        " (SELECT id FROM rollbacks))",
    ),
    ("signals", "DELETE FROM signals WHERE observed_at < ? AND decided_at IS NOT NULL"),
    (
        "outbox",
        "DELETE FROM outbox WHERE state != 'pending' AND COALESCE(finished_at, created_at) < ?",
    ),
    ("unresolved_alerts", "DELETE FROM unresolved_alerts WHERE at < ?"),
)


@dataclass(frozen=True)
class PruneResult:
    deleted: dict[str, int]
    used_bytes: int
    cutoff: datetime | None  # the oldest history kept; None when nothing was pruned


async def used_bytes(journal: Journal) -> int:
    """Bytes the journal's pages hold (free pages excluded), the figure the limit is about."""
    rows = await journal.query(
        "SELECT (SELECT page_count FROM pragma_page_count())"
        " - (SELECT freelist_count FROM pragma_freelist_count()),"
        " (SELECT page_size FROM pragma_page_size())"
    )
    pages, page_size = rows[0]
    return int(pages) * int(page_size)


async def _prune_older_than(journal: Journal, cutoff: datetime) -> dict[str, int]:
    stamp = format_time(cutoff)
    deleted: dict[str, int] = {}

    def body(conn: sqlite3.Connection) -> None:
        for table, sql in _STATEMENTS:
            params: tuple[Any, ...] = (*_TERMINAL, stamp) if table == "rollbacks" else (stamp,)
            deleted[table] = conn.execute(sql, params).rowcount

    await journal.transaction(body)
    return deleted


async def prune(
    journal: Journal,
    *,
    now: datetime,
    max_age: timedelta,
    max_bytes: int,
    min_age: timedelta = timedelta(hours=1),
) -> PruneResult:
    """Delete history older than ``max_age``, then younger until under ``max_bytes``."""
    age = max_age
    total: dict[str, int] = {}
    cutoff: datetime | None = None
    while True:
        cutoff = now - age
        for table, count in (await _prune_older_than(journal, cutoff)).items():
            total[table] = total.get(table, 0) + count
        used = await used_bytes(journal)
        if used <= max_bytes or age <= min_age:
            break
        age = max(min_age, age / 2)
    if sum(total.values()):
        # Give freed pages back to the file system (a no-op without incremental auto-vacuum).
        await journal.release_free_pages()
        used = await used_bytes(journal)
    if used > max_bytes:
        log.error(
            "journal_over_size_limit",
            used_bytes=used,
            max_bytes=max_bytes,
            kept_since=cutoff.isoformat(),
            hint="the live part (rollbacks in flight, undecided signals, pending pages) "
            "or the last min_age of history exceeds journal.retention.max_bytes",
        )
    return PruneResult(total, used, cutoff if sum(total.values()) else None)


class Retention:
    """Prune on a period and export the journal's size."""

    def __init__(
        self,
        journal: Journal,
        *,
        max_age: timedelta,
        max_bytes: int,
        interval: timedelta,
        clock: Callable[[], datetime],
        on_size: Callable[[int], None] = lambda used: None,
    ) -> None:
        self._journal = journal
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._interval = interval.total_seconds()
        self._clock = clock
        self._on_size = on_size

    async def run_once(self) -> PruneResult:
        result = await prune(
            self._journal, now=self._clock(), max_age=self._max_age, max_bytes=self._max_bytes
        )
        self._on_size(result.used_bytes)
        if sum(result.deleted.values()):
            log.info("journal_pruned", used_bytes=result.used_bytes, **result.deleted)
        return result

    async def run(self) -> None:
        """Until cancelled; a failed pass is logged and the next one tries again."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("journal_prune_failed")
            await asyncio.sleep(self._interval)
