"""Saturation signals from the usual cAdvisor and kube-state-metrics names (off by default).

cAdvisor labels its series by ``namespace``, ``pod`` and ``container``, not
by Deployment; a Deployment's pods are named ``<deployment>-<hash>-<suffix>``,
so the Deployment is the pod name without its last two parts
(``label_replace`` into the workload label, ``prometheus.deployment_label``).
Both queries are grouped ``by (namespace, <that label>)`` like every other
signal, so the poller runs each once for the fleet.
"""

from __future__ import annotations

from rollbackd.signals import SignalSpec

__all__ = ["CPU_THROTTLING", "MEMORY_SATURATION", "saturation_specs"]

CPU_THROTTLING = "cpu_throttling"
MEMORY_SATURATION = "memory_saturation"

# {deployment_label} is filled in with the window (signals.render_query).
_POD_TO_DEPLOYMENT = '"{deployment_label}", "$1", "pod", "(.+)-[a-z0-9]+-[a-z0-9]+"'
_BY = "by (namespace, {deployment_label})"


def _per_deployment(expr: str) -> str:
    return f"label_replace({expr}, {_POD_TO_DEPLOYMENT})"


def saturation_specs(
    *, cpu_throttling: float, memory: float, window: str, for_count: int
) -> tuple[SignalSpec, ...]:
    """The two saturation signals with their thresholds (fractions, 0..1)."""
    throttled = _per_deployment(
        'rate(container_cpu_cfs_throttled_periods_total{container!=""}[{window}])'
    )
    periods = _per_deployment('rate(container_cpu_cfs_periods_total{container!=""}[{window}])')
    working_set = (
        'max by (namespace, pod, container) (max_over_time(container_memory_working_set_bytes{container!=""}[{window}]))'
        " / on (namespace, pod, container) "
        'max by (namespace, pod, container) (kube_pod_container_resource_limits{resource="memory"} > 0)'
    )
    return (
        SignalSpec(
            name=CPU_THROTTLING,
            query=f"sum {_BY} ({throttled}) / sum {_BY} ({periods})",
            threshold=cpu_throttling,
            window=window,
            for_count=for_count,
        ),
        SignalSpec(
            name=MEMORY_SATURATION,
            query=f"max {_BY} ({_per_deployment(working_set)})",
            threshold=memory,
            window=window,
            for_count=for_count,
        ),
    )
