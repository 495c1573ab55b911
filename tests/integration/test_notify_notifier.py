"""The Notifier: durable on enqueue, never blocks its caller, retries until delivered or too old.

These specs use in-process channels; tests/integration/test_notify_outbox.py
runs the same guarantees over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.model import Target
from rollbackd.notify.base import (
    ChannelError,
    Notification,
    NotificationKind,
    Notifier,
    Severity,
)
from rollbackd.notify.outbox import OutboxStore
from rollbackd.testing.promstack import poll_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def note(key: str, severity: Severity = "info") -> Notification:
    kind = NotificationKind.ESCALATION if severity == "critical" else NotificationKind.DRY_RUN
    return Notification(
        kind=kind,
        severity=severity,
        dedup_key=key,
        target=Target("ns", "app"),
        summary=key,
        details={},
        created_at=T0,
    )


def trigger(key: str) -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_STARTED,
        severity="info",
        dedup_key=key,
        target=Target("ns", "app"),
        summary=f"rolling back {key}",
        details={"rollback_id": key},
        created_at=T0,
    )


def resolve(key: str) -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_COMPLETED,
        severity="info",
        dedup_key=key,
        target=Target("ns", "app"),
        summary=f"rolled back {key}",
        details={"rollback_id": key},
        created_at=T0,
        resolves=True,
    )


def label(n: Notification) -> str:
    return f"{n.dedup_key}:{'resolve' if n.resolves else n.kind.value}"


@pytest_asyncio.fixture
async def journal() -> AsyncIterator[Journal]:
    async with await Journal.open(":memory:") as j:
        yield j


class GatedChannel:
    """Records what it sends; blocks each send until the test opens the gate."""

    def __init__(self, name: str = "gated") -> None:
        self.name = name
        self.sent: list[str] = []
        self.sending = asyncio.Event()
        self.gate = asyncio.Event()
        self.started = 0
        self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def send(self, n: Notification) -> None:
        self.sending.set()
        await self.gate.wait()
        self.sent.append(label(n))


class FlakyChannel:
    """Raises the queued errors first (per dedup key when keyed), then sends."""

    def __init__(
        self,
        errors: list[BaseException] | None = None,
        *,
        name: str = "flaky",
        failing_keys: dict[str, BaseException] | None = None,
    ) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.failing_keys = dict(failing_keys or {})
        self.calls: list[str] = []
        self.sent: list[str] = []

    async def send(self, n: Notification) -> None:
        self.calls.append(label(n))
        if n.dedup_key in self.failing_keys:
            raise self.failing_keys[n.dedup_key]
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(label(n))


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[str, str, bool, str]] = []

    async def __call__(self, n: Notification, channel: str, ok: bool, detail: str) -> None:
        self.results.append((n.dedup_key, channel, ok, detail))


FAST = {"initial_backoff": 0.001, "max_backoff": 0.01}


async def eventually(probe: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until ``probe()`` is true (polled every 10 ms), or fail after ``within`` s."""

    async def found() -> bool | None:
        return True if await probe() else None

    await poll_until(found, within=within, interval=0.01, message="condition")


async def test_enqueue_returns_once_the_page_is_committed_even_with_no_sender(
    journal: Journal,
) -> None:
    channel = FlakyChannel()
    notifier = Notifier([channel], journal=journal)  # not started: a standby
    await notifier.enqueue(trigger("rb-1"))
    [row] = await OutboxStore(journal).pending()
    assert (row.channel, row.dedup_key, row.kind, row.resolves, row.rollback_id) == (
        "flaky",
        "rb-1",
        "rollback_started",
        False,
        "rb-1",
    )
    assert (row.state, row.attempts) == ("pending", 0)
    assert channel.calls == []


async def test_the_same_page_enqueued_twice_is_sent_once(journal: Journal) -> None:
    channel = FlakyChannel()
    recorder = Recorder()
    async with Notifier([channel], journal=journal, on_result=recorder) as notifier:
        await notifier.enqueue(trigger("rb-1"))
        await notifier.enqueue(trigger("rb-1"))  # a resumed rollback re-sends its start page
        notifier.submit(trigger("rb-1"))
        assert await notifier.drain(5.0)
    assert channel.calls == ["rb-1:rollback_started"]
    assert recorder.results == [("rb-1", "flaky", True, "sent")]
    assert len(await OutboxStore(journal).rows()) == 1


async def test_a_drain_waits_until_a_delivered_page_is_reported(journal: Journal) -> None:
    """The report journals the page in the timeline: a stop after the drain must not cut it off."""
    reporting, release = asyncio.Event(), asyncio.Event()
    recorder = Recorder()

    async def slow_report(n: Notification, channel: str, ok: bool, detail: str) -> None:
        reporting.set()
        await release.wait()
        await recorder(n, channel, ok, detail)

    async with Notifier([FlakyChannel()], journal=journal, on_result=slow_report) as notifier:
        await notifier.enqueue(trigger("rb-1"))
        await asyncio.wait_for(reporting.wait(), 5)  # delivered, its report in flight
        draining = asyncio.create_task(notifier.drain(5.0))
        await asyncio.sleep(0.1)
        assert not draining.done()
        release.set()
        assert await draining
        assert recorder.results == [("rb-1", "flaky", True, "sent")]


async def test_a_drain_sends_what_is_due_and_leaves_a_page_held_past_its_deadline(
    journal: Journal,
) -> None:
    """A stopping leader waits for what can go out in time, not for a page held for later.

    A held escalation used to keep the drain (and the leader's rollbacks)
    going for the whole timeout; it stays pending for the next leader.
    """
    channel = FlakyChannel()
    async with Notifier([channel], journal=journal) as notifier:
        held_until = datetime.now(UTC) + timedelta(seconds=30)
        await notifier.enqueue(trigger("rb-held"), not_before=held_until)
        await notifier.enqueue(trigger("rb-now"))
        started = asyncio.get_running_loop().time()
        assert await notifier.drain(10.0)
        assert asyncio.get_running_loop().time() - started < 5.0
        assert channel.calls == ["rb-now:rollback_started"]
        [held] = await OutboxStore(journal).pending()
        assert (held.dedup_key, held.state) == ("rb-held", "pending")


async def test_submit_returns_while_the_channel_is_stuck(journal: Journal) -> None:
    channel = GatedChannel()
    notifier = Notifier([channel], journal=journal)
    await notifier.start()
    try:
        for i in range(50):
            notifier.submit(note(f"n{i}"))  # synchronous: would hang here if it blocked
        assert not await notifier.drain(0.05)

        async def all_written() -> bool:
            return await notifier.pending() == 50

        await eventually(all_written)
        channel.gate.set()
        assert await notifier.drain(5.0)
        assert channel.sent == [f"n{i}:dry_run" for i in range(50)]  # in order
    finally:
        await notifier.stop()
    assert (channel.started, channel.stopped) == (1, 1)


async def test_retryable_errors_are_retried_with_no_attempt_limit(journal: Journal) -> None:
    channel = FlakyChannel([ChannelError("HTTP 503", retryable=True) for _ in range(7)])
    recorder = Recorder()
    async with Notifier([channel], journal=journal, on_result=recorder, **FAST) as notifier:
        await notifier.enqueue(note("a", "critical"))
        assert await notifier.drain(5.0)
    assert len(channel.calls) == 8
    assert recorder.results == [("a", "flaky", True, "sent after 8 attempts")]
    [row] = await OutboxStore(journal).rows()
    assert (row.state, row.attempts, row.last_error) == ("delivered", 8, "")


async def test_non_retryable_error_fails_the_row_after_one_attempt(journal: Journal) -> None:
    channel = FlakyChannel([ChannelError("bad request", retryable=False)])
    recorder = Recorder()
    async with Notifier([channel], journal=journal, on_result=recorder, **FAST) as notifier:
        await notifier.enqueue(note("a"))
        assert await notifier.drain(5.0)
    assert channel.calls == ["a:dry_run"]
    assert recorder.results == [("a", "flaky", False, "bad request (after 1 attempt(s))")]
    [row] = await OutboxStore(journal).rows()
    assert (row.state, row.attempts, row.last_error) == ("failed", 1, "bad request")


async def test_a_crashing_channel_or_callback_does_not_stop_the_worker(journal: Journal) -> None:
    channel = FlakyChannel([RuntimeError("bug in channel")])
    seen: list[str] = []

    async def on_result(n: Notification, channel_name: str, ok: bool, detail: str) -> None:
        seen.append(f"{n.dedup_key}:{ok}:{detail}")
        raise ValueError("bug in callback")

    async with Notifier([channel], journal=journal, on_result=on_result) as notifier:
        notifier.submit(note("a"))
        notifier.submit(note("b"))
        assert await notifier.drain(5.0)
    assert seen == ["a:False:RuntimeError: bug in channel", "b:True:sent"]


async def test_a_resolve_is_never_sent_before_its_trigger(journal: Journal) -> None:
    channel = FlakyChannel()
    notifier = Notifier([channel], journal=journal)
    # Enqueued out of order (a crash between the two writes of a resumed rollback).
    await notifier.enqueue(resolve("rb-1"))
    await notifier.enqueue(trigger("rb-1"))
    async with notifier:
        assert await notifier.drain(5.0)
    assert channel.sent == ["rb-1:rollback_started", "rb-1:resolve"]


async def test_one_key_in_backoff_does_not_hold_back_another(journal: Journal) -> None:
    channel = FlakyChannel(failing_keys={"rb-1": ChannelError("HTTP 500", retryable=True)})
    async with Notifier([channel], journal=journal, **FAST) as notifier:
        await notifier.enqueue(trigger("rb-1"))
        await notifier.enqueue(resolve("rb-1"))
        await notifier.enqueue(trigger("rb-2"))
        await notifier.enqueue(resolve("rb-2"))

        async def rb2_sent_and_rb1_retried() -> bool:
            return len(channel.sent) == 2 and channel.calls.count("rb-1:rollback_started") > 1

        await eventually(rb2_sent_and_rb1_retried)
        assert await notifier.pending() == 2  # rb-1's trigger and resolve, still waiting
    assert channel.sent == ["rb-2:rollback_started", "rb-2:resolve"]
    # rb-1's resolve was never tried: its trigger is still pending.
    assert "rb-1:resolve" not in channel.calls
    assert channel.calls.count("rb-1:rollback_started") > 1


async def test_a_resolve_follows_its_trigger_to_a_channel_that_forgot_it(
    journal: Journal,
) -> None:
    class EscalationsOnly(FlakyChannel):
        """Like the Alertmanager push: knows resolves only of what it saw (in memory)."""

        def __init__(self) -> None:
            super().__init__(name="am")
            self.seen: set[str] = set()

        def accepts(self, n: Notification) -> bool:
            if n.resolves:
                return n.dedup_key in self.seen
            self.seen.add(n.dedup_key)
            return n.kind is NotificationKind.ESCALATION

    await Notifier([EscalationsOnly()], journal=journal).enqueue(note("esc-1", "critical"))
    restarted = EscalationsOnly()  # a new process: its memory is empty
    async with Notifier([restarted], journal=journal) as notifier:
        await notifier.enqueue(resolve("esc-1"))
        await notifier.enqueue(resolve("never-escalated"))
        assert await notifier.drain(5.0)
    assert restarted.sent == ["esc-1:escalation", "esc-1:resolve"]


async def test_channels_may_decline_notifications(journal: Journal) -> None:
    class OnlyCritical(FlakyChannel):
        def accepts(self, n: Notification) -> bool:
            return n.severity == "critical"

    channel = OnlyCritical(name="only-critical")
    recorder = Recorder()
    async with Notifier([channel], journal=journal, on_result=recorder) as notifier:
        notifier.submit(note("info"))
        notifier.submit(note("crit", "critical"))
        assert await notifier.drain(5.0)
    assert recorder.results == [("crit", "only-critical", True, "sent")]
    assert [r.dedup_key for r in await OutboxStore(journal).rows()] == ["crit"]


async def test_stop_mid_send_keeps_the_page_and_the_next_start_sends_it(
    journal: Journal,
) -> None:
    channel = GatedChannel()
    recorder = Recorder()
    notifier = Notifier([channel], journal=journal, on_result=recorder)
    await notifier.start()
    await notifier.enqueue(note("a", "critical"))
    await channel.sending.wait()
    await notifier.stop()  # leadership lost while the send hangs
    [row] = await OutboxStore(journal).pending()
    assert (row.dedup_key, row.attempts) == ("a", 0)
    assert recorder.results == []

    channel.gate.set()
    await notifier.start()  # leadership regained: same object, restartable
    assert await notifier.drain(5.0)
    await notifier.stop()
    assert channel.sent == ["a:escalation"]
    assert recorder.results == [("a", "gated", True, "sent")]
    assert (channel.started, channel.stopped) == (2, 2)


async def test_submit_after_stop_is_still_written_and_sent_by_the_next_start(
    journal: Journal,
) -> None:
    channel = FlakyChannel()
    notifier = Notifier([channel], journal=journal)
    await notifier.start()
    await notifier.stop()
    notifier.submit(note("late", "critical"))
    await notifier.stop()  # a second stop waits for the write
    assert [r.dedup_key for r in await OutboxStore(journal).pending()] == ["late"]
    async with notifier:
        assert await notifier.drain(5.0)
    assert channel.sent == ["late:escalation"]


async def test_a_page_older_than_max_age_expires_is_reported_and_counted(
    journal: Journal,
) -> None:
    channel = FlakyChannel(failing_keys={"a": ChannelError("HTTP 503", retryable=True)})
    recorder = Recorder()
    metrics = Metrics()
    async with Notifier(
        [channel],
        journal=journal,
        on_result=recorder,
        metrics=metrics,
        max_age=timedelta(seconds=0.3),
        **FAST,
    ) as notifier:
        await notifier.enqueue(note("a", "critical"))
        assert await notifier.drain(5.0)
        [(key, name, ok, detail)] = recorder.results
        assert (key, name, ok) == ("a", "flaky", False)
        assert detail.startswith("expired: undelivered for 0s after ")
        assert detail.endswith("attempt(s); last error: HTTP 503")
        [row] = await OutboxStore(journal).rows()
        assert row.state == "expired" and row.finished_at is not None
        values = _samples(metrics)
        assert values[("rollbackd_notifications_expired_total", "flaky")] == 1
        assert values[("rollbackd_notifications_pending", "flaky")] == 0
        assert values[("rollbackd_notification_delivery_lag_seconds", "flaky")] == 0


async def test_gauges_show_pending_pages_and_their_age_while_a_channel_is_down(
    journal: Journal,
) -> None:
    now = [T0]
    channel = FlakyChannel(failing_keys={"a": ChannelError("HTTP 503", retryable=True)})
    metrics = Metrics()
    async with Notifier(
        [channel], journal=journal, metrics=metrics, clock=lambda: now[0], **FAST
    ) as notifier:
        await notifier.enqueue(note("a", "critical"))
        await notifier.enqueue(note("b", "critical"))

        async def b_out_a_stuck() -> bool:
            pending = _samples(metrics)[("rollbackd_notifications_pending", "flaky")]
            return channel.sent == ["b:escalation"] and pending == 1

        await eventually(b_out_a_stuck)
        now[0] = T0 + timedelta(minutes=7)
        lag = _samples(metrics)[("rollbackd_notification_delivery_lag_seconds", "flaky")]
        assert lag == 420.0  # read at scrape time: it grows while the worker sleeps
    values = _samples(metrics)
    # Stopped (not the leader): not this replica's lag to report.
    assert values[("rollbackd_notifications_pending", "flaky")] == 0
    assert values[("rollbackd_notification_delivery_lag_seconds", "flaky")] == 0


def _samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if "channel" in sample.labels:
                out[(sample.name, sample.labels["channel"])] = sample.value
    return out


def test_channel_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Notifier([FlakyChannel(), FlakyChannel()])


def test_timing_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="max_age"):
        Notifier([], max_age=timedelta(0))
    with pytest.raises(ValueError, match="backoff"):
        Notifier([], initial_backoff=10, max_backoff=1)


def test_notification_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="severity"):
        note("x", "urgent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        Notification(
            kind=NotificationKind.ESCALATION,
            severity="critical",
            dedup_key="k",
            target=Target("a", "b"),
            summary="",
            details={},
            created_at=datetime(2026, 1, 1),
        )
