"""The loops that look for trouble while this replica leads: Prometheus and pod health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from rollbackd.config import Settings
from rollbackd.metrics import Metrics
from rollbackd.model import Signal, Target
from rollbackd.promql import PromQL
from rollbackd.sources.kubernetes import PodHealthPoller, PodSource
from rollbackd.sources.prometheus import PrometheusPoller

__all__ = ["POD_HEALTH_POLLER", "PROMETHEUS_POLLER", "leader_pollers"]

PROMETHEUS_POLLER = "prometheus-poller"
POD_HEALTH_POLLER = "pod-health-poller"


def leader_pollers(
    settings: Settings,
    *,
    promql: PromQL,
    kube: PodSource,
    scrape_interval: timedelta,
    emit: Callable[[Signal], Awaitable[object]],
    clock: Callable[[], datetime],
    on_query_error: Callable[[str, Exception], None],
    metrics: Metrics,
) -> dict[str, Coroutine[Any, Any, None]]:
    """Task name -> loop: the Prometheus poller, and pod health unless disabled."""
    s = settings
    interval = s.prometheus.poll_interval or scrape_interval
    loops: dict[str, Coroutine[Any, Any, None]] = {
        PROMETHEUS_POLLER: PrometheusPoller(
            promql,
            s.prometheus.poll_specs(),
            interval=interval.total_seconds(),
            emit=emit,
            clock=clock,
            on_query_error=on_query_error,
            # Counted cycles let operators (and tests) see the poller is alive.
            on_cycle=lambda result: metrics.poll_cycles_total.labels(result=result).inc(),
            deployment_label=s.prometheus.deployment_label,
        ).run()
    }
    pod_health = s.sources.kubernetes.pod_health
    if pod_health.enabled:

        def window_of(target: Target, annotations: dict[str, str] | Any) -> timedelta:
            return s.policy_for(target, annotations)[0].change_window

        loops[POD_HEALTH_POLLER] = PodHealthPoller(
            kube,
            rules=pod_health.rules(),
            for_count=pod_health.for_count,
            interval=pod_health.interval.total_seconds(),
            window_of=window_of,
            default_window=s.policy.change_window,
            emit=emit,
            clock=clock,
        ).run()
    return loops
