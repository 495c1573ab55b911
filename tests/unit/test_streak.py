"""The "for" rule both pollers share: consecutive breaches fire, a look after that ends or reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rollbackd.model import SignalStatus
from rollbackd.signals import Verdict
from rollbackd.sources.streak import Streak, advance

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
B, H, N = Verdict.BREACH, Verdict.HEALTHY, Verdict.NO_DATA


def run(
    verdicts: list[Verdict], **kwargs: bool
) -> tuple[list[SignalStatus | None], dict[str, Streak]]:
    streaks: dict[str, Streak] = {}
    said: list[SignalStatus | None] = []
    for i, verdict in enumerate(verdicts):
        now = T0 + timedelta(seconds=i)
        _, status = advance(streaks, "t", verdict, now=now, for_count=3, new=Streak, **kwargs)
        said.append(status)
    return said, streaks


def test_fires_at_for_count_repeats_while_breaching_and_resolves_once() -> None:
    said, streaks = run([B, B, B, B, H, H])
    firing = SignalStatus.FIRING
    assert said == [None, None, firing, firing, SignalStatus.RESOLVED, None]
    assert streaks == {}


def test_no_data_breaks_a_pending_streak_so_the_count_starts_over() -> None:
    said, _ = run([B, B, N, B, B, B])
    assert said[-1] is SignalStatus.FIRING and said[3:5] == [None, None]
    assert said[2] is SignalStatus.NO_DATA  # recorded by default


def test_pending_no_data_can_start_over_silently() -> None:
    said, streaks = run([B, B, N], report_pending_no_data=False)
    assert said == [None, None, None] and streaks == {}


def test_no_data_while_firing_is_said_once_and_keeps_the_start() -> None:
    said, streaks = run([B, B, B, N, N, B])
    assert said[3:] == [SignalStatus.NO_DATA, None, SignalStatus.FIRING]
    assert streaks["t"].started_at == T0
