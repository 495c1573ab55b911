"""The saturation signals' PromQL against the real Prometheus scraping cAdvisor-shaped series.

cAdvisor labels by namespace, pod and container, not by Deployment; the
queries group per Deployment from the pod name and compare memory with the
kube-state-metrics limit. A throttled Deployment and one near its memory
limit breach; a quiet one does not; a pod without a memory limit is not judged (no
limit, nothing to be saturated against).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rollbackd.model import Target
from rollbackd.promql import PromQL
from rollbackd.saturation import CPU_THROTTLING, MEMORY_SATURATION, saturation_specs
from rollbackd.signalquery import evaluate_specs
from rollbackd.signals import Verdict
from rollbackd.testing.promstack import MetricsEndpoint, poll_until

pytestmark = pytest.mark.integration

HOT = Target("shop", "checkout")
CALM = Target("shop", "cart")
GIB = 1024**3


class Cadvisor:
    """Counters that advance on every scrape: checkout throttled 80 %, cart 5 %."""

    def __init__(self) -> None:
        self.scrapes = 0

    def render(self) -> str:
        self.scrapes += 1
        n = self.scrapes
        lines = []
        for pod, throttled_share, working_set, limit in (
            ("checkout-7d9f8c6b5-x2kqz", 0.8, 0.95 * GIB, GIB),
            ("cart-5c4b3a2d1-abcde", 0.05, 0.2 * GIB, GIB),
            ("cart-5c4b3a2d1-nolim", 0.05, 0.9 * GIB, None),
        ):
            labels = f'namespace="shop",pod="{pod}",container="app"'
            lines.append(f"container_cpu_cfs_periods_total{{{labels}}} {100 * n}")
            lines.append(
                f"container_cpu_cfs_throttled_periods_total{{{labels}}} {100 * n * throttled_share}"
            )
            lines.append(f"container_memory_working_set_bytes{{{labels}}} {working_set}")
            if limit is not None:
                lines.append(
                    f'kube_pod_container_resource_limits{{{labels},resource="memory",unit="byte"}} {limit}'
                )
            # The pod-level cgroup series (container="") must not be counted twice.
            pod_labels = f'namespace="shop",pod="{pod}",container=""'
            lines.append(f"container_cpu_cfs_periods_total{{{pod_labels}}} {100 * n}")
            lines.append(f"container_cpu_cfs_throttled_periods_total{{{pod_labels}}} 0")
        return "\n".join(lines) + "\n"


async def test_throttled_and_memory_saturated_deployments_breach_and_quiet_ones_do_not(
    prometheus_factory: Callable[..., Any],
) -> None:
    cadvisor = Cadvisor()
    async with MetricsEndpoint(cadvisor.render) as endpoint:
        prometheus = await prometheus_factory(targets=[endpoint.host_port])
        specs = saturation_specs(cpu_throttling=0.5, memory=0.9, window="5s", for_count=1)
        promql = PromQL(prometheus.url, timeout=3.0, attempts=1)
        try:

            async def judged() -> dict[tuple[Target, str], Any] | None:
                found = await evaluate_specs(promql, specs)
                wanted = {(HOT, CPU_THROTTLING), (CALM, CPU_THROTTLING), (HOT, MEMORY_SATURATION)}
                return found if wanted <= set(found) else None

            found = await poll_until(judged, within=30, message="saturation series in Prometheus")
        finally:
            await promql.close()

    throttling = found[(HOT, CPU_THROTTLING)]
    assert throttling.verdict is Verdict.BREACH, throttling.detail
    assert throttling.value == pytest.approx(0.8, abs=0.05)
    assert found[(CALM, CPU_THROTTLING)].verdict is Verdict.HEALTHY
    memory = found[(HOT, MEMORY_SATURATION)]
    assert memory.verdict is Verdict.BREACH and memory.value == pytest.approx(0.95, abs=0.01)
    # cart: one pod at 20 % of its limit, one without a limit (not judged).
    calm_memory = found.get((CALM, MEMORY_SATURATION))
    assert calm_memory is not None and calm_memory.verdict is Verdict.HEALTHY
    assert calm_memory.value == pytest.approx(0.2, abs=0.01)
