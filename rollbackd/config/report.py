"""The postmortem draft: how the incident's impact is asked of Prometheus."""

from __future__ import annotations

from datetime import timedelta

from pydantic import model_validator

from rollbackd.config.types import PositiveDuration, _Section


class ReportSettings(_Section):
    """PromQL for the draft's impact: requests failed and served over the incident window.

    Each query returns one number for one Deployment; ``{namespace}``,
    ``{deployment}``, ``{deployment_label}`` (``prometheus.deployment_label``)
    and ``{window}`` (seconds, e.g. ``340s``) are filled in and the filled
    query is printed in the draft so a human can re-run it.
    """

    failed_requests_query: str = (
        'sum(increase(http_requests_total{namespace="{namespace}",'
        '{deployment_label}="{deployment}",code=~"5.."}[{window}]))'
    )
    total_requests_query: str = (
        'sum(increase(http_requests_total{namespace="{namespace}",'
        '{deployment_label}="{deployment}"}[{window}]))'
    )
    # The draft never waits longer than this for Prometheus: it renders "unavailable".
    impact_timeout: PositiveDuration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _check(self) -> ReportSettings:
        problems = [
            f"{key} must contain the {{window}} placeholder"
            for key in ("failed_requests_query", "total_requests_query")
            if "{window}" not in getattr(self, key)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self
