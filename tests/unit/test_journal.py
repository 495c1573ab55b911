"""The journal remembers everything across restarts and answers history questions correctly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rollbackd.journal import SCHEMA_VERSION, Journal, JournalError
from rollbackd.journal.records import DecisionNote
from rollbackd.journal.rows import signal_to_row
from rollbackd.metrics import Metrics
from rollbackd.model import (
    Action,
    Decision,
    Phase,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.notify.base import Notification, NotificationKind
from rollbackd.stages import JournalRecorder

T0 = datetime(2026, 3, 1, 12, 0, 0, 250001, tzinfo=UTC)
APP = Target("shop", "checkout")
OTHER = Target("shop", "cart")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signal(key: str = "am:fp1:firing:t0", target: Target = APP) -> Signal:
    return Signal(
        target=target,
        source=SignalSource.ALERTMANAGER,
        name="HighErrorRatio",
        status=SignalStatus.FIRING,
        started_at=at(-60),
        observed_at=at(0),
        value=0.31,
        threshold=0.05,
        key=key,
        labels={"severity": "page"},
        summary="error ratio 31%",
    )


def rollback(
    rid: str = "rb-1",
    phase: Phase = Phase.PENDING,
    *,
    target: Target = APP,
    started: float = 1,
    finished: float | None = None,
) -> Rollback:
    return Rollback(
        id=rid,
        target=target,
        phase=phase,
        started_at=at(started),
        updated_at=at(finished if finished is not None else started),
        from_revision=7,
        to_revision=6,
        reason_code="rollback",
        reason="error ratio began 2 min after revision 7",
        finished_at=at(finished) if finished is not None else None,
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "state" / "journal.sqlite")
    yield j
    await j.close()


async def test_open_creates_parent_directory_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "journal.sqlite"
    async with await Journal.open(path) as j:
        assert await j.schema_version() == SCHEMA_VERSION
    assert path.exists()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = await Journal.open(path)
    await j.record_signal(signal(), accepted=True)
    await j.save_rollback(rollback(phase=Phase.VERIFYING), details={"ready_at": at(30)})
    await j.record_event("rb-1", APP, "phase:VERIFYING", "verifying", at=at(30))
    await j.close()

    async with await Journal.open(path) as reopened:
        assert await reopened.signal_seen("am:fp1:firing:t0")
        assert await reopened.get_rollback("rb-1") == rollback(phase=Phase.VERIFYING)
        assert await reopened.rollback_details("rb-1") == {
            "ready_at": "2026-03-01T12:00:30.250001+00:00"
        }
        [entry] = await reopened.timeline("rb-1")
        assert (entry.kind, entry.message, entry.at) == ("phase:VERIFYING", "verifying", at(30))


async def test_times_are_stored_as_utc_iso_with_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    plus_two = datetime(2026, 3, 1, 16, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    async with await Journal.open(path) as j:
        await j.record_event(None, APP, "note", "local time given", at=plus_two)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT at FROM events").fetchone()[0] == (
            "2026-03-01T14:00:00.000005+00:00"
        )


async def test_naive_datetimes_are_refused_and_nothing_is_written(journal: Journal) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await journal.record_event("rb-1", APP, "x", "y", at=datetime(2026, 1, 1))
    assert await journal.timeline("rb-1") == []


async def test_signal_seen_only_for_accepted_signals(journal: Journal) -> None:
    await journal.record_signal(signal("k-rejected"), accepted=False, note="not leader")
    await journal.record_signal(signal("k-accepted"), accepted=True)
    assert not await journal.signal_seen("k-rejected")
    assert await journal.signal_seen("k-accepted")
    assert not await journal.signal_seen("never")
    assert not await journal.signal_seen("")


async def test_save_rollback_upserts_and_merges_details(journal: Journal) -> None:
    await journal.save_rollback(rollback(), details={"from_images": ["app:1.4"]})
    await journal.save_rollback(
        rollback(phase=Phase.ROLLBACK_COMPLETED, finished=90), details={"ready_at": "x"}
    )
    await journal.save_rollback(rollback(phase=Phase.ROLLBACK_COMPLETED, finished=90))
    stored = await journal.get_rollback("rb-1")
    assert stored is not None
    assert stored.phase is Phase.ROLLBACK_COMPLETED
    assert stored.finished_at == at(90)
    assert await journal.rollback_details("rb-1") == {"from_images": ["app:1.4"], "ready_at": "x"}
    assert await journal.get_rollback("nope") is None
    assert await journal.rollback_details("nope") is None


async def test_save_rollback_refuses_to_move_a_rollback_to_another_target(
    journal: Journal,
) -> None:
    await journal.save_rollback(rollback())
    with pytest.raises(ValueError, match="belongs to shop/checkout"):
        await journal.save_rollback(rollback(target=OTHER))
    stored = await journal.get_rollback("rb-1")
    assert stored is not None and stored.target == APP


async def test_history_in_flight_is_the_newest_non_terminal_rollback(journal: Journal) -> None:
    await journal.save_rollback(rollback("rb-old", Phase.ROLLBACK_COMPLETED, started=0, finished=5))
    await journal.save_rollback(rollback("rb-a", Phase.VERIFYING, started=10))
    await journal.save_rollback(rollback("rb-b", Phase.ROLLBACK_FAILED, started=20))
    await journal.save_rollback(rollback("rb-other", Phase.PLANNING, target=OTHER, started=30))
    history = await journal.history(APP)
    assert history.in_flight is not None and history.in_flight.id == "rb-b"
    assert history.last_finished is not None and history.last_finished.id == "rb-old"


async def test_history_last_finished_ignores_dry_runs_and_skips(journal: Journal) -> None:
    await journal.save_rollback(
        rollback("rb-done", Phase.ROLLBACK_COMPLETED, started=0, finished=50)
    )
    await journal.save_rollback(rollback("rb-esc", Phase.ESCALATED, started=10, finished=40))
    await journal.save_rollback(rollback("rb-dry", Phase.DRY_RUN, started=60, finished=60))
    await journal.save_rollback(rollback("rb-skip", Phase.SKIPPED, started=70, finished=70))
    history = await journal.history(APP)
    assert history.in_flight is None
    # Ordered by finish time, not start: rb-done finished last.
    assert history.last_finished is not None and history.last_finished.id == "rb-done"


async def test_history_lists_restored_revisions_newest_first(journal: Journal) -> None:
    await journal.save_rollback(rollback("rb-1", started=0), details={"restored_revision": 5})
    await journal.save_rollback(rollback("rb-2", started=10), details={"restored_revision": 9})
    await journal.save_rollback(rollback("rb-3", started=20))  # never got that far
    await journal.save_rollback(
        rollback("rb-4", target=OTHER, started=30), details={"restored_revision": 11}
    )
    assert (await journal.history(APP)).restored_revisions == (9, 5)
    assert (await journal.history(Target("x", "y"))).restored_revisions == ()


async def test_list_rollbacks_newest_first_with_target_filter_and_limit(journal: Journal) -> None:
    for i, target in enumerate([APP, OTHER, APP, APP]):
        await journal.save_rollback(rollback(f"rb-{i}", target=target, started=i))
    assert [r.id for r in await journal.list_rollbacks()] == ["rb-3", "rb-2", "rb-1", "rb-0"]
    assert [r.id for r in await journal.list_rollbacks(target=APP, limit=2)] == ["rb-3", "rb-2"]
    with pytest.raises(ValueError):
        await journal.list_rollbacks(limit=0)


async def test_decisions_are_listed_newest_first(journal: Journal) -> None:
    skip = Decision(Action.SKIP, APP, "cooldown", "in cooldown for 12 more minutes")
    roll = Decision(Action.ROLLBACK, APP, "rollback", "roll back", from_revision=7, to_revision=6)
    await journal.record_decision(skip, signal_key="k1", at=at(1))
    await journal.record_decision(roll, signal_key="k2", at=at(2), rollback_id="rb-1")
    await journal.record_decision(
        Decision(Action.SKIP, OTHER, "no_data", "no data"), signal_key="k3", at=at(3)
    )
    rows = await journal.decisions(target=APP)
    assert [(r["reason_code"], r["rollback_id"]) for r in rows] == [
        ("rollback", "rb-1"),
        ("cooldown", None),
    ]
    assert rows[0]["action"] is Action.ROLLBACK and rows[0]["to_revision"] == 6
    assert len(await journal.decisions(limit=2)) == 2


async def test_a_decisions_note_joins_the_timeline_of_the_record_it_names(
    journal: Journal,
) -> None:
    joined = Decision(Action.JOIN, APP, "rollback_in_flight", "joins rb-1", rollback_id="rb-1")
    note = DecisionNote("rb-1", "signal_joined", "am signal joined", {"key": "k2"})
    await journal.record_decision(joined, signal_key="k2", at=at(3), note=note)
    entries = [(e.at, e.kind, e.message, e.data) for e in await journal.timeline("rb-1")]
    assert (at(3), "signal_joined", "am signal joined", {"key": "k2"}) in entries
    assert [r["reason_code"] for r in await journal.decisions(target=APP)] == ["rollback_in_flight"]


async def test_timeline_merges_signal_decision_events_and_notifications_in_order(
    journal: Journal,
) -> None:
    await journal.record_signal(signal("k1"), accepted=True)  # observed at 0
    await journal.record_signal(signal("k1"), accepted=True)  # a repeat: shown once
    await journal.record_signal(signal("k-unrelated"), accepted=True)
    decision = Decision(Action.ROLLBACK, APP, "rollback", "revision 7 broke it", 7, 6)
    await journal.record_decision(decision, signal_key="k1", at=at(1), rollback_id="rb-1")
    await journal.save_rollback(rollback())
    await journal.record_event("rb-1", APP, "phase:ROLLING_BACK", "patch sent", at=at(2))
    await journal.record_event("rb-2", APP, "phase:ROLLING_BACK", "other rollback", at=at(2))
    await journal.record_event(
        "rb-1", APP, "verify_interval", "interval 1 healthy", at=at(40), data={"index": 1}
    )
    n = Notification(
        kind=NotificationKind.ROLLBACK_STARTED,
        severity="info",
        dedup_key="rb-1",
        target=APP,
        summary="rolling back",
        details={"rollback_id": "rb-1"},
        created_at=at(2),
    )
    await journal.record_notification(n, "pagerduty", True, "sent", at(3))
    await journal.record_notification(n, "slack", False, "HTTP 500 (after 5 attempt(s))", at(9))

    entries = await journal.timeline("rb-1")
    assert [e.kind for e in entries] == [
        "signal",
        "decision",
        "phase:ROLLING_BACK",
        "notification",
        "notification",
        "verify_interval",
    ]
    sig, dec, _, sent, failed, interval = entries
    assert sig.at == at(0) and sig.data["value"] == 0.31
    assert "HighErrorRatio firing: 0.31 (threshold 0.05)" in sig.message
    assert dec.message == "decision rollback (rollback): revision 7 broke it"
    assert sent.data["channel"] == "pagerduty" and sent.data["ok"] is True
    assert "FAILED (HTTP 500 (after 5 attempt(s)))" in failed.message
    assert interval.data == {"index": 1}


async def test_unresolved_alerts_are_recorded(journal: Journal) -> None:
    await journal.record_unresolved_alert(
        "fp9", "HighLatency", {"pod": "gone-123"}, "pod not found", at(5)
    )
    [row] = await journal.unresolved_alerts()
    assert row["labels"] == {"pod": "gone-123"} and row["reason"] == "pod not found"


async def test_concurrent_writers_do_not_interfere(journal: Journal) -> None:
    await asyncio.gather(
        *(
            journal.record_event("rb-1", APP, "tick", f"event {i}", at=at(i), data={"i": i})
            for i in range(40)
        ),
        *(journal.save_rollback(rollback(f"rb-x{i}", started=i)) for i in range(20)),
    )
    assert [e.data["i"] for e in await journal.timeline("rb-1")] == list(range(40))
    assert len(await journal.list_rollbacks(limit=100)) == 20


async def test_nan_values_are_stored_as_no_data(journal: Journal) -> None:
    await journal.record_event(
        "rb-1", APP, "verify_interval", "x", at=at(1), data={"v": float("nan")}
    )
    [entry] = await journal.timeline("rb-1")
    assert entry.data == {"v": None}


async def test_a_file_that_is_not_sqlite_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database, it is a text file" * 100)
    with pytest.raises(JournalError, match="not a usable SQLite file"):
        await Journal.open(path)
    assert path.read_bytes().startswith(b"this is not a database")  # untouched


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match="newer than this rollbackd understands"):
        await Journal.open(path)


async def test_readers_can_refuse_to_create_a_missing_journal(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "journal.sqlite"
    with pytest.raises(JournalError, match="does not exist"):
        await Journal.open(missing, create=False)
    assert not missing.parent.exists()
    async with await Journal.open(missing):
        pass
    async with await Journal.open(missing, create=False) as j:
        assert await j.list_rollbacks() == []


# --- the durable queue (schema version 2) ------------------------------------------


async def test_accepted_signals_stay_undecided_until_a_decision_covers_them(
    journal: Journal,
) -> None:
    ids = await journal.accept([signal("k1"), signal("k2"), signal("k1")])
    assert ids[0] is not None and ids[1] is not None and ids[2] is None  # in-batch repeat
    assert [row_id for row_id, _ in await journal.undecided_signals()] == ids[:2]

    decision = Decision(Action.JOIN, APP, "rollback_in_flight", "joins", rollback_id="rb-1")
    await journal.record_decision(decision, signal_key="k1", at=at(1), covers=[ids[1]])

    assert await journal.undecided_signals() == []
    assert await journal.count_undecided() == 0


async def test_a_settled_signal_shows_on_the_timeline_of_the_decision_that_settled_it(
    journal: Journal,
) -> None:
    first, second = await journal.accept([signal("k1"), signal("k2")])
    assert first is not None and second is not None
    decision = Decision(Action.ROLLBACK, APP, "rollback", "revision 7 broke it", 7, 6)
    await journal.record_decision(
        decision, signal_key="k1", at=at(1), rollback_id="rb-1", covers=[first, second]
    )
    keys = [e.data["key"] for e in await journal.timeline("rb-1") if e.kind == "signal"]
    assert keys == ["k1", "k2"]


async def test_a_repeat_after_reopening_is_recognised_by_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with await Journal.open(path) as j:
        assert (await j.accept([signal("k1")]))[0] is not None
    async with await Journal.open(path) as j:
        assert await j.accept([signal("k1")]) == [None]
        [(_, replayed)] = await j.undecided_signals()
        assert replayed == signal("k1")  # read back whole, for the dispatcher


async def test_concurrent_accepts_share_transactions_and_all_commit(journal: Journal) -> None:
    journal.close_direct()  # every commit to the journal's thread, as when the lock is busy
    results = await asyncio.gather(*(journal.accept([signal(f"k{i}")]) for i in range(200)))
    ids = [r[0] for r in results]
    assert None not in ids and len(set(ids)) == 200
    assert journal.intake_commits < 20
    assert await journal.count_undecided() == 200


async def test_a_failed_group_commit_acknowledges_nothing_of_the_batch(journal: Journal) -> None:
    bad = signal("k-bad")
    object.__setattr__(bad, "observed_at", datetime(2026, 3, 1))  # naive: refused
    results = await asyncio.gather(
        journal.accept([signal("k-good")]), journal.accept([bad]), return_exceptions=True
    )
    assert any(isinstance(r, ValueError) for r in results)
    # Whatever shared the failed transaction was not committed, so its caller was refused.
    committed = {s.key for _, s in await journal.undecided_signals()}
    for r, key in zip(results, ["k-good", "k-bad"], strict=True):
        assert (key in committed) == (not isinstance(r, BaseException))


async def test_a_version_1_journal_is_migrated_and_old_signals_are_not_replayed(
    tmp_path: Path,
) -> None:
    from rollbackd.journal.schema import SCHEMA_V1

    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1 + "PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO signals (key, namespace, name, source, signal, status, started_at,"
        " observed_at, labels, summary, accepted, note) VALUES"
        " ('old', 'shop', 'checkout', 'alertmanager', 'E', 'firing', ?, ?, '{}', '', 1, '')",
        (at(-60).isoformat(), at(0).isoformat()),
    )
    for _ in range(3):
        conn.execute(
            "INSERT INTO unresolved_alerts (at, fingerprint, alertname, labels, reason)"
            " VALUES (?, 'fp', 'DiskFull', '{}', 'no namespace label')",
            (at(0).isoformat(),),
        )
    conn.commit()
    conn.close()

    async with await Journal.open(path) as j:
        assert await j.schema_version() == SCHEMA_VERSION == 3
        assert await j.undecided_signals() == []
        assert await j.signal_seen("old")
        [row] = await j.unresolved_alerts()
        assert (row["fingerprint"], row["count"]) == ("fp", 3)


async def test_a_polled_signals_evidence_window_is_replayed_as_accepted(
    journal: Journal,
) -> None:
    first_look = dataclasses.replace(
        signal("prom:shop/web:error_ratio:t0"),
        source=SignalSource.PROMETHEUS,
        evidence_since=at(-90),
    )
    await journal.accept([first_look, signal("am:fp2:firing:t0")])
    replayed = {s.key: s for _, s in await journal.undecided_signals()}
    assert replayed[first_look.key] == first_look
    assert replayed["am:fp2:firing:t0"].evidence_since is None


async def test_a_version_2_journal_gains_the_evidence_column_and_keeps_its_queue(
    tmp_path: Path,
) -> None:
    from rollbackd.journal.schema import SCHEMA_V1, SCHEMA_V2

    path = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1 + SCHEMA_V2 + "PRAGMA user_version=2;")
    conn.execute(
        "INSERT INTO signals (key, namespace, name, source, signal, status, started_at,"
        " observed_at, labels, summary, accepted, note) VALUES"
        " ('waiting', 'shop', 'checkout', 'prometheus', 'error_ratio', 'firing', ?, ?,"
        " '{}', '', 1, '')",
        (at(-60).isoformat(), at(0).isoformat()),
    )
    conn.commit()
    conn.close()

    async with await Journal.open(path) as j:
        assert await j.schema_version() == SCHEMA_VERSION == 3
        [(_, waiting)] = await j.undecided_signals()
        assert (waiting.key, waiting.evidence_since) == ("waiting", None)


@pytest.mark.parametrize(("level", "pragma"), [("normal", 1), ("full", 2)])
async def test_the_durability_level_is_the_one_configured(
    tmp_path: Path, level: str, pragma: int
) -> None:
    async with await Journal.open(tmp_path / "j.sqlite", synchronous=level) as j:  # type: ignore[arg-type]
        assert (await j.query("PRAGMA synchronous"))[0][0] == pragma
        assert (await j.query("PRAGMA journal_mode"))[0][0] == "wal"


async def test_a_write_cancelled_at_any_step_leaves_no_transaction_open(journal: Journal) -> None:
    """A task cancelled mid-write (leadership lost, shutdown) must not wedge the journal.

    aiosqlite still runs a statement whose caller was cancelled, so a cancel
    that lands while BEGIN is on the connection's thread would otherwise leave
    a transaction open, and every later write would fail with "cannot start a
    transaction within a transaction".
    """
    for turns in range(6):
        for _ in range(10):
            write = asyncio.create_task(journal.save_rollback(rollback(f"rb-c{turns}")))
            for _ in range(turns):
                await asyncio.sleep(0)
            write.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await write
            await journal.save_rollback(rollback("rb-after"))
    saved = await journal.get_rollback("rb-after")
    assert saved is not None and saved.id == "rb-after"


async def test_closing_waits_for_the_write_in_flight_to_commit(tmp_path: Path) -> None:
    """A shutdown that closes the journal under a running write must not drop its COMMIT.

    The notifier marks a sent page delivered in a shielded write that goes on
    after its worker is cancelled; a close that did not wait lost the mark, and
    the next start sent the page again.
    """
    path = tmp_path / "j.sqlite"
    journal = await Journal.open(path)
    inside, release = threading.Event(), threading.Event()

    def slow_write(conn: sqlite3.Connection) -> None:
        # On the journal's thread, inside the transaction: the write is on its way.
        conn.execute("CREATE TABLE marks (id TEXT)")
        inside.set()
        release.wait(timeout=30)
        conn.execute("INSERT INTO marks VALUES ('delivered')")

    write = asyncio.create_task(journal.transaction(slow_write))
    assert await asyncio.to_thread(inside.wait, 30)
    close = asyncio.create_task(journal.close())
    await asyncio.sleep(0.05)
    assert not close.done()  # still waiting for the write
    release.set()
    await asyncio.gather(write, close)

    async with await Journal.open(path) as reopened:
        assert [r[0] for r in await reopened.query("SELECT id FROM marks")] == ["delivered"]


async def test_a_phase_is_journaled_with_its_timeline_entry_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with await Journal.open(path) as journal:
        recorder = JournalRecorder(journal, Metrics(), clock=lambda: at(90))
        await recorder.phase(rollback(phase=Phase.VERIFYING), "verifying")
        # The next timeline write fails (as a full disk would stop it) ...
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
        other.commit()
        other.close()
        with pytest.raises(sqlite3.Error):
            await recorder.phase(rollback(phase=Phase.ROLLBACK_COMPLETED, finished=90), "healthy")
        # ... so the phase did not move either: no reader ever sees a step the
        # timeline does not tell.
        stored = await journal.get_rollback("rb-1")
        assert stored is not None and stored.phase is Phase.VERIFYING
        kinds = [entry.kind for entry in await journal.timeline("rb-1")]
        assert kinds.count("phase:VERIFYING") == 1 and "phase:ROLLBACK_COMPLETED" not in kinds


def test_a_signals_labels_are_stored_as_json_text_with_sorted_keys() -> None:
    # Text labels (every webhook alert's) take a shortcut; anything else the
    # general converter. Both must store the same text for the same labels.
    text_only = signal_to_row(
        dataclasses.replace(signal(), labels={"team": "shop", "pod": "p-1", "é": "ü"}),
        accepted=True,
    )
    assert text_only[10] == '{"pod": "p-1", "team": "shop", "\\u00e9": "\\u00fc"}'
    mixed = signal_to_row(
        dataclasses.replace(signal(), labels={"team": "shop", "at": at(0)}),  # type: ignore[dict-item]
        accepted=True,
    )
    assert mixed[10] == f'{{"at": "{at(0).isoformat()}", "team": "shop"}}'
