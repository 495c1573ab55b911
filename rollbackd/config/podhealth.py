"""Signals that need no application metrics: pod health from the API server, saturation from cAdvisor."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from rollbackd.config.types import PositiveDuration, _Section
from rollbackd.durations import is_prometheus_duration
from rollbackd.podhealth import PodRules

_RULES = PodRules()


class PodHealthSettings(_Section):
    """``sources.kubernetes.pod_health``: crash loops and stuck pods of the new ReplicaSet."""

    enabled: bool = True
    # Restarts since the rollout began before a crashing container counts.
    min_restarts: int = Field(default=_RULES.min_restarts, ge=1)
    # Bad pods needed (fewer when the new ReplicaSet has fewer pods) ...
    min_pods: int = Field(default=_RULES.min_pods, ge=1)
    # ... and the share of the new ReplicaSet's pods they must be.
    min_fraction: float = Field(default=_RULES.min_fraction, gt=0, le=1, allow_inf_nan=False)
    # A Ready=False pod counts after this long (a slow start is not a failure).
    not_ready_after: PositiveDuration = _RULES.not_ready_after
    # Consecutive bad looks before the signal fires (a pod restarting once is not a loop).
    for_count: int = Field(default=2, ge=1)
    interval: PositiveDuration = timedelta(seconds=10)

    def rules(self) -> PodRules:
        return PodRules(
            min_restarts=self.min_restarts,
            min_pods=self.min_pods,
            min_fraction=self.min_fraction,
            not_ready_after=self.not_ready_after,
        )


class KubernetesSourceSettings(_Section):
    pod_health: PodHealthSettings = PodHealthSettings()


class SourcesSettings(_Section):
    """Signal sources beside the Alertmanager webhook and the Prometheus signals."""

    kubernetes: KubernetesSourceSettings = KubernetesSourceSettings()


class SaturationSettings(_Section):
    """``prometheus.saturation``: CPU throttling and memory against the limit (cAdvisor)."""

    enabled: bool = False
    # Throttled CFS periods / all periods, per Deployment.
    cpu_throttling: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    # Working set / memory limit, the worst container of the Deployment.
    memory: float = Field(default=0.9, gt=0, le=1, allow_inf_nan=False)
    window: str = "5m"
    for_count: int = Field(default=3, ge=1)

    @field_validator("window")
    @classmethod
    def _promql_window(cls, value: str) -> str:
        if not is_prometheus_duration(value):
            raise ValueError(f'{value!r} is not a PromQL duration such as "5m"')
        return value
