"""Where signals come from: the cluster and Prometheus (with its signals)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from rollbackd.config.podhealth import SaturationSettings
from rollbackd.config.types import (
    HttpUrl,
    NamespaceName,
    PositiveDuration,
    SecretFromFile,
    _one_secret,
    _secret_value,
    _Section,
)
from rollbackd.durations import is_prometheus_duration
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL, label_problem

if TYPE_CHECKING:
    from rollbackd.promql import PromQL
    from rollbackd.signals import SignalSpec


class ClusterSettings(_Section):
    """Which cluster to talk to and which namespaces rollbackd may act in."""

    kubeconfig: str | None = None  # None: in-cluster service account
    context: str | None = None
    namespaces: tuple[NamespaceName, ...] = ()  # empty: every namespace (allow-list)
    dry_run_namespaces: tuple[NamespaceName, ...] = ()
    exclude_namespaces: tuple[NamespaceName, ...] = ("kube-system",)


_SIGNAL_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class SignalSettings(_Section):
    """One PromQL signal; queries carry a ``{window}`` placeholder."""

    name: str
    query: str
    threshold: float = Field(allow_inf_nan=False)
    comparison: Literal[">", "<"] = ">"
    traffic_query: str | None = None
    min_traffic: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    # Requests the window must hold before the ratio is judged (rate x window):
    # one failed request must never be enough to roll back.
    min_requests: float = Field(default=10, ge=0, allow_inf_nan=False)
    window: str = "1m"
    for_count: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SignalSettings:
        problems = []
        if not _SIGNAL_NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r} must be snake_case (it is a metric label)")
        # Verification narrows the window to the time since the rollback was
        # ready; a query without the placeholder would look into the bad period.
        if "{window}" not in self.query:
            problems.append("query must contain the {window} placeholder")
        if self.traffic_query is not None and "{window}" not in self.traffic_query:
            problems.append("traffic_query must contain the {window} placeholder")
        if not is_prometheus_duration(self.window):
            problems.append(f'window {self.window!r} is not a PromQL duration such as "1m"')
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _default_signals() -> tuple[SignalSettings, ...]:
    # Imported lazily: the signal definitions belong to rollbackd.signals,
    # which the config only mirrors when the key is absent.
    from rollbackd.signals import DEFAULT_SIGNALS

    return tuple(
        SignalSettings(
            name=spec.name,
            query=spec.query,
            threshold=spec.threshold,
            comparison=spec.comparison,
            traffic_query=spec.traffic_query,
            min_traffic=spec.min_traffic,
            min_requests=spec.min_requests,
            window=spec.window,
            for_count=spec.for_count,
        )
        for spec in DEFAULT_SIGNALS
    )


class PrometheusSettings(_Section):
    """Where to query signals, and which signals to watch."""

    url: HttpUrl
    timeout: PositiveDuration = timedelta(seconds=10)
    attempts: int = Field(default=3, ge=1, le=10)
    poll_interval: PositiveDuration | None = None  # None: the scrape interval
    scrape_interval: PositiveDuration | None = None  # None: read from Prometheus
    bearer_token_file: SecretFromFile | None = None
    bearer_token: SecretStr | None = None  # env only
    signals: tuple[SignalSettings, ...] = Field(default_factory=_default_signals)
    # cAdvisor CPU throttling and memory against the limit; off by default.
    saturation: SaturationSettings = SaturationSettings()
    # The label naming the workload in the metrics: what the built-in queries
    # group by, what answers are read by, {deployment_label} in every query.
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL

    @field_validator("deployment_label")
    @classmethod
    def _label(cls, value: str) -> str:
        problem = label_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check(self) -> PrometheusSettings:
        _one_secret(
            self.bearer_token, self.bearer_token_file, "prometheus", "bearer_token", required=False
        )
        if not self.signals:
            raise ValueError("signals must list at least one signal")
        names = [s.name for s in self.signals]
        if self.saturation.enabled:
            names += ["cpu_throttling", "memory_saturation"]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"signal names must be unique: {', '.join(duplicates)}")
        return self

    def bearer_token_value(self) -> str | None:
        return _secret_value(self.bearer_token, self.bearer_token_file)

    def promql(self) -> PromQL:
        """The PromQL adapter for this Prometheus (the daemon's, and the CLI's report)."""
        from rollbackd.promql import PromQL

        token = self.bearer_token_value()
        return PromQL(
            str(self.url),
            timeout=self.timeout.total_seconds(),
            attempts=self.attempts,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )

    def signal_specs(self) -> tuple[SignalSpec, ...]:
        """The signals as ``rollbackd.signals.SignalSpec`` values for the poller."""
        from rollbackd.signals import SignalSpec

        return tuple(SignalSpec(**s.model_dump()) for s in self.signals)

    def poll_specs(self) -> tuple[SignalSpec, ...]:
        """What the poller watches: the signals, and saturation when enabled.

        Saturation triggers only: it is not a verification criterion, so a
        cluster without cAdvisor series never leaves verification without data.
        """
        if not self.saturation.enabled:
            return self.signal_specs()
        from rollbackd.saturation import saturation_specs

        sat = self.saturation
        extra = saturation_specs(
            cpu_throttling=sat.cpu_throttling,
            memory=sat.memory,
            window=sat.window,
            for_count=sat.for_count,
        )
        return (*self.signal_specs(), *extra)
