"""Journal writes on a busy event loop: a transaction is one trip to the journal's thread.

Each trip to aiosqlite's thread waits for a turn of the event loop. With
the write lock held across five of them (BEGIN, read, insert, last id,
COMMIT), a webhook's commit on a loop busy polling 10 000 Deployments took
five turns, and every webhook and decision queued behind the lock waited
for them. These tests count the turns a busy loop makes while a write runs,
and block the loop outright to show what no longer waits for it: a write
queued behind another, and the webhooks' next group commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbackd.journal import Journal
from rollbackd.journal import intake as journal_intake
from rollbackd.model import Action, Decision, Signal, Target
from rollbackd.reasons import ReasonCode
from tests.factories import firing_alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
APP = Target("shop", "checkout")
HOG_TURN_SECONDS = 0.003  # what a turn of a loop busy with polls and webhooks costs


def signal(key: str) -> Signal:
    return firing_alert(
        key,
        T0,
        target=APP,
        started_at=T0 - timedelta(minutes=1),
        value=0.31,
        threshold=0.05,
        labels={"severity": "page"},
        summary="error ratio 31%",
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite")
    yield opened
    await opened.close()


@pytest.fixture
def threaded(journal: Journal) -> Journal:
    """The journal with every intake commit sent to its thread, as when the lock is busy.

    A free lock lets the intake commit on the loop's thread instead
    (``test_journal_direct.py``); these specs are about the thread's path.
    """
    journal.close_direct()
    return journal


async def turns_while(write: Awaitable[Any], journal: Journal | None = None) -> int:
    """Turns a busy loop (a task holding it ``HOG_TURN_SECONDS`` per turn) makes during ``write``.

    Given ``journal``, the turns made while a job waits for or runs on the
    journal's thread are left out: how soon a loaded machine runs that thread
    is the machine's doing (a full test run made 9 of a 3-turn commit), while
    the turns the loop spends handing work over and taking answers back are
    the journal's.
    """
    turns = 0
    on_thread: list[int] = []
    running = True

    async def hog() -> None:
        nonlocal turns
        while running:
            # Holding the loop, not the GIL: a spinning hog made the thread wait
            # for the GIL at each of its steps (seconds for one history read).
            time.sleep(HOG_TURN_SECONDS)  # noqa: ASYNC251 (blocking the loop is the point)
            turns += 1
            await asyncio.sleep(0)

    conn = journal._conn if journal is not None else None
    queue = conn._tx if conn is not None else None

    class TimedQueue:
        """aiosqlite's queue to its thread, each job timed in loop turns."""

        def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
            future, job = item
            posted = turns

            def timed() -> Any:
                try:
                    return job()
                finally:
                    on_thread.append(turns - posted)

            assert queue is not None
            queue.put_nowait((future, timed))

    task = asyncio.create_task(hog())
    await asyncio.sleep(0)
    before = turns
    if conn is not None:
        conn._tx = TimedQueue()  # type: ignore[assignment]
    try:
        await write
    finally:
        if conn is not None and queue is not None:
            conn._tx = queue
        running = False
        await task
    return turns - before - sum(on_thread)


async def undecided(journal: Journal) -> list[str]:
    return [s.key for _, s in await journal.undecided_signals()]


async def test_a_webhooks_commit_takes_one_trip_not_one_per_statement(threaded: Journal) -> None:
    journal = threaded
    await journal.accept([signal("warm")])  # the connection's first statements are behind us
    # The fewest of a few commits: a disk that stalls once (a WAL checkpoint) says nothing
    # about the trips, and a trip per statement can never take fewer turns than statements.
    turns = min(
        [
            await turns_while(journal.accept([signal(f"am:{n}:1"), signal(f"am:{n}:2")]), journal)
            for n in range(3)
        ]
    )
    # Batched on the journal's thread and answered by one callback: the results
    # handed over, the caller woken. A trip per statement was 13 turns here, a
    # flushing task on the loop 5.
    assert turns <= 3, f"{turns} turns of the busy loop for one commit"
    assert len(await undecided(journal)) == 7


async def test_a_decision_is_recorded_in_one_trip(journal: Journal) -> None:
    decision = Decision(Action.SKIP, APP, ReasonCode.SIGNAL_RESOLVED, "the alert resolved")
    fewest = None
    for n in range(3):
        ids = await journal.accept([signal(f"am:{n}:1"), signal(f"am:{n}:2")])
        turns = await turns_while(
            journal.record_decision(
                decision, signal_key=f"am:{n}:1", at=T0, covers=[i for i in ids if i]
            ),
            journal,
        )
        fewest = turns if fewest is None else min(fewest, turns)
    assert fewest is not None and fewest <= 3, (
        f"{fewest} turns for one decision"
    )  # a trip each: 10-12
    assert await undecided(journal) == [], "every signal is settled by its decision"


async def test_a_decisions_history_is_read_in_one_trip(journal: Journal) -> None:
    await journal.history(APP)
    turns = min([await turns_while(journal.history(APP), journal) for _ in range(3)])
    assert turns <= 3, f"{turns} turns of the busy loop for one history"  # a read each: 4+


async def test_a_transaction_failing_midway_commits_nothing_and_every_caller_hears_it(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent webhooks share one transaction: a failure after their rows were written
    rolls all of them back and every one of them is refused (503), none acknowledged."""
    real = journal_intake._insert_intake

    def insert_then_fail(conn: sqlite3.Connection, *args: Any) -> list[int | None]:
        real(conn, *args)  # the rows are in the transaction...
        raise sqlite3.OperationalError("disk I/O error")  # ...and the commit never happens

    monkeypatch.setattr(journal_intake, "_insert_intake", insert_then_fail)
    outcomes = await asyncio.gather(
        *(journal.accept([signal(f"am:fp{i}")]) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes), outcomes
    assert await undecided(journal) == []
    assert not await journal.signal_seen("am:fp0"), "a refused signal is not remembered"

    monkeypatch.setattr(journal_intake, "_insert_intake", real)
    retried = await asyncio.gather(*(journal.accept([signal(f"am:fp{i}")]) for i in range(5)))
    assert all(ids[0] is not None for ids in retried), "the retries are accepted"
    assert sorted(await undecided(journal)) == [f"am:fp{i}" for i in range(5)]


async def test_a_cancelled_writer_leaves_no_transaction_open(journal: Journal) -> None:
    """The caller gave up (a client hung up): its transaction ends whole, the next one commits."""
    write = asyncio.create_task(
        journal.record_event(None, APP, "note", "first", at=T0, data={"n": 1})
    )
    await asyncio.sleep(0)
    write.cancel()
    await asyncio.gather(write, return_exceptions=True)
    await journal.record_event(None, APP, "note", "second", at=T0, data={"n": 2})
    assert (await journal.accept([signal("am:after")]))[0] is not None
    rows = await journal.query("SELECT message FROM events ORDER BY id")
    assert [r[0] for r in rows][-1] == "second"


def wait_blocking(event: threading.Event, what: str) -> None:
    """Wait on the loop's own thread, so the loop can make no turn meanwhile."""
    assert event.wait(5), f"{what} while the event loop could not run"


async def test_a_write_queued_behind_another_reaches_the_thread_without_the_loop(
    journal: Journal,
) -> None:
    """A decision's write behind another one, or behind a webhook's commit, never waits
    for a busy loop to see the first one finish: it is on the journal's thread already."""
    inside, release, second_ran = threading.Event(), threading.Event(), threading.Event()

    def first(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE marks (id TEXT)")
        conn.execute("INSERT INTO marks VALUES ('first')")
        inside.set()
        release.wait(5)

    def second(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO marks VALUES ('second')")
        second_ran.set()

    writes = [
        asyncio.create_task(journal.transaction(first)),
        asyncio.create_task(journal.transaction(second)),
    ]
    for _ in range(3):
        await asyncio.sleep(0)  # both tasks send their writes
    wait_blocking(inside, "the first write did not start")
    release.set()
    # With a lock on the loop, the second write waited for a turn that cannot come.
    wait_blocking(second_ran, "the second write did not run")
    await asyncio.gather(*writes)
    rows = await journal.query("SELECT id FROM marks")
    assert [r[0] for r in rows] == ["first", "second"]


async def test_webhooks_waiting_behind_a_commit_are_committed_next_without_the_loop(
    threaded: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next group commit starts on the journal's thread as the previous one ends."""
    journal = threaded
    real = journal_intake._insert_intake
    batches: list[int] = []
    inside, release, second_done = threading.Event(), threading.Event(), threading.Event()

    def insert(conn: sqlite3.Connection, count: int, *rest: Any) -> list[int | None]:
        batches.append(count)
        if len(batches) == 1:
            inside.set()
            release.wait(5)
        found = real(conn, count, *rest)
        if len(batches) == 2:
            second_done.set()
        return found

    monkeypatch.setattr(journal_intake, "_insert_intake", insert)
    first = asyncio.create_task(journal.accept([signal("am:first")]))
    assert await asyncio.to_thread(inside.wait, 5)
    later = [asyncio.create_task(journal.accept([signal(f"am:later{i}")])) for i in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)  # the three join the batch waiting behind the first
    release.set()
    wait_blocking(second_done, "the next batch was not committed")
    assert batches == [1, 3], "the three waiting webhooks share the next commit"
    results = await asyncio.gather(first, *later)
    assert all(ids[0] is not None for ids in results)
    assert len(await undecided(journal)) == 4


async def test_a_webhook_that_hangs_up_does_not_cost_its_neighbours_their_commit(
    threaded: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled caller stops waiting; the commit it shares goes on, and it is durable."""
    journal = threaded
    real = journal_intake._insert_intake
    inside, release = threading.Event(), threading.Event()

    def insert(conn: sqlite3.Connection, *args: Any) -> list[int | None]:
        inside.set()
        release.wait(5)
        return real(conn, *args)

    monkeypatch.setattr(journal_intake, "_insert_intake", insert)
    gone = asyncio.create_task(journal.accept([signal("am:gone")]))
    stays = asyncio.create_task(journal.accept([signal("am:stays")]))
    assert await asyncio.to_thread(inside.wait, 5)
    gone.cancel()
    release.set()
    assert (await stays)[0] is not None
    with pytest.raises(asyncio.CancelledError):
        await gone
    # Committed with its neighbour: a retry of it is a repeat, not a loss.
    assert sorted(await undecided(journal)) == ["am:gone", "am:stays"]


async def test_a_commit_that_meets_another_writer_waits_for_it_on_the_thread(
    journal: Journal,
) -> None:
    """Another process writing the file (a CLI prune, a second replica by mistake) holds the
    write lock: the webhooks' commit waits for it there, within the busy timeout, and lands."""
    other = sqlite3.connect(journal.path, check_same_thread=False, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    released.start()
    try:
        ids = await asyncio.wait_for(journal.accept([signal("am:behind-other")]), timeout=10)
    finally:
        released.join()
        other.close()
    assert ids[0] is not None
    assert await undecided(journal) == ["am:behind-other"]


@pytest.mark.parametrize("path", ["journal's thread", "direct"])
async def test_a_webhooks_commit_is_a_few_statements_whatever_its_alerts(
    journal: Journal, path: str
) -> None:
    """Each SQLite call hands the GIL over and takes it back, and a busy loop can keep the
    journal's thread waiting each time: a body of 50 alerts is not 50 inserts."""
    statements: list[str] = []
    if path == "direct":
        assert journal._direct is not None
        traced = journal._direct._conn
        assert traced is not None
        traced.set_trace_callback(statements.append)
    else:
        journal.close_direct()
        await journal._read_in_thread(lambda conn: conn.set_trace_callback(statements.append))
    try:
        ids = await journal.accept([signal(f"am:many:{i}") for i in range(50)])
    finally:
        if path == "direct":
            traced.set_trace_callback(None)
        else:
            await journal._read_in_thread(lambda conn: conn.set_trace_callback(None))
    assert statements, "the commit ran on the connection traced"
    assert all(row_id is not None for row_id in ids)
    assert ids == list(range(ids[0], ids[0] + 50)), "each signal gets its own row's id"
    assert len(statements) <= 5, statements  # BEGIN, the keys seen, one INSERT, COMMIT
    assert len(await undecided(journal)) == 50
