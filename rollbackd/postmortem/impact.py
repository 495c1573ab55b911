"""The incident's impact: requests failed and served over its window, asked of Prometheus.

Two instant queries (``report.failed_requests_query`` and
``report.total_requests_query``), evaluated at the window's end with the
window as their range, through the project's PromQL adapter. The filled-in
queries go into the draft so a human can re-run them.

Never a made-up number: Prometheus down, slow, or answering 5xx/429 gives
``unavailable`` with the reason; an empty answer (or NaN) is ``no data``,
never zero. Nothing here raises: the draft renders whatever Prometheus does.
Nothing is logged either: the reason is in the draft, and the CLI's stdout
must stay the draft alone (``--format json`` is piped into other tools).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from rollbackd.config.report import ReportSettings
from rollbackd.durations import format_duration, format_range
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL, LABEL_PLACEHOLDER
from rollbackd.model import Target
from rollbackd.postmortem.times import Window
from rollbackd.promql import PromQL, PromQLError, Sample
from rollbackd.querytemplate import fill

ImpactStatus = Literal["measured", "no_data", "unavailable"]


@dataclass(frozen=True)
class Impact:
    """Failed and total requests over the window; None for a figure with no data."""

    status: ImpactStatus
    reason: str | None = None  # why unavailable or no data
    failed_requests: float | None = None
    total_requests: float | None = None
    failed_query: str | None = None
    total_query: str | None = None
    evaluated_at: datetime | None = None

    @property
    def failed_ratio(self) -> float | None:
        if self.failed_requests is None or not self.total_requests:
            return None
        return self.failed_requests / self.total_requests


def unavailable(reason: str) -> Impact:
    return Impact("unavailable", reason)


def render_impact_query(
    template: str,
    target: Target,
    window: timedelta,
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
) -> str:
    """One report query, filled in."""
    values = {"namespace": target.namespace, "deployment": target.name}
    values[LABEL_PLACEHOLDER] = deployment_label
    return fill(template, {**values, "window": format_range(window)})


def _total(samples: list[Sample]) -> float | None:
    """The sum of the finite values; None (no data) when there are none."""
    values = [s.value for s in samples if math.isfinite(s.value)]
    return sum(values) if values else None


def _answer(answer: list[Sample] | BaseException) -> list[Sample]:
    if isinstance(answer, BaseException):
        raise answer
    return answer


async def measure_impact(
    promql: PromQL | None,
    settings: ReportSettings,
    target: Target,
    window: Window,
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
) -> Impact:
    """Ask Prometheus for the impact over ``window``; never raises (see the module docstring)."""
    if window.start is None or window.end is None:
        return unavailable(
            "the incident window is unknown: no rollout start or bad sample recorded"
        )
    span = window.end - window.start
    if span <= timedelta(0):
        return unavailable(f"the incident window is empty ({format_duration(span)})")
    failed_q = render_impact_query(settings.failed_requests_query, target, span, deployment_label)
    total_q = render_impact_query(settings.total_requests_query, target, span, deployment_label)
    asked = Impact("unavailable", None, failed_query=failed_q, total_query=total_q)
    asked = replace(asked, evaluated_at=window.end)
    if promql is None:
        reason = "no Prometheus configured (prometheus.url; the CLI also takes --prometheus-url)"
        return replace(asked, reason=reason)
    try:
        async with asyncio.timeout(settings.impact_timeout.total_seconds()):
            # return_exceptions: neither query is left running unawaited when the other fails.
            answers = await asyncio.gather(
                promql.query(failed_q, at=window.end),
                promql.query(total_q, at=window.end),
                return_exceptions=True,
            )
        failed, total = (_total(_answer(a)) for a in answers)
    except TimeoutError:
        reason = f"Prometheus did not answer within {format_duration(settings.impact_timeout)}"
        return replace(asked, reason=reason)
    except PromQLError as exc:
        return replace(asked, reason=str(exc))
    if failed is None and total is None:
        reason = "Prometheus has no samples for this Deployment in the window"
        return replace(asked, status="no_data", reason=reason)
    partial = None if failed is not None and total is not None else "one query has no data"
    return replace(
        asked, status="measured", reason=partial, failed_requests=failed, total_requests=total
    )
