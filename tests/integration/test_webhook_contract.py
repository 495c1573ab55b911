"""Contract: what the real Alertmanager sends passes the webhook's checks as it is.

The webhook answers 415 to anything not declared ``application/json`` and
validates each alert on its own; this proves neither refuses a real
Alertmanager's request, so tightening them cannot silently drop pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from rollbackd.metrics import Metrics
from rollbackd.model import Rollback, Target
from rollbackd.server import AcceptResult, AuthSettings, create_app
from rollbackd.sources.alertmanager import (
    RejectedAlert,
    WebhookAlert,
    parse_body,
    raw_alert_key,
    validate_alert,
)
from rollbackd.testing.promstack import AlertmanagerServer, poll_until

pytestmark = pytest.mark.integration


class ParsingSink:
    """The intake's parsing steps, recording what each body became."""

    def __init__(self) -> None:
        self.checked: list[WebhookAlert | RejectedAlert] = []
        self.keys: list[str | None] = []
        self.arrived = asyncio.Event()

    async def accept_alerts(self, body: bytes) -> AcceptResult:
        raw = parse_body(body)
        checked = [validate_alert(i, alert) for i, alert in enumerate(raw.raw_alerts)]
        self.keys += [raw_alert_key(alert) for alert in raw.raw_alerts]
        self.checked += checked
        self.arrived.set()
        rejected = [c.as_json() for c in checked if isinstance(c, RejectedAlert)]
        return AcceptResult(len(checked) - len(rejected), 0, 0, rejected=rejected)


class NoJournal:
    async def list_rollbacks(
        self, *, limit: int = 50, target: Target | None = None
    ) -> list[Rollback]:
        return []

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        return None

    async def timeline(self, rollback_id: str) -> list[Any]:
        return []

    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None:
        return None


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, ParsingSink, Metrics]]:
    sink, metrics = ParsingSink(), Metrics()
    app = create_app(
        alert_sink=sink,
        journal=NoJournal(),
        metrics=metrics,
        readiness=lambda: (True, "test"),
        auth=AuthSettings(allow_unauthenticated=True),  # the contract, not auth, is under test
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/alerts", sink, metrics
    finally:
        await runner.cleanup()


async def test_a_real_alertmanager_request_is_taken_as_sent(
    alertmanager_factory: Any, webhook: tuple[str, ParsingSink, Metrics]
) -> None:
    url, sink, metrics = webhook
    am: AlertmanagerServer = await alertmanager_factory(url)
    labels = {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "cart"}
    await am.post_alerts([{"labels": labels, "annotations": {"summary": "5xx above 5%"}}])

    async def delivered() -> bool | None:
        if sink.checked:
            return True
        sink.arrived.clear()
        try:
            await asyncio.wait_for(sink.arrived.wait(), 1.0)
        except TimeoutError:
            pass
        return None

    await poll_until(delivered, within=20, interval=0, message="a webhook from Alertmanager")

    def answered(code: str) -> float:
        sample = metrics.registry.get_sample_value(
            "rollbackd_webhook_requests_total", {"code": code}
        )
        return sample or 0.0

    assert answered("200") >= 1
    assert answered("415") == answered("422") == answered("400") == 0
    alert = sink.checked[0]
    assert isinstance(alert, WebhookAlert), alert
    assert alert.labels == labels
    assert sink.keys[0] is not None
