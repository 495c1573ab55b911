"""Retention forgets old history by age and size, and never the live part."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollbackd.journal import Journal, UnresolvedRecord
from rollbackd.model import (
    Action,
    Decision,
    Phase,
    Rollback,
    Signal,
    Target,
)
from rollbackd.retention import Retention, prune, used_bytes
from tests.factories import firing_alert

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
APP = Target("shop", "checkout")
DAY = timedelta(days=1)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "journal.sqlite")
    yield j
    await j.close()


def signal(key: str, at: datetime, summary: str = "") -> Signal:
    return firing_alert(key, at, target=APP, summary=summary)


def rollback(rid: str, phase: Phase, at: datetime) -> Rollback:
    return Rollback(
        id=rid,
        target=APP,
        phase=phase,
        started_at=at,
        updated_at=at,
        finished_at=at if phase.terminal else None,
    )


async def decided(journal: Journal, key: str, at: datetime, rollback_id: str | None) -> None:
    [row_id] = await journal.accept([signal(key, at)])
    assert row_id is not None
    decision = Decision(Action.ROLLBACK, APP, "rollback", "why", rollback_id=rollback_id)
    await journal.record_decision(
        decision, signal_key=key, at=at, rollback_id=rollback_id, covers=[row_id]
    )


async def count(journal: Journal, table: str) -> int:
    return int((await journal.query(f"SELECT COUNT(*) FROM {table}"))[0][0])


async def test_old_finished_history_goes_and_recent_history_stays(journal: Journal) -> None:
    old, recent = NOW - 40 * DAY, NOW - 2 * DAY
    await journal.save_rollback(rollback("rb-old", Phase.ROLLBACK_COMPLETED, old))
    await journal.record_event("rb-old", APP, "phase:ROLLBACK_COMPLETED", "done", at=old)
    await decided(journal, "k-old", old, "rb-old")
    await journal.save_rollback(rollback("rb-new", Phase.ROLLBACK_COMPLETED, recent))
    await decided(journal, "k-new", recent, "rb-new")
    await journal.accept([], [UnresolvedRecord("fp", "DiskFull", {}, "no target", old)])

    result = await prune(journal, now=NOW, max_age=30 * DAY, max_bytes=1 << 30)

    assert [r.id for r in await journal.list_rollbacks()] == ["rb-new"]
    assert await journal.timeline("rb-old") == []
    assert [e.kind for e in await journal.timeline("rb-new")] == ["signal", "decision"]
    assert await journal.unresolved_alerts() == []
    assert result.deleted["rollbacks"] == 1 and result.deleted["signals"] == 1


async def test_the_live_part_is_never_pruned_however_old(journal: Journal) -> None:
    ancient = NOW - 400 * DAY
    await journal.save_rollback(rollback("rb-live", Phase.VERIFYING, ancient))
    await journal.record_event("rb-live", APP, "phase:VERIFYING", "verifying", at=ancient)
    await journal.accept([signal("k-undecided", ancient)])
    await journal.query(
        "INSERT INTO outbox (channel, dedup_key, kind, resolves, severity, body, created_at,"
        " state, next_attempt_at) VALUES ('pagerduty', 'rb-live', 'rollback_started', 0,"
        " 'info', '{}', ?, 'pending', ?)",
        (ancient.isoformat(), ancient.isoformat()),
    )

    await prune(journal, now=NOW, max_age=DAY, max_bytes=1 << 20, min_age=timedelta(0))

    assert [r.id for r in await journal.list_rollbacks()] == ["rb-live"]
    assert [e.kind for e in await journal.timeline("rb-live")] == ["phase:VERIFYING"]
    assert [s.key for _, s in await journal.undecided_signals()] == ["k-undecided"]
    assert await count(journal, "outbox") == 1


async def test_over_the_size_limit_older_history_goes_first(journal: Journal) -> None:
    padding = "x" * 4000
    for day in range(20, 0, -1):
        at = NOW - day * DAY
        for i in range(25):
            [row_id] = await journal.accept([signal(f"k{day}-{i}", at, padding)])
            await journal.record_decision(
                Decision(Action.SKIP, APP, "cooldown", "c"),
                signal_key=f"k{day}-{i}",
                at=at,
                covers=[row_id] if row_id else [],
            )
    before = await used_bytes(journal)
    limit = before // 3

    result = await prune(journal, now=NOW, max_age=30 * DAY, max_bytes=limit)

    assert result.used_bytes <= limit
    kept = [s for s in await journal.query("SELECT observed_at FROM signals")]
    assert kept, "the newest history is kept"
    oldest_kept = min(datetime.fromisoformat(r[0]) for r in kept)
    assert result.cutoff is not None and oldest_kept >= result.cutoff
    assert oldest_kept > NOW - 20 * DAY


async def test_the_size_metric_is_exported_after_each_pass(journal: Journal) -> None:
    sizes: list[int] = []
    retention = Retention(
        journal,
        max_age=DAY,
        max_bytes=1 << 30,
        interval=timedelta(hours=1),
        clock=lambda: NOW,
        on_size=sizes.append,
    )
    await retention.run_once()
    assert sizes == [await used_bytes(journal)] and sizes[0] > 0


async def test_a_new_journal_gives_freed_pages_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with await Journal.open(path) as journal:
        old = NOW - 40 * DAY
        await journal.accept([signal(f"k{i}", old, "y" * 4000) for i in range(500)])
        await journal.query("UPDATE signals SET decided_at = observed_at")
        await journal.query("PRAGMA wal_checkpoint(TRUNCATE)")
        grown = path.stat().st_size
        await prune(journal, now=NOW, max_age=30 * DAY, max_bytes=1 << 30)
        await journal.query("PRAGMA wal_checkpoint(TRUNCATE)")
        assert path.stat().st_size < grown / 2
