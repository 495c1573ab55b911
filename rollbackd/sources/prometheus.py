"""Prometheus poller: rollbackd's own eyes on the signals, independent of alert rules.

Every ``interval`` the poller runs each signal's query once for all targets
(``signals.evaluate_specs``) and keeps a small state per (target, signal):

- BREACH counts consecutive breaching cycles; at ``for_count`` it emits
  FIRING, and repeats FIRING with the same key every cycle while breaching
  (the daemon dedupes by key; a restarted daemon still hears it).
- HEALTHY after FIRING emits RESOLVED once; a pending streak just resets.
- NO_DATA (failed query, empty, NaN, low traffic) while pending or firing
  emits NO_DATA once per streak, never a trigger. A pending streak resets:
  "for" means consecutive observed breaches. A firing state survives so the
  anomaly keeps its start time if the breach is still there afterwards.

State is kept only for targets that are not healthy, so memory follows the
number of troubled targets, not the fleet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from rollbackd.model import Signal, SignalSource, SignalStatus, Target
from rollbackd.promql import PromQL
from rollbackd.signals import Evaluation, SignalSpec, Verdict, evaluate_specs

__all__ = ["PrometheusPoller"]

log = structlog.get_logger(__name__)


@dataclass
class _Streak:
    """A (target, signal) that is breaching or was recently."""

    breaches: int = 0
    started_at: datetime | None = None  # first breaching evaluation of the streak
    firing: bool = False
    no_data_reported: bool = False


class PrometheusPoller:
    """Turns periodic signal evaluations into FIRING / RESOLVED / NO_DATA Signals."""

    def __init__(
        self,
        promql: PromQL,
        specs: Sequence[SignalSpec],
        *,
        interval: float,
        emit: Callable[[Signal], Awaitable[None]],
        clock: Callable[[], datetime],
        on_query_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._promql = promql
        self._specs = {spec.name: spec for spec in specs}
        self._interval = interval
        self._emit = emit
        self._clock = clock
        self._on_query_error = on_query_error
        self._streaks: dict[tuple[Target, str], _Streak] = {}

    async def evaluate_once(self) -> list[Signal]:
        """One cycle: query, update streaks, emit and return the signals produced."""
        now = self._clock()
        failed: dict[str, Exception] = {}

        def on_error(name: str, exc: Exception) -> None:
            failed[name] = exc
            if self._on_query_error is not None:
                self._on_query_error(name, exc)

        results = await evaluate_specs(self._promql, list(self._specs.values()), on_error=on_error)
        signals: list[Signal] = []
        # Tracked targets missing from this cycle's results count as no data.
        for key in sorted(set(results) | set(self._streaks)):
            evaluation = results.get(key)
            if evaluation is None:
                target, name = key
                why = f"query failed: {failed[name]}" if name in failed else "no series"
                evaluation = Evaluation(
                    target, name, Verdict.NO_DATA, None, self._specs[name].threshold, why
                )
            signal = self._step(key, evaluation, now)
            if signal is not None:
                signals.append(signal)
        for signal in signals:
            try:
                await self._emit(signal)
            except Exception:
                # One rejected signal must not hide the others.
                log.exception("poller_emit_failed", key=signal.key)
        return signals

    def _step(
        self, key: tuple[Target, str], evaluation: Evaluation, now: datetime
    ) -> Signal | None:
        spec = self._specs[key[1]]
        streak = self._streaks.get(key)
        if evaluation.verdict is Verdict.BREACH:
            if streak is None:
                streak = self._streaks[key] = _Streak()
            if streak.started_at is None:
                streak.started_at = now
            streak.breaches += 1
            streak.no_data_reported = False
            if streak.firing or streak.breaches >= spec.for_count:
                streak.firing = True
                return self._signal(SignalStatus.FIRING, spec, evaluation, streak, now)
            return None
        if streak is None:
            return None
        if evaluation.verdict is Verdict.HEALTHY:
            del self._streaks[key]
            if streak.firing:
                return self._signal(SignalStatus.RESOLVED, spec, evaluation, streak, now)
            return None
        # NO_DATA while pending or firing.
        reported = streak.no_data_reported
        if streak.firing:
            streak.no_data_reported = True
        else:
            del self._streaks[key]
        if reported:
            return None
        return self._signal(SignalStatus.NO_DATA, spec, evaluation, streak, now)

    @staticmethod
    def _signal(
        status: SignalStatus,
        spec: SignalSpec,
        evaluation: Evaluation,
        streak: _Streak,
        now: datetime,
    ) -> Signal:
        started_at = streak.started_at or now
        target = evaluation.target
        key = f"prom:{target}:{spec.name}:{started_at.isoformat()}"
        if status is not SignalStatus.FIRING:
            # Distinct keys: a RESOLVED must not be deduped as a repeat of FIRING.
            key = f"{key}:{status.value}:{now.isoformat()}"
        return Signal(
            target=target,
            source=SignalSource.PROMETHEUS,
            name=spec.name,
            status=status,
            started_at=started_at,
            observed_at=now,
            value=evaluation.value,
            threshold=spec.threshold,
            key=key,
            labels={"namespace": target.namespace, "deployment": target.name},
            summary=evaluation.detail,
        )

    async def run(self) -> None:
        """Poll until cancelled; ticks stay on a fixed grid and a bad cycle is only logged."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                await self.evaluate_once()
            except Exception:
                log.exception("poller_cycle_failed")
            next_tick += self._interval
            now = loop.time()
            if next_tick < now:
                # A slow cycle skips the ticks it overran instead of bursting.
                missed = int((now - next_tick) // self._interval) + 1
                next_tick += missed * self._interval
            await asyncio.sleep(next_tick - now)

    @property
    def tracked(self) -> int:
        """How many (target, signal) pairs are currently not healthy (for tests/metrics)."""
        return len(self._streaks)
