"""Wiring: build every stage from Settings, run them, stop them in order.

Lifecycle, in order: journal -> Kubernetes watches -> HTTP server (webhooks
are accepted from here on) -> leadership -> (as leader) resume rollbacks in
flight, start the dispatcher and the Prometheus poller. Shutdown is the
reverse; a rollback cut short keeps its phase annotation, so whoever leads
next resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import signal as signal_module
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from rollbackd.config import Settings
from rollbackd.dispatch import Dispatcher, annotated_rollback
from rollbackd.errors import NotLeaderError
from rollbackd.escalation import Escalations, GroupingPolicy
from rollbackd.executor import Executor
from rollbackd.intake import SignalIntake
from rollbackd.journal import Journal
from rollbackd.kube import Kube
from rollbackd.leader_label import LeaderLabel
from rollbackd.logs import configure_logging
from rollbackd.metrics import Metrics
from rollbackd.model import (
    ANNOTATION_ROLLBACK,
    Decision,
    Phase,
    Policy,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.notify.base import Channel, Notification, NotificationKind, Notifier
from rollbackd.promql import PromQL
from rollbackd.retention import Retention
from rollbackd.server import AuthSettings, create_app
from rollbackd.signals import Evaluation, evaluate_specs
from rollbackd.sources.alertmanager import TargetMapping
from rollbackd.sources.prometheus import PrometheusPoller
from rollbackd.state import decode_state
from rollbackd.verify import Verifier

log = structlog.get_logger("rollbackd.daemon")

DEFAULT_SCRAPE_INTERVAL = timedelta(seconds=15)
SHUTDOWN_GRACE_SECONDS = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def _severity(kind: NotificationKind) -> str:
    return "critical" if kind is NotificationKind.ESCALATION else "info"


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
                resolves=kind in (NotificationKind.ROLLBACK_COMPLETED, NotificationKind.SUPERSEDED),
            )
        )


class JournalRecorder:
    """The executor's view of the record: journal, metrics and logs for every step."""

    def __init__(
        self,
        journal: Journal,
        metrics: Metrics,
        clock: Callable[[], datetime],
        on_phase: Callable[[Rollback], None] = lambda _: None,
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._clock = clock
        self._on_phase = on_phase

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        now = self._clock()
        self._on_phase(rollback)
        await self._journal.save_rollback(rollback, details=data)
        await self._journal.record_event(
            rollback.id,
            rollback.target,
            f"phase:{rollback.phase}",
            message,
            at=now,
            data=data,
        )
        log.info(
            "rollback_phase",
            rollback_id=rollback.id,
            target=str(rollback.target),
            phase=str(rollback.phase),
            message=message,
        )
        if rollback.phase in (Phase.ROLLBACK_COMPLETED, Phase.ROLLBACK_FAILED, Phase.SUPERSEDED):
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


def build_channels(settings: Settings) -> list[Channel]:
    """Instantiate the configured notification channels (all optional)."""
    from rollbackd.notify.alertmanager import AlertmanagerPushChannel
    from rollbackd.notify.pagerduty import PagerDutyChannel
    from rollbackd.notify.slack import SlackChannel
    from rollbackd.notify.webhook import WebhookChannel

    notify = settings.notify
    report_url = (
        f"{str(notify.report_base_url).rstrip('/')}/api/v1/rollbacks/{{rollback_id}}/report"
        if notify.report_base_url
        else None
    )
    channels: list[Channel] = []
    if notify.pagerduty is not None:
        channels.append(
            PagerDutyChannel(
                notify.pagerduty.routing_key_value(),
                url=str(notify.pagerduty.url),
                report_url_template=report_url,
            )
        )
    if notify.alertmanager is not None:
        channels.append(
            AlertmanagerPushChannel(str(notify.alertmanager.url), report_url_template=report_url)
        )
    if notify.slack is not None:
        channels.append(
            SlackChannel(notify.slack.webhook_url_value(), report_url_template=report_url)
        )
    if notify.webhook is not None:
        headers = dict(notify.webhook.headers)
        token = notify.webhook.bearer_token_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        channels.append(WebhookChannel(str(notify.webhook.url), headers=headers))
    return channels


@dataclass
class Daemon:
    """One rollbackd process. ``start`` returns once the HTTP server listens."""

    settings: Settings
    clock: Callable[[], datetime] = utcnow
    metrics: Metrics = field(default_factory=Metrics)
    # One-shot mode (`rollbackd rollback`): no HTTP server, no leadership, no poller.
    one_shot: bool = False

    def __post_init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._active_tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._leader = False
        self.url = ""

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.journal = await Journal.open(s.journal.path, synchronous=s.journal.synchronous)
        self.kube = await Kube.connect(kubeconfig=s.cluster.kubeconfig, context=s.cluster.context)
        await self.kube.start_watches(list(s.cluster.namespaces) or None)
        token = s.prometheus.bearer_token_value()
        self.promql = PromQL(
            str(s.prometheus.url),
            timeout=s.prometheus.timeout.total_seconds(),
            attempts=s.prometheus.attempts,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        self.specs = list(s.prometheus.signal_specs())
        # Pages go through the journal's outbox; only the leader sends them.
        self.notifier = Notifier(
            build_channels(s),
            journal=self.journal,
            on_result=self._on_notification_result,
            metrics=self.metrics,
            max_age=s.notify.max_age,
            failover_after=s.notify.failover_after,
            initial_backoff=s.notify.backoff_initial.total_seconds(),
            max_backoff=s.notify.backoff_max.total_seconds(),
            clock=self.clock,
        )
        self.intake = SignalIntake(
            journal=self.journal,
            metrics=self.metrics,
            mapping=TargetMapping(
                namespace_labels=tuple(s.targets.namespace_labels),
                deployment_labels=tuple(s.targets.deployment_labels),
                pod_labels=tuple(s.targets.pod_labels),
            ),
            resolve_pod=self.kube.resolve_pod,
            target_known=self._target_known,
            clock=self.clock,
        )
        self.scrape_interval = await self._scrape_interval()
        self.verifier = Verifier(
            self._evaluate_target,
            self.kube.readiness,
            scrape_interval=self.scrape_interval,
            intervals=s.verify.intervals,
            clock=self.clock,
            sleep=asyncio.sleep,
            timeout=s.verify.timeout.total_seconds(),
            require_endpoints=s.verify.require_endpoints,
        )
        self.executor = Executor(
            self.kube,
            self.verifier,
            JournalRecorder(
                self.journal,
                self.metrics,
                self.clock,
                on_phase=lambda r: self.dispatcher.observe(r),
            ),
            NotifierPager(self.notifier, self.clock),
            rollout_timeout=s.rollout.timeout.total_seconds(),
            clock=self.clock,
            policy_for=self._policy_for_target,
        )
        self.dispatcher = Dispatcher(
            facts=lambda target, now: self.kube.facts(target, now=now),
            policy_for=lambda target, annotations: s.policy_for(target, annotations)[0],
            journal=self.journal,
            metrics=self.metrics,
            run_rollback=self.executor.run,
            escalations=Escalations(
                self.notifier,
                self.journal,
                GroupingPolicy(
                    incident_window=s.notify.escalation.incident_window,
                    group_wait=s.notify.escalation.group_wait,
                    group_min=s.notify.escalation.group_min,
                ),
            ),
            clock=self.clock,
        )
        if self.one_shot:
            await self.kube.wait_synced(timeout=60)
            await self.notifier.start()
            return
        app = create_app(
            alert_sink=self.intake,
            journal=self.journal,
            metrics=self.metrics,
            readiness=self._readiness,
            auth=AuthSettings.from_webhook(s.webhook),
            max_body_bytes=s.webhook.max_body_bytes,
            body_timeout=s.webhook.body_timeout.total_seconds(),
            manual_rollback=self.request_rollback,
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Hostile clients must not take the descriptors the executor and pager need.
        from rollbackd.serving import fd_budget, install_accept_error_limiter, start_site

        install_accept_error_limiter(asyncio.get_running_loop())
        _site, bound_host, bound_port = await start_site(
            self._runner,
            s.webhook.host,
            s.webhook.port,
            max_connections=fd_budget(s.webhook.max_connections),
            header_timeout=s.webhook.header_timeout.total_seconds(),
            metrics=self.metrics,
        )
        self.url = f"http://{bound_host}:{bound_port}"
        log.info("listening", url=self.url, scrape_interval=self.scrape_interval.total_seconds())
        retention = s.journal.retention
        self._tasks.append(
            asyncio.create_task(
                Retention(
                    self.journal,
                    max_age=retention.max_age,
                    max_bytes=retention.max_bytes,
                    interval=retention.interval,
                    clock=self.clock,
                    on_size=self.metrics.journal_bytes.set,
                ).run(),
                name="journal-retention",
            )
        )
        if s.leader_election.enabled:
            self._tasks.append(
                asyncio.create_task(
                    self._supervised("leader-election", self._campaign), name="leader-election"
                )
            )
        else:
            await self._become_leader()

    async def _campaign(self) -> None:
        le = self.settings.leader_election
        # Fencing (safety rule 13): a replica not sure it holds the Lease
        # writes nothing (the Kube client asks the fence) and pages nothing.
        self.notifier.gate = self.kube.fence.may_act
        # A label left by an earlier process in this pod must not draw webhooks.
        await self._leader_label().release()
        await self.kube.run_leader_election(
            namespace=le.namespace,
            lease_name=le.lease_name,
            identity=le.effective_identity(),
            # Lease.spec.leaseDurationSeconds is an integer.
            lease_duration=max(1, math.ceil(le.lease_duration.total_seconds())),
            renew_deadline=le.renew_deadline.total_seconds(),
            retry_period=le.retry_period.total_seconds(),
            on_started=self._become_leader,
            on_stopped=self._lose_leadership,
        )

    def _leader_label(self) -> LeaderLabel:
        """This replica's pod label (created on first use: start() does not know it)."""
        label: LeaderLabel | None = getattr(self, "_pod_label", None)
        if label is None:
            label = LeaderLabel.from_env(self.kube.api_client, self.kube.fence)
            self._pod_label = label
        return label

    async def _supervised(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` forever: a crash is logged and retried, never silently fatal."""
        delay = 1.0
        while True:
            try:
                await body()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background_task_failed", task=name, retry_in=delay)
                await self._lose_leadership()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        if self.one_shot:
            await self.dispatcher.stop(grace=SHUTDOWN_GRACE_SECONDS)
        if self.notifier.running:
            await self.notifier.drain(5.0)  # a clean stop sends what is due first
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._lose_leadership()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.notifier.stop()
        await self.kube.close()
        await self.journal.close()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- leadership ------------------------------------------------------------------

    async def _become_leader(self) -> None:
        if self._leader:
            return
        self._leader = True
        self.metrics.is_leader.set(1)
        log.info("leadership_acquired", term=str(self.kube.fence.term or "unfenced"))
        # The webhook Service selects the leader's pod by this label.
        await self._leader_label().claim()
        await self.kube.wait_synced(timeout=60)
        if not self.notifier.running:
            await self.notifier.start()  # pages left by an earlier leader go out now
        await self._resume_in_flight()
        # Accepted but undecided signals (an earlier process, or this one as a
        # follower) are read back from the journal before new ones are decided.
        self.intake.pending.request_reload()
        interval = self.settings.prometheus.poll_interval or self.scrape_interval
        poller = PrometheusPoller(
            self.promql,
            self.specs,
            interval=interval.total_seconds(),
            emit=self._emit_polled,
            clock=self.clock,
            on_query_error=self._on_query_error,
        )
        self._active_tasks = [
            asyncio.create_task(self.dispatcher.run(self.intake.pending), name="dispatcher"),
            asyncio.create_task(poller.run(), name="prometheus-poller"),
        ]

    async def _lose_leadership(self) -> None:
        if not self._leader:
            return
        self._leader = False
        self.metrics.is_leader.set(0)
        log.info("leadership_released")
        for task in self._active_tasks:
            task.cancel()
        for task in self._active_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._active_tasks = []
        # With a Lease, rollbacks in flight stop now: their annotation keeps
        # the phase and the next leader resumes them (a late step would only
        # be fenced). Alone, there is nobody to resume: give them the grace.
        grace = 0.0 if self.kube.fence.leased else SHUTDOWN_GRACE_SECONDS
        await self.dispatcher.stop(grace=grace)
        # Unsent pages stay in the outbox for whoever leads next.
        await self.notifier.stop()
        await self._leader_label().release()

    async def _resume_in_flight(self) -> None:
        """Continue rollbacks an earlier leader left mid-way (phase annotation)."""
        now = self.clock()
        for target in self.kube.targets():
            facts = self.kube.facts(target, now=now)
            rollback = annotated_rollback(facts)
            if rollback is None:
                continue
            state = decode_state(facts.annotations[ANNOTATION_ROLLBACK])
            log.info("resuming_rollback", target=str(target), rollback_id=rollback.id)
            self.dispatcher.adopt(rollback, functools.partial(self.executor.resume, target, state))

    # -- adapters between stages ---------------------------------------------------------

    async def _scrape_interval(self) -> timedelta:
        configured = self.settings.prometheus.scrape_interval
        if configured is not None:
            return configured
        try:
            found = await self.promql.scrape_interval()
        except Exception as exc:
            log.warning("scrape_interval_unknown", error=str(exc))
            found = None
        if found is None:
            log.warning("scrape_interval_default", seconds=DEFAULT_SCRAPE_INTERVAL.total_seconds())
            return DEFAULT_SCRAPE_INTERVAL
        return found

    async def _evaluate_target(self, target: Target, window: str, at: datetime) -> list[Evaluation]:
        found = await evaluate_specs(self.promql, self.specs, window=window, at=at, target=target)
        return [evaluation for (t, _), evaluation in found.items() if t == target]

    async def _emit_polled(self, signal: Signal) -> None:
        await self.intake.accept(signal)

    def _on_query_error(self, signal_name: str, exc: Exception) -> None:
        self.metrics.prometheus_query_errors_total.labels(signal=signal_name).inc()
        log.warning("prometheus_query_failed", signal=signal_name, error=str(exc))

    async def _on_notification_result(
        self, notification: Notification, channel: str, ok: bool, detail: str
    ) -> None:
        self.metrics.notifications_total.labels(
            channel=channel, result="ok" if ok else "failed"
        ).inc()
        await self.journal.record_notification(notification, channel, ok, detail, self.clock())

    def _target_known(self, target: Target) -> bool | None:
        """Whether the watch cache holds ``target``; None until it is synced."""
        if not self.kube.synced:
            return None
        return self.kube.cached_deployment(target) is not None

    def _policy_for_target(self, target: Target) -> Policy:
        facts = self.kube.facts(target, now=self.clock())
        return self.settings.policy_for(target, facts.annotations)[0]

    def _readiness(self) -> tuple[bool, str]:
        """Every healthy replica is Ready; the leader label, not readiness, routes webhooks.

        A standby that could take over is as ready as the leader; a Lease that
        cannot be used as configured makes every replica unready, saying why.
        """
        if not self.kube.synced:
            return False, "kubernetes watches not synced"
        if not self.settings.leader_election.enabled:
            return True, "ok"
        election = self.kube.election
        if election is not None and election.problem is not None:
            return False, f"leader election cannot work: {election.problem}"
        if self._leader:
            return True, "ok: leader"
        holder = election.holder if election is not None else None
        return True, f"standby: following {holder}" if holder else "standby: leader not known yet"

    async def request_rollback(
        self, target: Target, dry_run: bool, *, reason: str = "", force: bool = False
    ) -> str:
        """A manual rollback request, through the same decide/executor path.

        Without ``force`` it is decided like any signal. ``force`` lifts the
        change window and the cooldown only; the guards always apply.
        """
        if not self.one_shot and self.settings.leader_election.enabled and not self._leader:
            # Only the Lease holder acts; nothing is recorded here, so a retry
            # against the leader (the webhook Service selects it) is clean.
            raise NotLeaderError("this replica is a standby: send the request to the leader")
        now = self.clock()
        signal = Signal(
            target=target,
            source=SignalSource.MANUAL,
            name="manual",
            status=SignalStatus.FIRING,
            started_at=now,
            observed_at=now,
            key=f"manual:{target}:{now.isoformat()}",
            summary=(reason or "manual rollback request") + (" (forced)" if force else ""),
        )
        await self.journal.record_signal(signal, accepted=True)

        def as_requested(policy: Policy) -> Policy:
            if not force:
                return replace(policy, dry_run=policy.dry_run or dry_run)
            # An explicit force is the operator's evidence: the change window and
            # cooldown protect against automatic flapping, not against a human.
            return replace(
                policy,
                change_window=timedelta(days=3650),
                cooldown=timedelta(0),
                dry_run=policy.dry_run or dry_run,
            )

        decision = await self.dispatcher.handle(
            signal, adjust_policy=as_requested, page_escalations=False
        )
        if decision.rollback_id is None:
            raise RollbackRefused(decision)
        return decision.rollback_id


class RollbackRefused(ValueError):
    """A manual rollback that the safety rules do not allow."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.reason_code}: {decision.reason}")
        self.decision = decision


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """`rollbackd run`: until SIGTERM/SIGINT (or ``stop`` is set)."""
    configure_logging(settings.logging.level, settings.logging.format)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal_module.SIGTERM, signal_module.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(settings)
    await daemon.start()
    try:
        await stop.wait()
        log.info("shutting_down")
    finally:
        await daemon.stop()
    return 0


async def manual_rollback(
    settings: Settings,
    target: Target,
    *,
    dry_run: bool = False,
    reason: str = "",
    force: bool = False,
) -> str:
    """`rollbackd rollback NS/NAME`: one rollback through the same executor, then exit."""
    configure_logging(settings.logging.level, settings.logging.format)
    daemon = Daemon(settings, one_shot=True)
    await daemon.start()
    try:
        rollback_id = await daemon.request_rollback(target, dry_run, reason=reason, force=force)
        await daemon.dispatcher.wait(target)
        return rollback_id
    finally:
        await daemon.stop()
