"""The "for" rule both pollers apply to what they look at, per target (and signal).

``for_count`` consecutive breaches emit FIRING, repeated while the breach
lasts; a healthy look after FIRING emits RESOLVED and ends the streak; a
pending streak that sees a healthy look or no data starts over, since "for"
means consecutive observed breaches. No data while firing is said once
(NO_DATA, never a trigger) and the streak survives, so the anomaly keeps its
start time if the breach is still there afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from rollbackd.model import SignalStatus
from rollbackd.signals import Verdict

__all__ = ["Streak", "advance"]


@dataclass
class Streak:
    """A target (and signal) that is breaching or was recently."""

    breaches: int = 0
    started_at: datetime | None = None  # first breaching look of the streak
    firing: bool = False
    no_data_reported: bool = False


S = TypeVar("S", bound=Streak)
K = TypeVar("K")


def advance(
    streaks: MutableMapping[K, S],
    key: K,
    verdict: Verdict,
    *,
    now: datetime,
    for_count: int,
    new: Callable[[], S],
    report_pending_no_data: bool = True,
) -> tuple[S | None, SignalStatus | None]:
    """Apply one look to ``key``'s streak; the streak (even one just ended) and what to emit.

    ``report_pending_no_data``: whether no data ending a pending streak is
    said too (the Prometheus poller records it; pod health only starts over).
    """
    streak = streaks.get(key)
    if verdict is Verdict.BREACH:
        if streak is None:
            streak = streaks[key] = new()
        if streak.started_at is None:
            streak.started_at = now
        streak.breaches += 1
        streak.no_data_reported = False
        if streak.firing or streak.breaches >= for_count:
            streak.firing = True
            return streak, SignalStatus.FIRING
        return streak, None
    if streak is None:
        return None, None
    if verdict is Verdict.HEALTHY:
        del streaks[key]
        return streak, SignalStatus.RESOLVED if streak.firing else None
    reported = streak.no_data_reported
    if streak.firing:
        streak.no_data_reported = True
    else:
        del streaks[key]
        reported = reported or not report_pending_no_data
    return streak, None if reported else SignalStatus.NO_DATA
