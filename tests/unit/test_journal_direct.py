"""The intake's commit on the loop's own thread, when the write lock is free this instant.

Sending a webhook's commit to the journal's thread costs three waits that a
busy machine stretches (that thread woken, the GIL handed over, the loop
woken with the result). With the lock free, the intake commits on its own
connection in one step; with the lock held, nothing runs there and the
journal's thread takes the commit as before. Either way the caller returns
only once its rows are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbackd.journal import Journal, direct
from rollbackd.journal import intake as journal_intake
from rollbackd.metrics import Metrics
from rollbackd.model import Signal, Target
from tests.factories import firing_alert
from tests.unit.test_journal_one_trip import turns_while

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
APP = Target("shop", "checkout")


def signal(key: str) -> Signal:
    return firing_alert(key, T0, target=APP, started_at=T0 - timedelta(minutes=1))


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite")
    yield opened
    await opened.close()


def keys_seen_by_another_connection(path: str) -> list[str]:
    """What any other reader of the file sees: only committed rows."""
    other = sqlite3.connect(path)
    try:
        return [r[0] for r in other.execute("SELECT key FROM signals ORDER BY id")]
    finally:
        other.close()


@contextlib.asynccontextmanager
async def lock_held_on_the_thread(journal: Journal) -> AsyncIterator[None]:
    """A write transaction on the journal's thread holds the lock until the block ends."""
    inside, release = threading.Event(), threading.Event()

    def long_write(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE marks (id TEXT)")
        inside.set()
        release.wait(5)

    writing = asyncio.create_task(journal.transaction(long_write))
    assert await asyncio.to_thread(inside.wait, 5)
    try:
        yield
    finally:
        release.set()
        await writing


async def test_with_the_lock_free_a_commit_takes_no_turn_of_the_loop_and_is_committed(
    journal: Journal,
) -> None:
    await journal.accept([signal("warm")])
    before = journal.direct_commits
    turns = await turns_while(journal.accept([signal("am:1"), signal("am:2")]))
    assert turns == 0, f"{turns} turns of a busy loop for a commit made in place"
    assert journal.direct_commits == before + 1
    assert keys_seen_by_another_connection(journal.path) == ["warm", "am:1", "am:2"]


async def test_a_large_batch_is_committed_on_the_thread_not_on_the_loop(
    journal: Journal,
) -> None:
    """A body of a thousand alerts would hold the loop for tens of milliseconds here."""
    await journal.accept([signal(f"am:small{i}") for i in range(direct.MAX_ITEMS)])
    assert journal.direct_commits == 1
    flushes = journal._intake_commit.flushes
    ids = await journal.accept([signal(f"am:large{i}") for i in range(direct.MAX_ITEMS + 1)])
    assert None not in ids
    assert journal.direct_commits == 1
    assert journal._intake_commit.flushes == flushes + 1


async def test_with_the_lock_held_by_a_write_on_the_thread_the_commit_waits_there_and_lands(
    journal: Journal,
) -> None:
    """A decision's write holds the lock: the webhook is neither refused nor run on a
    loop that would have to wait for the lock; the journal's thread commits it next."""
    assert journal._direct is not None
    async with lock_held_on_the_thread(journal):
        webhook = asyncio.create_task(journal.accept([signal("am:behind")]))
        await asyncio.sleep(0.05)  # the loop keeps turning while the webhook waits
        assert not webhook.done()
        assert journal._direct.fallbacks == 1
    ids = await asyncio.wait_for(webhook, 10)
    assert ids[0] is not None
    assert keys_seen_by_another_connection(journal.path) == ["am:behind"]


async def test_while_the_thread_has_intake_commits_queued_a_new_one_joins_them(
    journal: Journal,
) -> None:
    """No commit made in place overtakes signals accepted before it, and a storm meeting
    a held lock shares the thread's next transaction instead of trying the lock each time."""
    assert journal._direct is not None
    async with lock_held_on_the_thread(journal):
        first = asyncio.create_task(journal.accept([signal("am:first")]))
        await asyncio.sleep(0)
        later = [asyncio.create_task(journal.accept([signal(f"am:later{i}")])) for i in range(3)]
        await asyncio.sleep(0)
        flushes = journal._intake_commit.flushes
    await asyncio.gather(first, *later)
    assert journal._direct.fallbacks == 1, "only the first tried the lock"
    assert journal._intake_commit.flushes - flushes == 1, "the four shared one transaction"
    assert keys_seen_by_another_connection(journal.path) == [
        "am:first",
        "am:later0",
        "am:later1",
        "am:later2",
    ]


async def test_a_commit_failing_in_place_commits_nothing_and_the_next_one_lands(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = journal_intake._insert_intake

    def insert_then_fail(conn: sqlite3.Connection, *args: Any) -> list[int | None]:
        real(conn, *args)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(journal_intake, "_insert_intake", insert_then_fail)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        await journal.accept([signal("am:lost")])
    monkeypatch.setattr(journal_intake, "_insert_intake", real)
    assert keys_seen_by_another_connection(journal.path) == []
    ids = await journal.accept([signal("am:lost")])  # the sender's retry
    assert ids[0] is not None, "no transaction was left open, the key was never taken"
    assert keys_seen_by_another_connection(journal.path) == ["am:lost"]


async def test_a_repeat_is_recognised_whichever_connection_committed_the_first(
    journal: Journal,
) -> None:
    first = await journal.accept([signal("am:once")])
    journal.close_direct()
    again = await journal.accept([signal("am:once")])
    assert first[0] is not None
    assert again == [None]


def wal_bytes(journal: Journal) -> int:
    return os.path.getsize(journal.path + "-wal")


async def test_the_wal_stays_bounded_while_only_the_intake_writes(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct connection never checkpoints; it asks the journal's thread to, so a
    storm of webhooks with nothing else writing does not grow the WAL without end."""
    monkeypatch.setattr(direct, "CHECKPOINT_EVERY", 8)
    for n in range(400):
        await journal.accept([signal(f"am:{n}:{i}") for i in range(5)])
        if n % 8 == 7:
            await journal.query("SELECT 1")  # the checkpoint asked for has run
    assert journal.direct_commits == 400
    # 400 commits of at least two 4 KiB pages each: over 3 MB without checkpoints.
    assert wal_bytes(journal) < 512 * 1024, wal_bytes(journal)


async def test_the_journals_thread_commits_its_next_write_after_a_checkpoint(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint answers a row; left unread, its statement stays in progress and the
    thread's next COMMIT (a decision's) fails with "SQL statements in progress"."""
    monkeypatch.setattr(direct, "CHECKPOINT_EVERY", 2)
    for n in range(2):
        await journal.accept([signal(f"am:{n}")])  # the second asks for a checkpoint
    await journal.transaction(lambda conn: conn.execute("CREATE TABLE marks (id TEXT)"))
    assert journal.direct_commits == 2


async def test_a_journal_that_must_fsync_each_commit_never_commits_on_the_loop(
    tmp_path: Path,
) -> None:
    journal = await Journal.open(tmp_path / "full.sqlite", synchronous="full")
    try:
        assert journal._direct is None
        assert (await journal.accept([signal("am:synced")]))[0] is not None
        assert journal.direct_commits == 0
    finally:
        await journal.close()


async def test_a_second_connection_that_cannot_open_leaves_every_commit_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> direct.DirectCommit:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(direct.DirectCommit, "open", refuse)
    journal = await Journal.open(tmp_path / "j.sqlite")
    try:
        assert journal._direct is None
        assert (await journal.accept([signal("am:still")]))[0] is not None
    finally:
        await journal.close()


async def test_a_call_from_another_thread_uses_the_journals_thread(journal: Journal) -> None:
    """The connection belongs to the loop that opened it; SQLite objects are not shared."""

    def elsewhere() -> list[int | None]:
        return asyncio.run(journal.accept([signal("am:elsewhere")]))

    ids = await asyncio.to_thread(elsewhere)
    assert ids[0] is not None
    assert journal.direct_commits == 0
    assert keys_seen_by_another_connection(journal.path) == ["am:elsewhere"]


async def test_after_close_a_commit_is_refused_not_made_in_place(journal: Journal) -> None:
    await journal.close()
    with pytest.raises(ValueError, match="closed"):
        await journal.accept([signal("am:late")])


async def test_metrics_count_the_commits_made_in_place_and_on_the_thread(
    journal: Journal,
) -> None:
    metrics = Metrics()
    metrics.count_intake_commits(journal.intake_commit_counts)
    await journal.accept([signal("am:here1")])
    await journal.accept([signal("am:here2")])
    journal.close_direct()
    await journal.accept([signal("am:there")])

    def commits(path: str) -> float | None:
        return metrics.registry.get_sample_value(
            "rollbackd_journal_intake_commits_total", {"path": path}
        )

    assert commits("in_place") == 2
    assert commits("journal_thread") == 1


# A process that commits a batch in place, then starts a second one and stops
# inside it (its rows inserted, no COMMIT), saying on which thread it stopped.
_KILLED_INSIDE = """
import asyncio, sys, threading, time
from rollbackd.journal import Journal
from rollbackd.journal import intake as journal_intake
from tests.unit.test_journal_direct import signal

def inserted_then_stalled(*args, **kwargs):
    result = original(*args, **kwargs)
    where = "loop" if threading.current_thread() is threading.main_thread() else "thread"
    print(f"inside {where}", flush=True)
    time.sleep(60)
    return result

original = journal_intake._insert_intake

async def main():
    journal = await Journal.open(sys.argv[1])
    await journal.accept([signal("before:1"), signal("before:2")])
    print(f"committed in place: {journal.direct_commits}", flush=True)
    journal_intake._insert_intake = inserted_then_stalled
    await journal.accept([signal("torn:1"), signal("torn:2"), signal("torn:3")])

asyncio.run(main())
"""


async def test_a_process_killed_inside_a_commit_in_place_keeps_what_it_committed_before_and_none_of_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_INSIDE,
        str(path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        async with asyncio.timeout(30):
            lines = [(await child.stdout.readline()).decode().strip() for _ in range(2)]
    finally:
        child.kill()
        await child.wait()
    # Both batches were committed on the loop's thread: the kill tore the second in place.
    assert lines == ["committed in place: 1", "inside loop"]

    assert keys_seen_by_another_connection(str(path)) == ["before:1", "before:2"]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # The sender never had its 2xx, so it sends again: the retry lands, once.
    reopened = await Journal.open(path)
    try:
        torn = [signal("torn:1"), signal("torn:2"), signal("torn:3")]
        assert None not in await reopened.accept(torn)
        assert await reopened.accept([signal("before:1")]) == [None]
    finally:
        await reopened.close()
    assert keys_seen_by_another_connection(str(path)) == [
        "before:1",
        "before:2",
        "torn:1",
        "torn:2",
        "torn:3",
    ]
