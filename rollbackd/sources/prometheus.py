"""Prometheus poller: rollbackd's own eyes on the signals, independent of alert rules.

Every ``interval`` the poller runs each signal's query once for all targets
(``signalquery.judge_spec``) and keeps a small state per (target, signal):

- BREACH counts consecutive breaching cycles; at ``for_count`` it emits
  FIRING, and repeats FIRING with the same key every cycle while breaching
  (the daemon dedupes by key; a restarted daemon still hears it).
- HEALTHY after FIRING emits RESOLVED once; a pending streak just resets.
- NO_DATA (failed query, empty, NaN, low traffic) while pending or firing
  emits NO_DATA once per streak, never a trigger. A pending streak resets:
  "for" means consecutive observed breaches. A firing state survives so the
  anomaly keeps its start time if the breach is still there afterwards.

State is kept only for targets that are not healthy, and a cycle looks only
at those and at the targets breaching now (one comparison per target, no
object per healthy target), so its cost on the event loop follows the
number of troubled targets, not the fleet. Answers are folded on the event
loop in short slices (``PromQL.query_vector``). A signal's traffic query
runs only in a cycle where one of its values breaches or a target is
tracked (``judge_spec``'s ``tracked``): a healthy fleet costs one query per
signal.

Polls run on a grid placed just after Prometheus's scrapes land
(``pollgrid``), relearnt every few minutes, so a breach is read a fraction of
a second after its scrape instead of half an interval later on average.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from rollbackd.durations import parse_prometheus_duration
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL
from rollbackd.model import Signal, SignalSource, SignalStatus, Target
from rollbackd.promql import PromQL, PromQLError
from rollbackd.signalquery import judge_spec
from rollbackd.signals import Evaluation, Judgement, SignalSpec, Verdict
from rollbackd.sources.polled import polled_signal
from rollbackd.sources.pollgrid import PollGrid, best_phase
from rollbackd.sources.streak import Streak, advance

__all__ = ["PrometheusPoller"]

log = structlog.get_logger(__name__)

# How often the scrape phase is relearnt (targets come and go, Prometheus restarts),
# and how soon a failed attempt is retried once a phase is known.
PHASE_RELEARN_SECONDS = 300.0
PHASE_RETRY_SECONDS = 60.0

# (namespace, deployment, signal name)
_Key = tuple[str, str, str]


@dataclass
class _PolledStreak(Streak):
    # How far back the first breaching look's evidence may reach (Signal.evidence_since).
    evidence_since: datetime | None = None


class PrometheusPoller:
    """Turns periodic signal evaluations into FIRING / RESOLVED / NO_DATA Signals."""

    def __init__(
        self,
        promql: PromQL,
        specs: Sequence[SignalSpec],
        *,
        interval: float,
        emit: Callable[[Signal], Awaitable[object]],
        clock: Callable[[], datetime],
        on_query_error: Callable[[str, Exception], None] | None = None,
        on_cycle: Callable[[str], None] | None = None,
        align_to_scrapes: bool = True,
        deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._promql = promql
        self._specs = {spec.name: spec for spec in specs}
        self._interval = interval
        self._emit = emit
        self._clock = clock
        self._on_query_error = on_query_error
        self._on_cycle = on_cycle
        self._last_cycle_degraded = False
        self._align = align_to_scrapes
        self._deployment_label = deployment_label
        self._grid = PollGrid(interval)
        self._next_phase_learning = 0.0  # monotonic time
        self._streaks: dict[_Key, _PolledStreak] = {}
        self._windows = {spec.name: parse_prometheus_duration(spec.window) for spec in specs}
        # When each signal's query last answered: a breach first seen then is
        # new since that look; one with no look just before it may be old.
        self._judged_at: dict[str, datetime] = {}

    async def _judge_all(self) -> tuple[dict[str, Judgement], dict[str, Exception]]:
        specs = list(self._specs.values())
        outcomes = await asyncio.gather(
            *(
                judge_spec(
                    self._promql,
                    spec,
                    deployment_label=self._deployment_label,
                    tracked={
                        (ns, name) for ns, name, signal in self._streaks if signal == spec.name
                    },
                )
                for spec in specs
            ),
            return_exceptions=True,
        )
        judgements: dict[str, Judgement] = {}
        failed: dict[str, Exception] = {}
        for spec, outcome in zip(specs, outcomes, strict=True):
            if isinstance(outcome, PromQLError):
                failed[spec.name] = outcome
                if self._on_query_error is not None:
                    self._on_query_error(spec.name, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # a bug, not an outage: the cycle fails loudly
            else:
                judgements[spec.name] = outcome
        return judgements, failed

    async def evaluate_once(self) -> list[Signal]:
        """One cycle: query, update streaks, emit and return the signals produced."""
        now = self._clock()
        judgements, failed = await self._judge_all()
        self._last_cycle_degraded = bool(failed)
        # Only tracked targets and those breaching now can change state.
        keys: set[_Key] = set(self._streaks)
        for name, judgement in judgements.items():
            keys.update(
                (namespace, deployment, name) for namespace, deployment in judgement.breaching()
            )
        signals: list[Signal] = []
        for key in sorted(keys):
            signal = self._step(key, self._evaluation(key, judgements, failed), now)
            if signal is not None:
                signals.append(signal)
        for name in self._specs:
            if name in judgements:
                self._judged_at[name] = now
            else:
                self._judged_at.pop(name, None)
        for signal in signals:
            try:
                await self._emit(signal)
            except Exception:
                # One rejected signal must not hide the others.
                log.exception("poller_emit_failed", key=signal.key)
        return signals

    def _evaluation(
        self, key: _Key, judgements: dict[str, Judgement], failed: dict[str, Exception]
    ) -> Evaluation:
        namespace, deployment, name = key
        judgement = judgements.get(name)
        if judgement is not None and (namespace, deployment) in judgement.targets():
            return judgement.evaluation((namespace, deployment))
        # A tracked target missing from this cycle's results counts as no data.
        why = f"query failed: {failed[name]}" if name in failed else "no series"
        threshold = self._specs[name].threshold
        return Evaluation(
            Target(namespace, deployment), name, Verdict.NO_DATA, None, threshold, why
        )

    def _step(self, key: _Key, evaluation: Evaluation, now: datetime) -> Signal | None:
        spec = self._specs[key[2]]
        streak, status = advance(
            self._streaks,
            key,
            evaluation.verdict,
            now=now,
            for_count=spec.for_count,
            new=_PolledStreak,
        )
        if streak is not None and streak.started_at == now and streak.breaches == 1:
            streak.evidence_since = self._evidence_since(spec.name, now)
        if streak is None or status is None:
            return None
        return self._signal(status, spec, evaluation, streak, now)

    def _evidence_since(self, name: str, now: datetime) -> datetime:
        """How far back a first breaching look's samples may reach.

        Its query judged a whole window. After a healthy look, what is new is
        the samples since that look, which count requests from up to one
        interval before it; with no look just before (the first cycle after
        taking the Lease or an outage), the whole window may be old.
        """
        since = now - self._windows[name]
        judged = self._judged_at.get(name)
        if judged is not None:
            since = max(since, judged - timedelta(seconds=self._interval))
        return since

    @staticmethod
    def _signal(
        status: SignalStatus,
        spec: SignalSpec,
        evaluation: Evaluation,
        streak: _PolledStreak,
        now: datetime,
    ) -> Signal:
        target = evaluation.target
        return polled_signal(
            source=SignalSource.PROMETHEUS,
            target=target,
            name=spec.name,
            status=status,
            started_at=streak.started_at or now,
            now=now,
            key_base=f"prom:{target}:{spec.name}",
            value=evaluation.value,
            threshold=spec.threshold,
            labels={"namespace": target.namespace, "deployment": target.name},
            summary=evaluation.detail,
            evidence_since=streak.evidence_since,
        )

    async def run(self) -> None:
        """Poll until cancelled, on the scrape-aligned grid; a bad cycle is only logged."""
        while True:
            started = time.time()
            try:
                await self.evaluate_once()
                result = "degraded" if self._last_cycle_degraded else "ok"
            except Exception:
                log.exception("poller_cycle_failed")
                result = "failed"
            if self._on_cycle is not None:
                # Counted cycles let operators (and tests) see the poller is alive.
                self._on_cycle(result)
            if self._align:
                await self._learn_phase()
            tick = self._grid.next_tick(time.time(), started)
            # Clamped: a wall clock stepped backwards must not stall the poller.
            await asyncio.sleep(min(max(0.0, tick - time.time()), 2 * self._interval))

    async def _learn_phase(self) -> None:
        now = time.monotonic()
        if now < self._next_phase_learning:
            return
        try:
            landings = await self._promql.scrape_landings()
        except PromQLError as exc:
            landings = []
            log.debug("poll_phase_unknown", error=str(exc))
        phase = best_phase(landings, self._interval)
        if phase is None:
            # Nothing scraped yet, or Prometheus is down. Never learnt: ask
            # again after the next cycle. Learnt before: keep that grid a while.
            if self._next_phase_learning > 0:
                self._next_phase_learning = now + PHASE_RETRY_SECONDS
            return
        self._next_phase_learning = now + PHASE_RELEARN_SECONDS
        self._grid.align(phase)
        log.info(
            "poll_phase_aligned", targets=len(landings), phase=round(self._grid.phase or 0.0, 3)
        )

    @property
    def tracked(self) -> int:
        """How many (target, signal) pairs are currently not healthy (for tests/metrics)."""
        return len(self._streaks)
