"""Adapters between stages: the executor's pager and recorder, the configured channels.

Small, one concern each, so the daemon only wires them: the executor sees a
``Pager`` and a ``Recorder`` protocol, not the notifier or the journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from rollbackd.approval import Approvals
from rollbackd.assertions import AssertionChecker, kube_annotations
from rollbackd.config import Settings
from rollbackd.dispatch import Dispatcher
from rollbackd.escalation import Escalations, GroupingPolicy
from rollbackd.executor import Executor
from rollbackd.intake import SignalIntake
from rollbackd.journal import Journal
from rollbackd.kube import Kube
from rollbackd.metrics import Metrics
from rollbackd.model import Phase, Policy, Rollback, Target
from rollbackd.notify.base import Notification, NotificationKind, Notifier
from rollbackd.notify.configured import (
    annotations_of,
    build_channels,
    lead_check_interval,
    watched_target_facts,
)
from rollbackd.notify.escalated import EscalatedLedger
from rollbackd.notify.reescalate import LeadEscalation
from rollbackd.notify.routing import Router, routes_from_settings
from rollbackd.notify.stale import RollbackStateOf
from rollbackd.promql import PromQL
from rollbackd.signalquery import evaluate_specs
from rollbackd.signals import Evaluation, SignalSpec
from rollbackd.smoke_transport import smoke_checker
from rollbackd.sources.alertmanager import TargetMapping
from rollbackd.state import RollbackState, recorded_state
from rollbackd.verify import Verifier

__all__ = [
    "JournalRecorder",
    "NotifierPager",
    "Pipeline",
    "build_channels",
    "build_pipeline",
    "lead_check_interval",
    "readiness",
    "scrape_interval",
    "target_evaluator",
    "watched_rollback_state",
    "watched_target_facts",
]

DEFAULT_SCRAPE_INTERVAL = timedelta(seconds=15)

log = structlog.get_logger("rollbackd.stages")


def _severity(kind: NotificationKind) -> str:
    # An approval request needs a human as much as an escalation does.
    urgent = kind in (NotificationKind.ESCALATION, NotificationKind.APPROVAL_REQUESTED)
    return "critical" if urgent else "info"


class NotifierPager:
    """The executor's view of the pager: durable in the outbox, keyed by rollback id."""

    def __init__(self, notifier: Notifier, clock: Callable[[], datetime]) -> None:
        self._notifier = notifier
        self._clock = clock

    async def notify(
        self,
        kind: NotificationKind,
        rollback: Rollback,
        summary: str,
        details: Mapping[str, Any],
    ) -> None:
        await self._notifier.enqueue(
            Notification(
                kind=kind,
                severity=_severity(kind),  # type: ignore[arg-type]
                dedup_key=rollback.id,
                target=rollback.target,
                summary=summary,
                details={
                    "rollback_id": rollback.id,
                    "phase": str(rollback.phase),
                    "from_revision": rollback.from_revision,
                    "to_revision": rollback.to_revision,
                    **details,
                },
                created_at=self._clock(),
                # A rollback that stepped back for a human closes its page too.
                resolves=kind
                in (
                    NotificationKind.ROLLBACK_COMPLETED,
                    NotificationKind.SUPERSEDED,
                    NotificationKind.REJECTED,
                ),
            )
        )


class JournalRecorder:
    """The executor's view of the record: journal, metrics and logs for every step."""

    def __init__(
        self,
        journal: Journal,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._clock = clock
        # Who else follows phase changes (the dispatcher's in-flight view);
        # set once it exists, so nothing refers to a collaborator not yet built.
        self.on_phase: Callable[[Rollback], None] = lambda _: None

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        now = self._clock()
        self.on_phase(rollback)
        await self._journal.save_phase(rollback, message, at=now, data=data)
        log.info(
            "rollback_phase",
            rollback_id=rollback.id,
            target=str(rollback.target),
            phase=str(rollback.phase),
            message=message,
        )
        if rollback.phase in (
            Phase.ROLLBACK_COMPLETED,
            Phase.ROLLBACK_FAILED,
            Phase.SUPERSEDED,
            Phase.REJECTED,
        ):
            self._metrics.rollbacks_total.labels(result=str(rollback.phase)).inc()
            self._metrics.rollback_duration_seconds.observe(
                (now - rollback.started_at).total_seconds()
            )

    async def event(
        self,
        rollback: Rollback,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        await self._journal.record_event(
            rollback.id, rollback.target, kind, message, at=self._clock(), data=data
        )
        log.info(
            "rollback_event",
            rollback_id=rollback.id,
            target=str(rollback.target),
            kind=kind,
            message=message,
        )


@dataclass(frozen=True)
class Pipeline:
    intake: SignalIntake
    verifier: Verifier
    executor: Executor
    dispatcher: Dispatcher
    lead_escalation: LeadEscalation
    approvals: Approvals


def build_pipeline(
    settings: Settings,
    *,
    journal: Journal,
    kube: Kube,
    promql: PromQL,
    notifier: Notifier,
    metrics: Metrics,
    clock: Callable[[], datetime],
    scrape_interval: timedelta,
    target_known: Callable[[Target], bool | None],
    policy_for_target: Callable[[Target], Policy],
) -> Pipeline:
    """Intake -> dispatcher -> executor, each built before anything refers to it."""
    s = settings
    intake = SignalIntake(
        journal=journal,
        metrics=metrics,
        mapping=TargetMapping(
            namespace_labels=tuple(s.targets.namespace_labels),
            deployment_labels=tuple(s.targets.deployment_labels),
            pod_labels=tuple(s.targets.pod_labels),
        ),
        resolve_pod=kube.resolve_pod,
        target_known=target_known,
        clock=clock,
    )
    verifier = Verifier(
        target_evaluator(promql, s.prometheus.signal_specs(), s.prometheus.deployment_label),
        kube.readiness,
        scrape_interval=scrape_interval,
        intervals=s.verify.intervals,
        max_inconclusive=s.verify.max_inconclusive,
        clock=clock,
        sleep=asyncio.sleep,
        timeout=s.verify.timeout.total_seconds(),
        require_endpoints=s.verify.require_endpoints,
        smoke=smoke_checker(s.verify, kube).run,
        assertions=AssertionChecker(
            s.verify.assertions,
            promql.query,
            kube_annotations(kube),
            deployment_label=s.prometheus.deployment_label,
        ).run,
    )
    recorder = JournalRecorder(journal, metrics, clock)
    approvals = Approvals()
    executor = Executor(
        kube,
        verifier,
        recorder,
        NotifierPager(notifier, clock),
        rollout_timeout=s.rollout.timeout.total_seconds(),
        clock=clock,
        policy_for=policy_for_target,
        approvals=approvals,
        approval_timeout=s.approval.timeout,
        approve_on_timeout=s.approval.on_timeout == "rollback",
        recorded=journal.get_rollback,
    )
    escalation = s.notify.escalation
    # Escalation pages are recorded on their Deployment, so a new leader knows them.
    ledger = EscalatedLedger(kube)
    notifier.on_delivered = ledger.delivered
    notifier.taken_elsewhere = ledger.taken
    dispatcher = Dispatcher(
        facts=lambda target, now: kube.facts(target, now=now),
        policy_for=lambda target, annotations: s.policy_for(target, annotations)[0],
        journal=journal,
        metrics=metrics,
        run_rollback=executor.run,
        escalations=Escalations(
            notifier,
            journal,
            GroupingPolicy(
                incident_window=escalation.incident_window,
                group_wait=escalation.group_wait,
                group_min=escalation.group_min,
            ),
            ledger=ledger,
        ),
        clock=clock,
    )
    recorder.on_phase = dispatcher.observe
    executor.on_withdrawn = dispatcher.redecide
    # A start page left in this journal's outbox by an earlier term is checked
    # against the Deployment before it goes out (a rollback another leader ended).
    notifier.rollback_state = watched_rollback_state(kube)
    # Each page goes to its Deployment's route, at the levels it is for.
    router = Router(routes_from_settings(s.notify), watched_target_facts(kube))
    routed = {name for route in router.routes for name in (*route.oncall, *route.lead)}
    if unrouted := [name for name in s.notify.channel_names() if name not in routed]:
        # Configured but named by no route: it will hear nothing; say so at start.
        log.warning("notify_channels_unrouted", channels=unrouted)
    notifier.route = ledger.route = router.channels_for
    lead = LeadEscalation(
        journal,
        notifier,
        route_for=router.route_for,
        annotations_of=annotations_of(kube),
        clock=clock,
        horizon=s.notify.max_age,
        interval=lead_check_interval(router.routes),
        soonest=min(
            (r.escalate_after for r in router.routes if r.lead and r.escalate_after),
            default=s.notify.max_age,
        ),
    )
    return Pipeline(intake, verifier, executor, dispatcher, lead, approvals)


def target_evaluator(
    promql: PromQL, specs: Sequence[SignalSpec], deployment_label: str
) -> Callable[[Target, str, datetime], Awaitable[list[Evaluation]]]:
    """Verification's view of the signals: one target's evaluations over a fresh window."""

    async def evaluate(target: Target, window: str, at: datetime) -> list[Evaluation]:
        found = await evaluate_specs(
            promql, specs, window=window, at=at, target=target, deployment_label=deployment_label
        )
        return [evaluation for (t, _), evaluation in found.items() if t == target]

    return evaluate


def watched_rollback_state(kube: Kube) -> RollbackStateOf:
    """The target's recorded rollback (a Deployment's or an Argo Rollout's), from the watch
    cache; None when it cannot tell."""

    def state_of(target: Target) -> RollbackState | None:
        if not kube.synced:
            return None
        recorded = kube.cached_deployment(target) or kube.cache.rollout(target)
        return None if recorded is None else recorded_state(recorded)

    return state_of


async def scrape_interval(promql: PromQL, configured: timedelta | None) -> timedelta:
    """The configured scrape interval, else Prometheus's own, else 15 s (said in the log)."""
    if configured is not None:
        return configured
    try:
        found = await promql.scrape_interval()
    except Exception as exc:
        log.warning("scrape_interval_unknown", error=str(exc))
        found = None
    if found is None:
        log.warning("scrape_interval_default", seconds=DEFAULT_SCRAPE_INTERVAL.total_seconds())
        return DEFAULT_SCRAPE_INTERVAL
    return found


def readiness(
    *, synced: bool, elected: bool, problem: str | None, holder: str | None, leader: bool
) -> tuple[bool, str]:
    """Every healthy replica is Ready; the leader label, not readiness, routes webhooks.

    A standby that could take over is as ready as the leader; a Lease that
    cannot be used as configured makes every replica unready, saying why.
    """
    if not synced:
        return False, "kubernetes watches not synced"
    if not elected:
        return True, "ok"
    if problem is not None:
        return False, f"leader election cannot work: {problem}"
    if leader:
        return True, "ok: leader"
    return True, f"standby: following {holder}" if holder else "standby: leader not known yet"
