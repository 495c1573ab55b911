"""A workload named ``rollout`` in the metrics, end to end, on real servers.

kubesim's exporter labels the pods of an Argo Rollout ``rollout="shop"``
and never ``deployment`` (as a fleet whose exporters say ``rollout`` does);
the real Prometheus scrapes them; rollbackd runs with
``prometheus.deployment_label: rollout`` and no alert rules, so only its own
poller can see the failing canary. It must find it by that label, abort it,
verify the stable version with queries narrowed by that label, and measure
the postmortem's impact by it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.model import Phase
from rollbackd.promql import PromQL
from rollbackd.testing.stack import OPERATOR_HEADERS, Stack, knobs, wait_for
from tests.integration.test_e2e_argo import ROLLOUTS, SHOP, rollout, status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NO_RULES = "groups: []\n"


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    async with Stack(
        tmp_path / "stack",
        alert_rules=NO_RULES,
        workload_label="rollout",
        overrides={"prometheus": {"deployment_label": "rollout"}},
    ) as started:
        yield started


async def test_the_poller_finds_and_aborts_a_canary_named_only_by_the_rollout_label(
    stack: Stack,
) -> None:
    await stack._request("POST", ROLLOUTS, rollout("registry.example/shop:1.4.0", knobs()))

    async def healthy() -> dict[str, Any] | None:
        found = await status(stack)
        return found if found.get("phase") == "Healthy" else None

    stable = (await wait_for(healthy, 30, "the first version Healthy"))["stableRS"]
    promql = PromQL(stack.prometheus.url, timeout=3.0, attempts=2)
    try:

        async def scraped() -> bool | None:
            found = await promql.query('count(http_requests_total{rollout="shop"})')
            return True if found and found[0].value > 0 else None

        await wait_for(scraped, 30, "shop's series scraped under rollout")
        # The label rollbackd would look for without the key is nowhere: it must use "rollout".
        assert await promql.query('http_requests_total{deployment!=""}') == []
    finally:
        await promql.close()

    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": knobs(error_rate=0.6)},
                "spec": {"containers": [{"name": "app", "image": "registry.example/shop:1.5.0"}]},
            }
        }
    }
    await stack._request(
        "PATCH", f"{ROLLOUTS}/shop", patch, content_type="application/merge-patch+json"
    )
    released = time.monotonic()

    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    print(f"\nrollout-labelled canary -> ROLLBACK_COMPLETED: {time.monotonic() - released:.1f}s")
    aborted = await status(stack)
    assert aborted["abort"] is True and aborted["stableRS"] == stable

    # The poller decided it (there are no alert rules, so no Alertmanager signal).
    decisions = await stack.daemon.journal.decisions(target=SHOP)
    keys = [str(d["signal_key"]) for d in decisions]
    assert keys and all(key.startswith("prom:default/shop:") for key in keys), keys

    # Verification judged the stable version by the label: healthy intervals, not no data.
    timeline = await stack.daemon.journal.timeline(rollback.id)
    healthy = [e for e in timeline if e.kind == "verify_interval" and e.data.get("healthy")]
    assert len(healthy) >= 3, [(e.kind, e.data) for e in timeline]
    assert all("error_ratio" in str(e.data.get("detail")) for e in healthy), healthy

    # The postmortem's impact was asked by the label and measured.
    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS) as session:
        url = f"{stack.daemon.url}/api/v1/rollbacks/{rollback.id}/report?format=json"
        async with session.get(url) as resp:
            assert resp.status == 200
            report = await resp.json()
    impact = report["impact"]
    assert impact["status"] == "measured", impact
    assert 'rollout="shop"' in impact["total_query"] and impact["total_requests"] > 0, impact
