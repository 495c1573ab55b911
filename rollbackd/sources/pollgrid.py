"""When the poller asks: on a fixed grid, just after fresh scrapes have landed.

A poll that runs at a random phase against the scrapes reads data that is on
average half an interval old, and a breach that appears in a scrape waits as
long for its first evaluation (7.5 s at a 15 s scrape). Prometheus keeps
``scrape_duration_seconds`` for every target, so the moment each target's
latest scrape became queryable is known; the grid is placed just after those
moments. With one target (or a few in step) every poll reads a scrape a
fraction of a second old; with many targets spread over the interval the
phase that leaves them least stale on average is chosen, which is never worse
than a random one.

Consecutive polls stay one interval apart, so ``for_count`` consecutive
breaching polls still rest on as many scrapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["PollGrid", "best_phase", "landing_margin"]


def landing_margin(interval: float) -> float:
    """Slack after the observed landing: ingestion and scrape durations vary.

    A poll that runs before its scrape landed reads the previous one and
    costs a whole interval; 10 % of the interval (50 ms to 0.5 s) is cheap.
    """
    return min(0.5, max(0.05, 0.1 * interval))


def best_phase(landings: Sequence[float], interval: float) -> float | None:
    """The phase in ``[0, interval)`` (of epoch time) that minimises mean staleness.

    ``landings`` are epoch seconds at which targets' latest scrapes became
    queryable. Polling at phase ``p`` reads target ``i`` after
    ``(p - l_i) mod interval`` seconds; the best ``p`` is one of the ``l_i``
    themselves, and with the phases sorted the cost of each candidate follows
    from one running sum, so this is O(n log n) for n targets.
    """
    if interval <= 0:
        raise ValueError("interval must be > 0")
    phases = sorted(landing % interval for landing in landings if math.isfinite(landing))
    if not phases:
        return None
    count, total = len(phases), sum(phases)
    best, best_cost = phases[0], math.inf
    for index, phase in enumerate(phases):
        # Targets up to and including this one are (phase - l) old; the rest
        # landed later in the interval, so they are read a wrap-around later.
        cost = count * phase - total + interval * (count - 1 - index)
        if cost < best_cost - 1e-12 or (abs(cost - best_cost) <= 1e-12 and phase > best):
            best, best_cost = phase, cost
    return best


class PollGrid:
    """Tick times (epoch seconds) every ``interval``, at ``phase`` once it is known."""

    def __init__(self, interval: float, phase: float | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.phase = None if phase is None else phase % interval

    def align(self, landing_phase: float | None) -> None:
        """Place ticks just after ``landing_phase``; None keeps the current grid."""
        if landing_phase is not None:
            self.phase = (landing_phase + landing_margin(self.interval)) % self.interval

    def next_tick(self, now: float, last_start: float) -> float:
        """The first grid time that is not in the past and at least half an interval after
        ``last_start``: a slow cycle skips the ticks it overran instead of bursting, and a
        moved phase never puts two polls on the same scrape.
        """
        if self.phase is None:
            # No phase learnt yet: the grid runs from the last start.
            self.phase = last_start % self.interval
        earliest = max(now, last_start + 0.5 * self.interval)
        steps = math.ceil((earliest - self.phase) / self.interval)
        return self.phase + steps * self.interval
