"""Smoke checks end to end: kubesim, the real Prometheus and Alertmanager, rollbackd.

A bad rollout (errors in the metrics) is rolled back; verification then asks
the restored version its smoke check through the API server's service proxy,
which kubesim answers from the pods' behaviour knobs. A restored version that
answers the check completes; one that answers 500 on the checked path (its
metrics look fine: the path is rarely used) ends ESCALATED, and the page
quotes the check, the status and the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from rollbackd.config.smoke import ANNOTATION_SMOKE_CHECKS
from rollbackd.model import Phase, Target
from rollbackd.testing.kubesim.proxy import KNOB_FAILING_PATHS
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
ORDERS_CHECK = {
    "name": "orders",
    "url": "/orders?probe={deployment}",
    "port": "http",
    "expect_json": [{"path": "status", "equals": "ok"}],
    "timeout": "3s",
}


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    # kubesim serves the service proxy; there is no cluster DNS on loopback.
    overrides = {
        "verify": {
            "intervals": 3,
            "timeout": "60s",
            "smoke_checks": [ORDERS_CHECK],
            "smoke_via": "service-proxy",
        }
    }
    async with Stack(tmp_path / "stack", overrides=overrides) as started:
        yield started


async def roll_back_to_v1(stack: Stack, v1_behaviour: Mapping[str, str]) -> Any:
    """v1 (checked by "orders") stable behind Service shop, a bad v2, and the rollback's end."""
    await bad_rollout_over(stack, v1_behaviour)
    return await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))


async def bad_rollout_over(stack: Stack, v1_behaviour: Mapping[str, str]) -> None:
    """v1 (checked by "orders") stable behind Service shop, then a v2 failing 30 %."""
    stack.sim.store.create(
        "v1/services",
        {
            "metadata": {"name": "shop", "namespace": SHOP.namespace},
            "spec": {
                "selector": {"app": SHOP.name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    )
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name,
            image=V1,
            behaviour=v1_behaviour,
            annotations={ANNOTATION_SMOKE_CHECKS: "orders"},
        )
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: only a stable v1 is restored
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.3))


async def verify_details(stack: Stack, rollback_id: str) -> list[str]:
    timeline = await stack.daemon.journal.timeline(rollback_id)
    return [str(e.data.get("detail")) for e in timeline if e.kind == "verify_interval"]


async def test_a_restored_version_that_passes_its_smoke_check_completes(stack: Stack) -> None:
    rollback = await roll_back_to_v1(stack, knobs())
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    details = await verify_details(stack, rollback.id)
    assert len(details) >= 3
    assert all(
        'smoke check "orders" GET /orders?probe=shop on service shop:http: 200' in detail
        for detail in details[-3:]
    ), details
    # The checks went through the API server's service proxy, as rollbackd.
    proxied = [r for r in stack.sim.requests if "/services/shop:http/proxy/orders" in r.path]
    assert len(proxied) >= 3


async def test_a_restored_version_failing_its_smoke_check_is_escalated_quoting_it(
    stack: Stack,
) -> None:
    # v1's metrics are healthy, but it answers 500 on /orders.
    rollback = await roll_back_to_v1(stack, {**knobs(), KNOB_FAILING_PATHS: "/orders"})
    assert rollback.phase is Phase.ESCALATED, rollback.reason
    assert rollback.reason_code == "verify_smoke_failed"

    critical = await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("payload", {}).get("severity") == "critical"
        ),
        timeout=20,
    )
    payload = critical.json["payload"]
    assert critical.json["dedup_key"] == rollback.id
    for quoted in ('smoke check "orders"', "status 500, expected 200", '"status": "error"'):
        assert quoted in payload["summary"], payload["summary"]
    assert payload["custom_details"]["reason_code"] == "verify_smoke_failed"
    # One failed interval is enough: it is evidence, not missing data.
    assert len(await verify_details(stack, rollback.id)) == 1
