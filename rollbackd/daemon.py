"""One rollbackd process: open, serve, lead, stop in order.

Start: journal -> Kubernetes watches -> HTTP server (webhooks are accepted,
and journaled, from here on) -> leadership -> as leader: resume rollbacks in
flight, replay undecided signals, run the dispatcher and the poller. Stop is
the reverse; a rollback cut short keeps its phase annotation for the next leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Callable
from datetime import datetime

import structlog
from aiohttp import web

from rollbackd.approval import Outcome, Verdict, give_verdict
from rollbackd.config import Settings
from rollbackd.errors import NotLeaderError
from rollbackd.journal import Journal
from rollbackd.kube import Kube
from rollbackd.kube.fencing import fenced_request_class
from rollbackd.kube.leader_label import LeaderLabel
from rollbackd.manual import manual_rollback, request_rollback
from rollbackd.metrics import Metrics
from rollbackd.model import Policy, Rollback, Target, utcnow
from rollbackd.notify.base import Notification, Notifier
from rollbackd.pollers import POD_HEALTH_POLLER, PROMETHEUS_POLLER, leader_pollers
from rollbackd.postmortem.source import ImpactSource
from rollbackd.records import annotated_rollback
from rollbackd.retention import Retention
from rollbackd.server import AuthSettings, create_app
from rollbackd.serving import fd_budget, install_accept_error_limiter, start_site
from rollbackd.stages import build_channels, build_pipeline, readiness, scrape_interval
from rollbackd.state import state_from_annotations
from rollbackd.supervision import Supervisor, retrying

__all__ = ["Daemon", "manual_rollback"]

log = structlog.get_logger("rollbackd.daemon")

SHUTDOWN_GRACE_SECONDS = 10.0


class Daemon:
    """One rollbackd process. ``start`` returns once the HTTP server listens.

    Everything ``start`` opens is registered on an exit stack as it is
    opened, so a start that fails half-way closes what it opened (and the
    process can exit), and ``stop`` closes in the reverse order.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
        one_shot: bool = False,  # `rollbackd rollback`: no HTTP, no leadership, no poller
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.one_shot = one_shot
        self.supervisor = Supervisor()
        self._exit = contextlib.AsyncExitStack()
        self._leader = False
        # True from winning leadership until every step of losing it has run.
        self._leading_work = False
        self._stopped = False
        self.url = ""

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._open()
        except BaseException:
            await self.supervisor.cancel()
            await self._exit.aclose()
            raise

    async def _open(self) -> None:
        s = self.settings
        self.journal = await Journal.open(s.journal.path, synchronous=s.journal.synchronous)
        self._exit.push_async_callback(self.journal.close)
        self.metrics.count_intake_commits(self.journal.intake_commit_counts)
        self.kube = await Kube.connect(kubeconfig=s.cluster.kubeconfig, context=s.cluster.context)
        self._exit.push_async_callback(self.kube.close)
        await self.kube.start_watches(list(s.cluster.namespaces) or None)
        self.promql = s.prometheus.promql()
        self._exit.push_async_callback(self.promql.close)
        # Pages go through the journal's outbox; only the leader sends them.
        self.notifier = Notifier(
            # The Lease is asked once more as each page leaves (fencing).
            build_channels(s, request_class=fenced_request_class(self.kube.fence)),
            journal=self.journal,
            on_result=self._on_notification_result,
            metrics=self.metrics,
            max_age=s.notify.max_age,
            failover_after=s.notify.failover_after,
            initial_backoff=s.notify.backoff_initial.total_seconds(),
            max_backoff=s.notify.backoff_max.total_seconds(),
            clock=self.clock,
        )
        self._exit.push_async_callback(self.notifier.stop)
        self.scrape_interval = await scrape_interval(self.promql, s.prometheus.scrape_interval)
        self._build_pipeline()
        if self.one_shot:
            await self.kube.wait_synced(timeout=60)
            await self.notifier.start()
            return
        await self._serve()
        retention = s.journal.retention
        self.supervisor.spawn(
            "journal-retention",
            Retention(
                self.journal,
                max_age=retention.max_age,
                max_bytes=retention.max_bytes,
                interval=retention.interval,
                clock=self.clock,
                on_size=self.metrics.journal_bytes.set,
            ).run(),
        )
        if s.leader_election.enabled:
            self.supervisor.spawn(
                "leader-election",
                retrying("leader-election", self._campaign, on_error=self._lose_leadership),
            )
        else:
            await self._become_leader()

    def _build_pipeline(self) -> None:
        """Intake -> dispatcher -> executor, each built before anything refers to it."""
        pipeline = build_pipeline(
            self.settings,
            journal=self.journal,
            kube=self.kube,
            promql=self.promql,
            notifier=self.notifier,
            metrics=self.metrics,
            clock=self.clock,
            scrape_interval=self.scrape_interval,
            target_known=self._target_known,
            policy_for_target=self._policy_for_target,
        )
        self.intake = pipeline.intake
        self.verifier = pipeline.verifier
        self.executor = pipeline.executor
        self.dispatcher = pipeline.dispatcher
        self.lead_escalation = pipeline.lead_escalation
        self.approvals = pipeline.approvals

    async def _serve(self) -> None:
        """The HTTP server; from here on webhooks are accepted (and journaled)."""
        s = self.settings
        app = create_app(
            alert_sink=self.intake,
            journal=self.journal,
            metrics=self.metrics,
            readiness=self._readiness,
            auth=AuthSettings.from_webhook(s.webhook),
            max_body_bytes=s.webhook.max_body_bytes,
            body_timeout=s.webhook.body_timeout.total_seconds(),
            manual_rollback=self.request_rollback,
            impact_source=ImpactSource(self.promql, s.report, s.prometheus.deployment_label),
            give_verdict=self.give_verdict,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._exit.push_async_callback(runner.cleanup)
        # Hostile clients must not take the descriptors the executor and pager need.
        install_accept_error_limiter(asyncio.get_running_loop())
        _site, bound_host, bound_port = await start_site(
            runner,
            s.webhook.host,
            s.webhook.port,
            max_connections=fd_budget(s.webhook.max_connections),
            header_timeout=s.webhook.header_timeout.total_seconds(),
            metrics=self.metrics,
        )
        self.url = f"http://{bound_host}:{bound_port}"
        log.info("listening", url=self.url, scrape_interval=self.scrape_interval.total_seconds())

    async def _campaign(self) -> None:
        le = self.settings.leader_election
        # Fencing (safety rule 13): a replica not sure it holds the Lease
        # writes nothing (the Kube client asks the fence) and pages nothing.
        self.notifier.gate = self.kube.fence.may_act
        # A label left by an earlier process in this pod must not draw webhooks.
        await self._leader_label.release()
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

    @functools.cached_property
    def _leader_label(self) -> LeaderLabel:
        """This replica's pod label (created on first use: start() does not know it)."""
        return LeaderLabel.from_env(self.kube.request, self.kube.fence)

    async def stop(self) -> None:
        """Stop in order: finish what is due, hand over leadership, close what was opened."""
        if self._stopped:
            return
        self._stopped = True
        if self.one_shot:
            await self.dispatcher.stop(grace=SHUTDOWN_GRACE_SECONDS)
        if self.notifier.running:
            await self.notifier.drain(5.0)  # a clean stop sends what is due first
        await self.supervisor.cancel("journal-retention", "leader-election")
        await self._lose_leadership()
        await self.supervisor.cancel()
        await self._exit.aclose()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- leadership ------------------------------------------------------------------

    async def _become_leader(self) -> None:
        # A Lease won back while stopping (it was lost under load) starts nothing.
        if self._leader or self._stopped:
            return
        self._leader = self._leading_work = True
        self.metrics.is_leader.set(1)
        log.info("leadership_acquired", term=str(self.kube.fence.term or "unfenced"))
        # The webhook Service selects the leader's pod by this label.
        await self._leader_label.claim()
        await self.kube.wait_synced(timeout=60)
        if not self.notifier.running:
            await self.notifier.start()  # pages left by an earlier leader go out now
        await self._resume_in_flight()
        # Accepted but undecided signals (an earlier process, or this one as a
        # follower) are read back from the journal before new ones are decided.
        self.intake.pending.request_reload()
        # Essential while leading: if one dies, the daemon stops (and a new
        # process replays the journal) rather than looking alive and deciding nothing.
        self.supervisor.spawn("dispatcher", self.dispatcher.run(self.intake.pending))
        for name, loop in leader_pollers(
            self.settings,
            promql=self.promql,
            kube=self.kube,
            scrape_interval=self.scrape_interval,
            emit=self.intake.accept,
            clock=self.clock,
            on_query_error=self._on_query_error,
            metrics=self.metrics,
        ).items():
            self.supervisor.spawn(name, loop)
        self.supervisor.spawn("lead-escalation", self.lead_escalation.run())

    async def _lose_leadership(self) -> None:
        # Until every step below has run, a later call runs them again (each is
        # safe to repeat): a stop may cancel this half-way in the election task.
        if not self._leading_work:
            return
        if self._leader:
            self._leader = False
            self.metrics.is_leader.set(0)
            log.info("leadership_released")
        await self.supervisor.cancel(
            "dispatcher", PROMETHEUS_POLLER, POD_HEALTH_POLLER, "lead-escalation"
        )
        # With a Lease, rollbacks in flight stop now: their annotation keeps
        # the phase and the next leader resumes them (a late step would only
        # be fenced). Alone, there is nobody to resume: give them the grace.
        grace = 0.0 if self.kube.fence.leased else SHUTDOWN_GRACE_SECONDS
        await self.dispatcher.stop(grace=grace)
        # Unsent pages stay in the outbox for whoever leads next.
        await self.notifier.stop()
        await self._leader_label.release()
        self._leading_work = False

    async def _resume_in_flight(self) -> None:
        """Continue rollbacks an earlier leader left mid-way (phase annotation)."""
        now = self.clock()
        for target in self.kube.resumable_targets():
            facts = self.kube.facts(target, now=now)
            # In flight, or completed with its strategy's cleanup undone (killed in between).
            rollback = annotated_rollback(facts) or self.executor.cleanup_left(facts)
            if rollback is None:
                continue
            state = state_from_annotations(facts.annotations)
            assert state is not None  # annotated_rollback read it
            resume = functools.partial(self.executor.resume, target, state)
            self.dispatcher.adopt(rollback, resume)
            log.info("resuming_rollback", target=str(target), rollback_id=rollback.id)

    # -- adapters between stages ---------------------------------------------------------

    def _on_query_error(self, signal_name: str, exc: Exception) -> None:
        self.metrics.prometheus_query_errors_total.labels(signal=signal_name).inc()
        log.warning("prometheus_query_failed", signal=signal_name, error=str(exc))

    async def _on_notification_result(
        self, notification: Notification, channel: str, ok: bool, detail: str
    ) -> None:
        result = "ok" if ok else "failed"
        self.metrics.notifications_total.labels(channel=channel, result=result).inc()
        await self.journal.record_notification(notification, channel, ok, detail, self.clock())

    def _target_known(self, target: Target) -> bool | None:
        """Whether the watch cache holds ``target`` (a Deployment or a Rollout); None until synced."""
        if not self.kube.synced:
            return None
        return (self.kube.cached_deployment(target) or self.kube.cache.rollout(target)) is not None

    def _policy_for_target(self, target: Target) -> Policy:
        facts = self.kube.facts(target, now=self.clock())
        return self.settings.policy_for(target, facts.annotations)[0]

    def _readiness(self) -> tuple[bool, str]:
        election = self.kube.election if self.settings.leader_election.enabled else None
        return readiness(
            synced=self.kube.synced,
            elected=self.settings.leader_election.enabled,
            problem=str(election.problem) if election and election.problem is not None else None,
            holder=election.holder if election is not None else None,
            leader=self._leader,
        )

    def _leader_only(self) -> None:
        if not self.one_shot and self.settings.leader_election.enabled and not self._leader:
            # Only the Lease holder acts; nothing is recorded here, so a retry
            # against the leader (the webhook Service selects it) is clean.
            raise NotLeaderError("this replica is a standby: send the request to the leader")

    async def give_verdict(self, rollback_id: str, verdict: Verdict) -> Outcome:
        """A human's approve/reject of a proposed rollback (see ``approval``); leader only."""
        self._leader_only()
        return await give_verdict(
            self.approvals, self.journal, rollback_id, verdict, self._annotated_rollback
        )

    def _annotated_rollback(self, rollback_id: str) -> Rollback | None:
        return self.kube.annotated_rollback(rollback_id, now=self.clock())

    async def request_rollback(
        self, target: Target, dry_run: bool, *, reason: str = "", force: bool = False
    ) -> str:
        """A manual rollback request, through the same decide/executor path (see ``manual``)."""
        self._leader_only()
        return await request_rollback(
            self.dispatcher,
            self.journal,
            target,
            now=self.clock(),
            dry_run=dry_run,
            reason=reason,
            force=force,
        )
