"""The draft's impact, asked of a real Prometheus through the project's PromQL adapter.

A workload we control serves ``http_requests_total`` for shop/checkout: each
scrape (1 s) adds 10 OK and 2 failed requests. Over the incident window the
draft must count about that, through the exact query it prints; a
Deployment with no series is "no data" (not zero); Prometheus stopped,
answering 503 or 429 is "unavailable" with the reason, never a crash.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from rollbackd.config.report import ReportSettings
from rollbackd.model import Target
from rollbackd.postmortem.impact import measure_impact
from rollbackd.postmortem.times import Window
from rollbackd.promql import PromQL
from rollbackd.testing.promstack import MetricsEndpoint, PrometheusServer, instant_query, poll_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

APP = Target("shop", "checkout")
OK_PER_SCRAPE, FAILED_PER_SCRAPE = 10.0, 2.0
SETTINGS = ReportSettings(impact_timeout=timedelta(seconds=5))


@dataclass
class Counter:
    ok: float = 0.0
    failed: float = 0.0

    def render(self) -> str:
        self.ok += OK_PER_SCRAPE
        self.failed += FAILED_PER_SCRAPE
        labels = f'namespace="{APP.namespace}",deployment="{APP.name}",pod="checkout-7d9-x1"'
        return (
            f'http_requests_total{{{labels},code="200"}} {self.ok}\n'
            f'http_requests_total{{{labels},code="500"}} {self.failed}\n'
        )


@dataclass
class Rig:
    prometheus: PrometheusServer
    promql: PromQL
    window: Window


@pytest.fixture
async def rig(prometheus_factory: Any) -> AsyncIterator[Rig]:
    async with MetricsEndpoint(Counter().render) as endpoint:
        prometheus = await prometheus_factory(targets=[endpoint.host_port])
        first = datetime.now(UTC)

        async def samples() -> float | None:
            expr = "count_over_time(http_requests_total{code='500'}[1m])"
            result = await instant_query(prometheus.url, expr)
            count = float(result[0]["value"][1]) if result else 0.0
            return count if count >= 4 else None

        await poll_until(samples, within=30, message="four scrapes of the workload")
        window = Window(first, "bad rollout began", datetime.now(UTC), "ROLLBACK_COMPLETED", True)
        promql = PromQL(prometheus.url, timeout=2.0, attempts=2, max_backoff=0.2)
        try:
            yield Rig(prometheus, promql, window)
        finally:
            await promql.close()


async def test_impact_counts_the_window_and_a_deployment_without_series_is_no_data(
    rig: Rig,
) -> None:
    impact = await measure_impact(rig.promql, SETTINGS, APP, rig.window)
    assert impact.status == "measured", impact.reason
    assert impact.failed_requests is not None and impact.total_requests is not None
    seconds = (rig.window.end - rig.window.start).total_seconds()  # type: ignore[operator]
    # increase() extrapolates, so the counts are near, not equal to, rate x window.
    assert 0 < impact.failed_requests <= FAILED_PER_SCRAPE * (seconds + 2)
    assert impact.failed_ratio == pytest.approx(2 / 12, rel=0.05)
    # The printed query is the one that was run: a human re-running it gets the same figure.
    assert impact.failed_query is not None
    rerun = await instant_query(rig.prometheus.url, impact.failed_query)
    assert float(rerun[0]["value"][1]) > 0
    assert 'namespace="shop",deployment="checkout",code=~"5.."' in impact.failed_query
    # Same Prometheus, a Deployment it has no series for: no data, never zero.
    quiet = await measure_impact(rig.promql, SETTINGS, Target("shop", "quiet"), rig.window)
    assert quiet.status == "no_data"
    assert quiet.failed_requests is None and quiet.total_requests is None


async def test_prometheus_down_is_unavailable_with_the_reason(rig: Rig) -> None:
    await rig.prometheus.stop()
    started = time.monotonic()
    impact = await measure_impact(rig.promql, SETTINGS, APP, rig.window)
    assert impact.status == "unavailable"
    assert "Prometheus unreachable" in (impact.reason or "")
    assert impact.failed_requests is None
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("status", [503, 429])
async def test_prometheus_answering_an_error_is_unavailable(status: int) -> None:
    asked: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        asked.append(request.query.get("query", ""))
        body = {"status": "error", "errorType": "unavailable", "error": "overloaded"}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    promql = PromQL(f"http://127.0.0.1:{port}", timeout=2.0, attempts=2, max_backoff=0.1)
    now = datetime.now(UTC)
    window = Window(now - timedelta(minutes=5), "first bad sample", now, "ESCALATED", True)
    try:
        impact = await measure_impact(promql, SETTINGS, APP, window)
    finally:
        await promql.close()
        await runner.cleanup()
    assert impact.status == "unavailable"
    assert impact.reason == f"Prometheus answered HTTP {status} (unavailable: overloaded)"
    assert len(asked) == 4  # both queries, retried once each: 5xx and 429 are transient
