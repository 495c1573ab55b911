"""Metrics: the exported names, and one registry per instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.metrics import Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_exports_the_documented_metric_names() -> None:
    metrics = Metrics()
    families = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
    assert {
        "rollbackd_signals",
        "rollbackd_decisions",
        "rollbackd_rollbacks",
        "rollbackd_rollback_duration_seconds",
        "rollbackd_time_to_detect_seconds",
        "rollbackd_webhook_requests",
        "rollbackd_is_leader",
        "rollbackd_prometheus_query_errors",
        "rollbackd_notifications",
        "rollbackd_unresolved_alerts",
    } <= families


def test_labelled_counters_render_with_their_labels() -> None:
    metrics = Metrics()
    metrics.signals_total.labels(source="alertmanager", status="firing").inc()
    metrics.decisions_total.labels(action="rollback", reason="rollback").inc(2)
    metrics.rollbacks_total.labels(result="ROLLBACK_COMPLETED").inc()
    metrics.webhook_requests_total.labels(code="200").inc()
    metrics.prometheus_query_errors_total.labels(signal="error_ratio").inc()
    metrics.notifications_total.labels(channel="pagerduty", result="ok").inc()
    metrics.unresolved_alerts_total.inc()
    metrics.is_leader.set(1)
    metrics.rollback_duration_seconds.observe(42.0)
    metrics.time_to_detect_seconds.observe(3.0)

    samples = _samples(metrics)
    assert (
        samples[("rollbackd_signals_total", (("source", "alertmanager"), ("status", "firing")))]
        == 1
    )
    assert (
        samples[("rollbackd_decisions_total", (("action", "rollback"), ("reason", "rollback")))]
        == 2
    )
    assert samples[("rollbackd_rollbacks_total", (("result", "ROLLBACK_COMPLETED"),))] == 1
    assert samples[("rollbackd_webhook_requests_total", (("code", "200"),))] == 1
    assert samples[("rollbackd_prometheus_query_errors_total", (("signal", "error_ratio"),))] == 1
    assert (
        samples[("rollbackd_notifications_total", (("channel", "pagerduty"), ("result", "ok")))]
        == 1
    )
    assert samples[("rollbackd_unresolved_alerts_total", ())] == 1
    assert samples[("rollbackd_is_leader", ())] == 1
    assert samples[("rollbackd_rollback_duration_seconds_count", ())] == 1
    assert samples[("rollbackd_rollback_duration_seconds_sum", ())] == 42.0
    assert samples[("rollbackd_time_to_detect_seconds_count", ())] == 1


def test_instances_do_not_share_counts() -> None:
    first, second = Metrics(), Metrics()
    first.unresolved_alerts_total.inc()
    assert _samples(first)[("rollbackd_unresolved_alerts_total", ())] == 1
    assert _samples(second)[("rollbackd_unresolved_alerts_total", ())] == 0


def test_uses_the_registry_it_is_given() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.is_leader.set(1)
    assert metrics.registry is registry
    assert registry.get_sample_value("rollbackd_is_leader") == 1


def test_intake_commits_come_from_the_latest_journal_given() -> None:
    """Before a journal is given, no samples; a daemon restarted on the same metrics
    reports its new journal's counts, not the closed one's."""
    metrics = Metrics()
    assert not any(
        name == "rollbackd_journal_intake_commits_total" for name, _ in _samples(metrics)
    )
    metrics.count_intake_commits(lambda: {"in_place": 7, "journal_thread": 3})
    metrics.count_intake_commits(lambda: {"in_place": 1, "journal_thread": 0})
    samples = _samples(metrics)
    assert samples[("rollbackd_journal_intake_commits_total", (("path", "in_place"),))] == 1
    assert samples[("rollbackd_journal_intake_commits_total", (("path", "journal_thread"),))] == 0
