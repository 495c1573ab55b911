"""The Notifier never blocks its caller, never drops a critical page, and reports every outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from rollbackd.model import Target
from rollbackd.notify.base import (
    ChannelError,
    Notification,
    NotificationKind,
    Notifier,
    Severity,
)

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


class GatedChannel:
    """Records what it sends; blocks each send until the test opens the gate."""

    def __init__(self, name: str = "gated") -> None:
        self.name = name
        self.sent: list[str] = []
        self.sending = asyncio.Event()
        self.gate = asyncio.Event()
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, n: Notification) -> None:
        self.sending.set()
        await self.gate.wait()
        self.sent.append(n.dedup_key)


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[str, str, bool, str]] = []

    async def __call__(self, n: Notification, channel: str, ok: bool, detail: str) -> None:
        self.results.append((n.dedup_key, channel, ok, detail))


async def test_overflow_drops_oldest_info_and_never_a_critical() -> None:
    channel = GatedChannel()
    recorder = Recorder()
    notifier = Notifier([channel], on_result=recorder, max_queue=2)
    await notifier.start()
    try:
        notifier.submit(note("in-flight"))
        await channel.sending.wait()
        for key, severity in [
            ("info-1", "info"),
            ("crit-1", "critical"),
            ("info-2", "info"),  # queue over bound: info-1 (oldest info) goes
            ("warn-1", "warning"),  # info-2 goes (info before warning)
            ("crit-2", "critical"),  # warn-1 goes
            ("crit-3", "critical"),  # all critical: kept beyond the bound
        ]:
            notifier.submit(note(key, severity))  # type: ignore[arg-type]
        channel.gate.set()
        assert await notifier.drain(5.0)
    finally:
        await notifier.stop()
    assert channel.sent == ["in-flight", "crit-1", "crit-2", "crit-3"]
    dropped = [(key, detail) for key, _, ok, detail in recorder.results if not ok]
    assert dropped == [
        ("info-1", "dropped: queue full"),
        ("info-2", "dropped: queue full"),
        ("warn-1", "dropped: queue full"),
    ]


async def test_submit_returns_while_the_channel_is_stuck() -> None:
    channel = GatedChannel()
    notifier = Notifier([channel])
    await notifier.start()
    try:
        for i in range(50):
            notifier.submit(note(f"n{i}"))  # synchronous: would hang here if it blocked
        assert notifier.pending() == 50
        assert not await notifier.drain(0.01)
        channel.gate.set()
        assert await notifier.drain(5.0)
        assert len(channel.sent) == 50
    finally:
        await notifier.stop()
    assert channel.started and channel.stopped


class FlakyChannel:
    name = "flaky"

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls = 0

    async def send(self, n: Notification) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


async def test_non_retryable_error_is_reported_after_one_attempt() -> None:
    channel = FlakyChannel([ChannelError("bad request", retryable=False)])
    recorder = Recorder()
    async with Notifier([channel], on_result=recorder, initial_backoff=0.001) as notifier:
        notifier.submit(note("a"))
        assert await notifier.drain(5.0)
    assert channel.calls == 1
    assert recorder.results == [("a", "flaky", False, "bad request (after 1 attempt(s))")]


async def test_a_crashing_channel_or_callback_does_not_stop_the_worker() -> None:
    channel = FlakyChannel([RuntimeError("bug in channel")])
    seen: list[str] = []

    async def on_result(n: Notification, channel_name: str, ok: bool, detail: str) -> None:
        seen.append(f"{n.dedup_key}:{ok}:{detail}")
        raise ValueError("bug in callback")

    async with Notifier([channel], on_result=on_result) as notifier:
        notifier.submit(note("a"))
        notifier.submit(note("b"))
        assert await notifier.drain(5.0)
    assert seen == ["a:False:RuntimeError: bug in channel", "b:True:sent"]


async def test_retry_honours_retry_after_within_max_backoff() -> None:
    channel = FlakyChannel([ChannelError("HTTP 429", retryable=True, retry_after=3600)])
    recorder = Recorder()
    # max_backoff caps a huge Retry-After, so the retry happens promptly.
    async with Notifier(
        [channel], on_result=recorder, initial_backoff=0.001, max_backoff=0.01
    ) as notifier:
        notifier.submit(note("a"))
        assert await notifier.drain(5.0)
    assert recorder.results == [("a", "flaky", True, "sent after 2 attempts")]


async def test_channels_may_decline_notifications() -> None:
    class OnlyCritical(FlakyChannel):
        name = "only-critical"

        def accepts(self, n: Notification) -> bool:
            return n.severity == "critical"

    channel = OnlyCritical([])
    recorder = Recorder()
    async with Notifier([channel], on_result=recorder) as notifier:
        notifier.submit(note("info"))
        notifier.submit(note("crit", "critical"))
        assert await notifier.drain(5.0)
    assert recorder.results == [("crit", "only-critical", True, "sent")]


async def test_submit_after_stop_is_reported_dropped_not_raised() -> None:
    recorder = Recorder()
    notifier = Notifier([FlakyChannel([])], on_result=recorder)
    await notifier.start()
    await notifier.stop()
    notifier.submit(note("late"))
    await notifier.stop()  # a second stop waits for the reports of late submissions
    assert recorder.results == [("late", "flaky", False, "dropped: notifier stopped")]


def test_channel_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Notifier([FlakyChannel([]), FlakyChannel([])])


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
