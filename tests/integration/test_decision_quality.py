"""Decision quality end to end: thin evidence, late alerts, one record per incident.

Real Prometheus and Alertmanager, kubesim, the in-process daemon, the pager sink.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import Phase, Target
from rollbackd.testing.promstack import instant_query
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack") as started:
        yield started


def pages(stack: Stack) -> list[dict[str, Any]]:
    return [r.json for r in stack.sink.requests_to(PAGERDUTY_PATH) if isinstance(r.json, dict)]


async def deploy_stable_v1(stack: Stack, **behaviour: Any) -> None:
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(**behaviour), replicas=1)
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)


async def test_one_failed_request_in_the_window_never_rolls_back(stack: Stack) -> None:
    # One pod at 0.05 req/s, every request failing, 10 s windows: rate() makes a
    # single 5xx read as about 0.1 req/s, which a rate gate alone would let through.
    await deploy_stable_v1(stack, rps=0.05)
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=0.05, error_rate=1.0))
    await stack.wait_rollout_complete(SHOP.name)

    async def failed_request_in_window() -> bool:
        found = await instant_query(
            stack.prometheus.url,
            'sum(increase(http_requests_total{deployment="shop",code=~"5.."}[10s]))',
        )
        return bool(found) and float(found[0]["value"][1]) > 0

    await wait_for(failed_request_in_window, 60, "a 5xx inside the 10 s window", interval=0.5)

    # The failed request stays in the window for 10 s: the poller (1 s, for_count 2)
    # and the alert rule (for: 2s) see it throughout. Judged once it has left.
    async def window_clear_again() -> bool:
        return not await failed_request_in_window()

    await wait_for(window_clear_again, 60, "the 5xx to leave the 10 s window", interval=0.5)

    assert await stack.daemon.journal.list_rollbacks(target=SHOP) == []
    decisions = await stack.daemon.journal.decisions(target=SHOP, limit=100)
    assert all(d["action"] != "rollback" for d in decisions), decisions
    assert await stack.revision(SHOP.name) == 2


def webhook_headers(stack: Stack) -> dict[str, str]:
    token = stack.settings.webhook.bearer_token_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


async def post_alert(stack: Stack, *, fingerprint: str, starts_at: datetime) -> dict[str, Any]:
    body = {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "DeploymentHighErrorRatio",
                    "namespace": SHOP.namespace,
                    "deployment": SHOP.name,
                },
                "annotations": {},
                "startsAt": starts_at.isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.webhook_url,
            data=json.dumps(body),
            headers={"Content-Type": "application/json", **webhook_headers(stack)},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        found: dict[str, Any] = await resp.json()
        return found


async def test_an_alert_that_began_before_the_rollback_never_pages_after_it(
    stack: Stack,
) -> None:
    await deploy_stable_v1(stack, rps=20)
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))
    began = datetime.now(UTC)
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED
    await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)  # trigger + resolve
    before = len(pages(stack))

    # A slow rule (or a replay) reports the old anomaly after the rollback finished.
    await post_alert(stack, fingerprint="late-1", starts_at=began)

    async def attributed() -> bool:
        timeline = await stack.daemon.journal.timeline(rollback.id)
        return any(e.kind == "signal_attributed" for e in timeline)

    await wait_for(attributed, 20, "the late alert to join the finished rollback")
    decisions = await stack.daemon.journal.decisions(target=SHOP, limit=100)
    assert decisions[0]["reason_code"] == "anomaly_before_restore"
    assert decisions[0]["rollback_id"] == rollback.id
    assert len(pages(stack)) == before  # no "restored revision breaches" page
