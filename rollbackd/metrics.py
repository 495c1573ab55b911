"""Prometheus metrics rollbackd exports on ``GET /metrics``.

Every daemon (and every test) gets its own ``CollectorRegistry``: nothing is
registered on the process-global default registry, so two instances in one
process never collide and tests never see each other's counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

# The exposition format generate_latest() writes; served as the Content-Type.
CONTENT_TYPE = CONTENT_TYPE_LATEST

# A rollback spans a rollout (minutes) plus three scrape intervals of
# verification, so the buckets reach well past the default 10 s.
_ROLLBACK_DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
# Time from the anomaly's start to rollbackd's decision: alerting rules with a
# `for:` clause put this in the tens of seconds to minutes.
_TIME_TO_DETECT_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    """The daemon's metrics, all on one registry.

    Label values come from the shared model's enums and reason codes, whose
    sets are small and fixed, so label cardinality stays bounded.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.journal_bytes = Gauge(
            "rollbackd_journal_bytes",
            "Bytes of pages the journal uses (free pages excluded); retention keeps it"
            " under journal.retention.max_bytes.",
            registry=r,
        )
        self.signals_total = Counter(
            "rollbackd_signals_total",
            "Signals accepted from a source, by source and status.",
            ["source", "status"],
            registry=r,
        )
        self.decisions_total = Counter(
            "rollbackd_decisions_total",
            "Decisions taken on signals, by action and reason code.",
            ["action", "reason"],
            registry=r,
        )
        self.rollbacks_total = Counter(
            "rollbackd_rollbacks_total",
            "Rollbacks that reached a terminal phase, by result.",
            ["result"],
            registry=r,
        )
        self.rollback_duration_seconds = Histogram(
            "rollbackd_rollback_duration_seconds",
            "Wall time from the start of a rollback to its terminal phase.",
            buckets=_ROLLBACK_DURATION_BUCKETS,
            registry=r,
        )
        self.time_to_detect_seconds = Histogram(
            "rollbackd_time_to_detect_seconds",
            "Time from the anomaly's start to rollbackd's decision to roll back.",
            buckets=_TIME_TO_DETECT_BUCKETS,
            registry=r,
        )
        self.webhook_requests_total = Counter(
            "rollbackd_webhook_requests_total",
            "Alertmanager webhook requests, by HTTP status code answered.",
            ["code"],
            registry=r,
        )
        self.is_leader = Gauge(
            "rollbackd_is_leader",
            "1 while this replica holds the leader Lease, 0 on standby.",
            registry=r,
        )
        self.auth_disabled = Gauge(
            "rollbackd_auth_disabled",
            "1 when webhook.allow_unauthenticated lets the API in without credentials.",
            registry=r,
        )
        self.prometheus_query_errors_total = Counter(
            "rollbackd_prometheus_query_errors_total",
            "PromQL queries that failed after retries, by signal.",
            ["signal"],
            registry=r,
        )
        self.poll_cycles_total = Counter(
            "rollbackd_poll_cycles_total",
            "Prometheus poll cycles finished: ok, degraded (a query failed) or failed.",
            ["result"],
            registry=r,
        )
        self.notifications_total = Counter(
            "rollbackd_notifications_total",
            "Notifications delivered or given up on, by channel and result.",
            ["channel", "result"],
            registry=r,
        )
        # The page outbox, per channel. Only the replica that sends (the
        # leader) reports pending rows; standbys report 0.
        self.notifications_pending = Gauge(
            "rollbackd_notifications_pending",
            "Pages in the outbox not yet delivered, failed or expired, by channel.",
            ["channel"],
            registry=r,
        )
        self.notification_delivery_lag_seconds = Gauge(
            "rollbackd_notification_delivery_lag_seconds",
            "Age of the oldest undelivered page in the outbox, by channel; 0 when none.",
            ["channel"],
            registry=r,
        )
        self.notifications_expired_total = Counter(
            "rollbackd_notifications_expired_total",
            "Pages given up on after notify.max_age undelivered, by channel.",
            ["channel"],
            registry=r,
        )
        self.unresolved_alerts_total = Counter(
            "rollbackd_unresolved_alerts_total",
            "Alerts whose labels did not map to a Deployment.",
            registry=r,
        )
        # The HTTP listener's guard (rollbackd.serving).
        self.inbound_connections = Gauge(
            "rollbackd_inbound_connections",
            "HTTP connections open on the webhook/API port.",
            registry=r,
        )
        self.inbound_connections_refused_total = Counter(
            "rollbackd_inbound_connections_refused_total",
            "HTTP connections closed by the guard, by reason: cap (new connection "
            "refused, every slot busy with a request), evicted (a connection still "
            "sending its headers closed to make room), header_timeout.",
            ["reason"],
            registry=r,
        )
        self._intake_commits = _IntakeCommits(dict)  # no journal yet: no samples
        r.register(self._intake_commits)

    def count_intake_commits(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export ``counts()`` (transactions so far, by path) as a counter read at each scrape.

        The latest source wins: a daemon restarted on the same metrics reports
        its new journal's counts.
        """
        self._intake_commits.counts = counts

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class _IntakeCommits(Collector):
    """The intake's transactions by path: ``in_place`` (on the loop's own connection,
    the lock free) or ``journal_thread`` (shared commits there). A rising share of
    the second means another write often holds the lock when webhooks arrive."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for path, value in sorted(self.counts().items()):
            family.add_metric([path], value)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "rollbackd_journal_intake_commits",
            "Intake transactions committed, by path: in_place or journal_thread.",
            labels=["path"],
        )
