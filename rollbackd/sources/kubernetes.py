"""The ``pod_health`` source: crash loops and stuck pods of a fresh rollout, from the API server.

Every ``interval`` the poller looks at the Deployments whose newest rollout
began inside their change window (the only ones a pod problem could roll
back), at the Argo Rollouts whose canary did (its pods are judged, the
stable ones once it is aborted), and at those it already tracks, and judges
their current ReplicaSet's pods with :func:`rollbackd.podhealth.judge_pods`.
The pods come from the watch cache, which keeps each pod as its
ReplicaSet's name or, when it has trouble, the fields judged
(:mod:`rollbackd.kube.podrecord`): no API call per Deployment, so a
fleet-wide rollout costs the API server nothing more. While the pod watch is
not current (failing, relisting) the cache's view may be old, so each target's
pods are listed by selector instead (a few at a time), as fresh as a look
can be; a list that fails is no data for that target.

Per target, like the Prometheus poller: ``for_count`` consecutive breaches
emit FIRING (repeated with the same key while the breach lasts), a healthy
look after FIRING emits RESOLVED, no data (a failed list, no pods) while
firing emits NO_DATA once and is never a trigger. A streak belongs to one
ReplicaSet: when the current ReplicaSet changes (a rollback, a new deploy)
the old streak resolves and the new ReplicaSet is judged afresh, so an
anomaly of the restored revision starts after it, not before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from rollbackd.argo import serving_replicaset
from rollbackd.config.types import ANNOTATION_CHANGE_WINDOW
from rollbackd.loopslice import LoopSlices
from rollbackd.model import (
    ClusterFacts,
    RevisionInfo,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.podhealth import POD_HEALTH, PodRules, judge_pods, judge_replicaset_pods
from rollbackd.signals import Evaluation, Verdict
from rollbackd.sources.polled import polled_signal
from rollbackd.sources.streak import Streak, advance

__all__ = ["PodHealthPoller", "PodSource", "Subject", "recent_rollouts", "subject_of"]

log = structlog.get_logger(__name__)

# Pod lists in flight at once: a burst of rollouts must not flood the API server.
CONCURRENT_LISTS = 8
_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


class PodSource(Protocol):
    """What the poller needs from the Kubernetes adapter."""

    def cached_deployments(self) -> list[tuple[tuple[str, str], dict[str, Any]]]: ...

    def rollout_targets(self) -> list[Target]:
        """The cached Argo Rollouts (none when Rollouts are not served)."""
        ...

    def facts(self, target: Target, *, now: datetime) -> ClusterFacts: ...

    def pods_watched(self) -> bool:
        """True while the watch cache's pods are current."""
        ...

    async def replicaset_pods(
        self, wanted: set[tuple[str, str]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The watched pods of each (namespace, ReplicaSet name), as pod JSON."""
        ...

    async def current_pods(self, target: Target) -> list[dict[str, Any]]:
        """The target's pods, listed now."""
        ...


async def recent_rollouts(
    source: PodSource,
    now: datetime,
    window_of: Callable[[Target, Mapping[str, str]], timedelta],
    default_window: timedelta,
) -> dict[Target, Subject]:
    """Deployments whose newest rollout began inside their change window (and Argo Rollouts
    whose canary did), each with what its look judges.

    A cheap first pass over the cached Deployments (the Progressing
    condition's lastUpdateTime, compared as RFC 3339 text) costs one string
    comparison for a Deployment untouched for long; the few left get their
    facts computed. After a fleet-wide rollout none is cheap (a Deployment's
    facts compare its templates, a fraction of a millisecond each), so the
    scan yields to the event loop by the clock, not by a count: a thousand
    Deployments between yields held the loop, and every webhook answer, for
    half a second on a busy machine. The facts are computed once per cycle:
    the look reads the subject taken from them here.
    """
    cutoff = (now - default_window).strftime(_RFC3339)
    found: dict[Target, Subject] = {}
    slices = LoopSlices()
    for (namespace, name), deployment in source.cached_deployments():
        await slices.pause_if_due()
        annotations = (deployment.get("metadata") or {}).get("annotations") or {}
        touched = _progressing_updated(deployment)
        if touched is not None and touched < cutoff and ANNOTATION_CHANGE_WINDOW not in annotations:
            continue
        target = Target(namespace, name)
        facts = source.facts(target, now=now)
        started = facts.rollout_started_at
        if started is not None and now - started <= window_of(target, facts.annotations):
            found[target] = subject_of(facts)
    return found | _recent_canaries(source, now, window_of)


def _recent_canaries(
    source: PodSource, now: datetime, window_of: Callable[[Target, Mapping[str, str]], timedelta]
) -> dict[Target, Subject]:
    """Argo Rollouts whose canary (not aborted) started inside their change window."""
    found = {}
    for target in source.rollout_targets():
        facts = source.facts(target, now=now)
        canary = facts.rollout
        judged = serving_replicaset(canary) if canary is not None and not canary.aborted else None
        if judged is not None and now - judged.created_at <= window_of(target, facts.annotations):
            found[target] = subject_of(facts)
    return found


def subject_of(facts: ClusterFacts) -> Subject:
    """What a look at ``facts.target`` judges: its current ReplicaSet (a Rollout's canary,
    its stable once aborted) and when that rollout began."""
    current = facts.revisions[0] if facts.revisions else None
    started = facts.rollout_started_at
    if facts.rollout is not None:
        current = serving_replicaset(facts.rollout)
        started = current.created_at if current is not None else None
    if current is None or started is None:
        return Subject(facts.target, None, None)
    # Held for the whole cycle, for every recent rollout: not its template.
    return Subject(facts.target, replace(current, template={}, images=()), started)


def _progressing_updated(deployment: Mapping[str, Any]) -> str | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing":
            updated = condition.get("lastUpdateTime")
            return str(updated) if updated else None
    return None


@dataclass(frozen=True)
class Subject:
    """One target's look: its judged ReplicaSet and when its rollout began (None: unknown)."""

    target: Target
    replicaset: RevisionInfo | None
    started: datetime | None

    @property
    def pods_key(self) -> tuple[str, str] | None:
        """(namespace, ReplicaSet name): where the cache keeps its pods."""
        if self.replicaset is None or self.started is None:
            return None
        return self.target.namespace, self.replicaset.replicaset


def _unknown(target: Target) -> tuple[str, Evaluation]:
    why = "pod_health: the current revision's rollout start is not known"
    return "", Evaluation(target, POD_HEALTH, Verdict.NO_DATA, None, 0.0, why)


@dataclass
class _Streak(Streak):
    replicaset: str = ""  # a streak belongs to one ReplicaSet


class PodHealthPoller:
    """Turns periodic pod looks into FIRING / RESOLVED / NO_DATA ``pod_health`` Signals."""

    def __init__(
        self,
        source: PodSource,
        *,
        rules: PodRules,
        for_count: int,
        interval: float,
        window_of: Callable[[Target, Mapping[str, str]], timedelta],
        default_window: timedelta,
        emit: Callable[[Signal], Awaitable[object]],
        clock: Callable[[], datetime],
        on_error: Callable[[Target, Exception], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._source = source
        self._rules = rules
        self._for_count = for_count
        self._interval = interval
        self._window_of = window_of
        self._default_window = default_window
        self._emit = emit
        self._clock = clock
        self._on_error = on_error
        self._streaks: dict[Target, _Streak] = {}

    @property
    def tracked(self) -> int:
        """Targets whose pods are not healthy (pending or firing)."""
        return len(self._streaks)

    async def evaluate_once(self) -> list[Signal]:
        """One cycle: list, judge, update streaks, emit and return the signals produced."""
        now = self._clock()
        recent = await recent_rollouts(self._source, now, self._window_of, self._default_window)
        targets = sorted(set(recent) | set(self._streaks))
        subjects = [
            recent.get(target) or subject_of(self._source.facts(target, now=now))
            for target in targets
        ]
        looks = await self._look_all(subjects, now)
        signals: list[Signal] = []
        for target, (replicaset, evaluation) in zip(targets, looks, strict=True):
            signals += self._step(target, replicaset, evaluation, now)
        for signal in signals:
            try:
                await self._emit(signal)
            except Exception:
                log.exception("pod_health_emit_failed", key=signal.key)
        return signals

    async def _look_all(
        self, subjects: list[Subject], now: datetime
    ) -> list[tuple[str, Evaluation]]:
        """Every subject's look, in order: from the watched pods, or listed when they are stale."""
        if self._source.pods_watched():
            return await self._look_watched(subjects, now)
        if subjects:
            log.info(
                "pod_health_listing_pods", why="the pod watch is not current", targets=len(subjects)
            )
        return await self._look_listed(subjects, now)

    async def _look_watched(
        self, subjects: list[Subject], now: datetime
    ) -> list[tuple[str, Evaluation]]:
        """Each subject judged on the cached pods of its ReplicaSet (no API call)."""
        wanted = {s.pods_key for s in subjects if s.pods_key is not None}
        pods = await self._source.replicaset_pods(wanted)
        looks = []
        slices = LoopSlices()
        for subject in subjects:
            await slices.pause_if_due()
            if subject.replicaset is None or subject.started is None or subject.pods_key is None:
                looks.append(_unknown(subject.target))
                continue
            evaluation = judge_replicaset_pods(
                subject.target,
                subject.replicaset,
                pods.get(subject.pods_key, []),
                rollout_started_at=subject.started,
                now=now,
                rules=self._rules,
            )
            looks.append((subject.replicaset.replicaset, evaluation))
        return looks

    async def _look_listed(
        self, subjects: list[Subject], now: datetime
    ) -> list[tuple[str, Evaluation]]:
        """Every subject's look from a fresh list, in order, ``CONCURRENT_LISTS`` at a time.

        A fixed set of workers, not a task per target: after a fleet-wide
        rollout every Deployment is recent, and 10 000 tasks each waiting for
        a list slot held the event loop for seconds and tens of MB at once.
        """
        looks: list[tuple[str, Evaluation] | None] = [None] * len(subjects)
        pending = iter(enumerate(subjects))

        async def worker() -> None:
            for index, subject in pending:
                looks[index] = await self._look_listed_one(subject, now)

        await asyncio.gather(*(worker() for _ in range(min(CONCURRENT_LISTS, len(subjects)))))
        return [look for look in looks if look is not None]

    async def _look_listed_one(self, subject: Subject, now: datetime) -> tuple[str, Evaluation]:
        """The current ReplicaSet's name and its listed pods' verdict (NO_DATA when unknown)."""
        target, current = subject.target, subject.replicaset
        if current is None or subject.started is None:
            return _unknown(target)
        try:
            pods = await self._source.current_pods(target)
        except Exception as exc:
            # The API server down or refusing: no data for this look, never health.
            log.warning("pod_health_list_failed", target=str(target), error=str(exc))
            if self._on_error is not None:
                self._on_error(target, exc)
            why = f"pod_health: listing pods failed: {exc}"
            return current.replicaset, Evaluation(
                target, POD_HEALTH, Verdict.NO_DATA, None, 0.0, why
            )
        evaluation = judge_pods(
            target, current, pods, rollout_started_at=subject.started, now=now, rules=self._rules
        )
        return current.replicaset, evaluation

    def _step(
        self, target: Target, replicaset: str, evaluation: Evaluation, now: datetime
    ) -> list[Signal]:
        out: list[Signal] = []
        streak = self._streaks.get(target)
        if streak is not None and replicaset and streak.replicaset != replicaset:
            # Another ReplicaSet is current: the old one's anomaly is over.
            del self._streaks[target]
            if streak.firing:
                moved = f"pod_health: ReplicaSet {streak.replicaset} is no longer current"
                out.append(self._signal(SignalStatus.RESOLVED, target, streak, moved, now))
        current, status = advance(
            self._streaks,
            target,
            evaluation.verdict,
            now=now,
            for_count=self._for_count,
            new=lambda: _Streak(replicaset=replicaset),
            report_pending_no_data=False,
        )
        if current is not None and status is not None:
            firing = status is SignalStatus.FIRING
            out.append(
                self._signal(
                    status,
                    target,
                    current,
                    evaluation.detail,
                    now,
                    value=evaluation.value if firing else None,
                    threshold=evaluation.threshold if firing else None,
                )
            )
        return out

    @staticmethod
    def _signal(
        status: SignalStatus,
        target: Target,
        streak: _Streak,
        detail: str,
        now: datetime,
        *,
        value: float | None = None,
        threshold: float | None = None,
    ) -> Signal:
        return polled_signal(
            source=SignalSource.KUBERNETES,
            target=target,
            name=POD_HEALTH,
            status=status,
            started_at=streak.started_at or now,
            now=now,
            key_base=f"kube:{target}:{POD_HEALTH}:{streak.replicaset}",
            value=value,
            threshold=threshold,
            labels={
                "namespace": target.namespace,
                "deployment": target.name,
                "replicaset": streak.replicaset,
            },
            summary=detail,
        )

    async def run(self) -> None:
        """Look every ``interval`` until cancelled; a bad cycle is only logged."""
        while True:
            try:
                await self.evaluate_once()
            except Exception:
                log.exception("pod_health_cycle_failed")
            await asyncio.sleep(self._interval)
