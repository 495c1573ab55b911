"""The real-server harness: Prometheus scrapes what we serve, Alertmanager delivers webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from rollbackd.model import SignalStatus, Target
from rollbackd.sources.alertmanager import TargetMapping, alerts_to_signals, parse_payload
from rollbackd.testing.promstack import (
    AlertmanagerServer,
    BinaryNotFoundError,
    MetricsEndpoint,
    PrometheusConfig,
    PrometheusServer,
    find_binary,
    instant_query,
    poll_until,
)

pytestmark = pytest.mark.integration


@dataclass
class WebhookRecorder:
    """Records every POST it receives; a stand-in for rollbackd's webhook endpoint."""

    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw_bodies.append(raw)
        self.received.append((dict(request.headers), json.loads(raw)))
        self.changed.set()
        return web.Response(status=200)

    async def wait_for_alert_status(self, status: str, within: float) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            for _, body in self.received:
                if any(alert["status"] == status for alert in body["alerts"]):
                    return body
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 1.0)
            return None

        return await poll_until(probe, within=within, interval=0, message=f"an alert {status}")


@pytest.fixture
async def recorder() -> AsyncIterator[WebhookRecorder]:
    rec = WebhookRecorder()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def _value(url: str, expr: str) -> float | None:
    result = await instant_query(url, expr)
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_scrapes_the_served_metrics_and_answers_queries(
    prometheus_factory: Any,
) -> None:
    gauge = {"value": 42.0}
    async with MetricsEndpoint(lambda: f"demo_gauge {gauge['value']}\n") as endpoint:
        prom = await prometheus_factory(targets=[endpoint.host_port])

        assert await poll_until(
            lambda: _value(prom.url, "demo_gauge"), within=20, message="first scrape"
        ) == pytest.approx(42.0)

        gauge["value"] = 7.0
        await poll_until(
            lambda: _equals(_value(prom.url, "demo_gauge"), 7.0),
            within=20,
            message="scrape of the changed value",
        )


async def _equals(pending: Any, expected: float) -> bool | None:
    return True if (await pending) == pytest.approx(expected) else None


async def test_restart_keeps_the_url_and_the_stored_samples(prometheus_factory: Any) -> None:
    async with MetricsEndpoint(lambda: "demo_gauge 1\n") as endpoint:
        prom = await prometheus_factory(targets=[endpoint.host_port])
        url = prom.url
        await poll_until(lambda: _value(prom.url, "demo_gauge"), within=20, message="scrape")

        await prom.stop()
        assert not prom.running
        with pytest.raises(OSError):
            await instant_query(url, "demo_gauge")

        await prom.restart()
        assert prom.url == url
        # The samples scraped before the stop are still there (a range covers them).
        stored = await _value(url, "count_over_time(demo_gauge[5m])")
        assert stored is not None and stored >= 1


async def test_reload_applies_new_rules_without_restart(prometheus_factory: Any) -> None:
    async with MetricsEndpoint(lambda: "demo_gauge 3\n") as endpoint:
        prom: PrometheusServer = await prometheus_factory(targets=[endpoint.host_port])
        rules = "groups:\n- name: t\n  rules:\n  - record: demo_doubled\n    expr: demo_gauge * 2\n"
        await prom.reload(PrometheusConfig(targets=(endpoint.host_port,), rules=rules))
        await poll_until(
            lambda: _equals(_value(prom.url, "demo_doubled"), 6.0),
            within=20,
            message="recording rule output",
        )


async def test_reload_with_a_broken_rule_file_is_refused_and_server_keeps_running(
    prometheus_factory: Any,
) -> None:
    prom: PrometheusServer = await prometheus_factory()
    with pytest.raises(RuntimeError, match="rejected"):
        await prom.reload(PrometheusConfig(rules="groups: [{name: x, rules: [{record: y}]}]"))
    assert prom.running
    assert await instant_query(prom.url, "vector(1)")


async def test_alertmanager_delivers_firing_then_resolved_with_bearer_token(
    alertmanager_factory: Any, recorder: WebhookRecorder
) -> None:
    am: AlertmanagerServer = await alertmanager_factory(recorder.url, bearer_token="s3cret")
    labels = {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "cart"}

    await am.post_alerts([{"labels": labels, "annotations": {"summary": "5xx"}}])
    firing = await recorder.wait_for_alert_status("firing", within=20)
    assert firing["version"] == "4"
    assert firing["alerts"][0]["labels"] == labels
    headers = recorder.received[0][0]
    assert headers["Authorization"] == "Bearer s3cret"

    await am.post_alerts([{"labels": labels, "endsAt": "2000-01-01T00:00:00Z"}])
    resolved = await recorder.wait_for_alert_status("resolved", within=20)
    assert resolved["alerts"][0]["fingerprint"] == firing["alerts"][0]["fingerprint"]


async def test_prometheus_alert_rule_reaches_the_webhook_through_alertmanager(
    prometheus_factory: Any, alertmanager_factory: Any, recorder: WebhookRecorder
) -> None:
    am = await alertmanager_factory(recorder.url)
    rules = (
        "groups:\n- name: t\n  rules:\n  - alert: DemoBreach\n"
        "    expr: vector(1) > 0\n    labels: {namespace: shop, deployment: cart}\n"
    )
    await prometheus_factory(rules=rules, alertmanager_url=am.url)
    body = await recorder.wait_for_alert_status("firing", within=30)
    alert = body["alerts"][0]
    assert alert["labels"]["alertname"] == "DemoBreach"
    assert alert["labels"]["deployment"] == "cart"


def test_missing_binary_is_a_clear_error_not_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_BIN", "/nonexistent/prometheus")
    with pytest.raises(BinaryNotFoundError, match="PROMETHEUS_BIN"):
        find_binary(("prometheus",), "PROMETHEUS_BIN")
    monkeypatch.delenv("PROMETHEUS_BIN")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BinaryNotFoundError, match="install the Debian package"):
        find_binary(("prometheus",), "PROMETHEUS_BIN")


async def test_the_real_webhook_body_parses_into_signals(
    alertmanager_factory: Any, recorder: WebhookRecorder
) -> None:
    """Contract check: our v4 parser reads what this Alertmanager really sends."""
    am: AlertmanagerServer = await alertmanager_factory(recorder.url)
    labels = {"alertname": "PodCrashing", "namespace": "shop", "pod": "cart-5f7c9-x2x9q"}
    await am.post_alerts([{"labels": labels, "annotations": {"summary": "crash loop"}}])
    sent = await recorder.wait_for_alert_status("firing", within=20)

    payload = parse_payload(recorder.raw_bodies[0])
    assert payload.group_key == sent["groupKey"]
    signals, unresolved = alerts_to_signals(
        payload,
        TargetMapping(),
        lambda namespace, pod: Target(namespace, "cart") if pod.startswith("cart-") else None,
        datetime.now(UTC),
    )
    assert unresolved == []
    [signal] = signals
    assert signal.target == Target("shop", "cart")
    assert signal.status is SignalStatus.FIRING
    assert signal.summary == "crash loop"
    assert signal.key.startswith(f"am:{sent['alerts'][0]['fingerprint']}:firing:")
    assert payload.alerts[0].ends_at is None or payload.alerts[0].ends_at > signal.started_at
