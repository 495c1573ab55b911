"""Canary end to end, on real servers: a breaching canary is scaled to 0, the stable verified.

kubesim serves the cluster and the workload's metrics (both Deployments sit
behind one Service and take traffic by replicas); the real Prometheus scrapes
them and evaluates the alert rules; the real Alertmanager posts to rollbackd,
which also polls. The canary is ``shop-canary``, annotated
``rollbackd.io/canary-of: shop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.canary import ANNOTATION_CANARY_REPLICAS
from rollbackd.model import Phase, Target
from rollbackd.testing.stack import (
    OPERATOR_HEADERS,
    PAGERDUTY_PATH,
    Stack,
    deployment_manifest,
    knobs,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STABLE = Target("default", "shop")
CANARY = Target("default", "shop-canary")


def track(name: str, image: str, behaviour: dict[str, str], replicas: int) -> dict[str, Any]:
    manifest = deployment_manifest(name, image=image, behaviour=behaviour)
    labels = {"app": "shop", "track": "canary" if name.endswith("canary") else "stable"}
    manifest["spec"]["replicas"] = replicas
    manifest["spec"]["selector"] = {"matchLabels": labels}
    manifest["spec"]["template"]["metadata"]["labels"] = labels
    return manifest


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack") as started:
        yield started


async def release_a_bad_canary(stack: Stack, canary_of: str = "shop") -> None:
    """The stable serves behind Service shop; a canary failing 30 % is deployed beside it."""
    await stack.create_deployment(track("shop", "registry.example/shop:1.4.0", knobs(), 2))
    await stack._request(
        "POST",
        "/api/v1/namespaces/default/services",
        {
            "metadata": {"name": "shop"},
            "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    await stack.wait_rollout_complete(STABLE.name)
    canary = track("shop-canary", "registry.example/shop:1.5.0", knobs(error_rate=0.3), 1)
    canary["metadata"].setdefault("annotations", {})["rollbackd.io/canary-of"] = canary_of
    await stack.create_deployment(canary)


async def test_a_breaching_canary_is_scaled_to_zero_and_the_stable_verified(stack: Stack) -> None:
    await release_a_bad_canary(stack)

    rollback = await stack.wait_rollback(CANARY, phases=("ROLLBACK_COMPLETED", "ESCALATED"))

    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    canary = await stack.deployment(CANARY.name)
    assert canary["spec"]["replicas"] == 0
    assert canary["metadata"]["annotations"][ANNOTATION_CANARY_REPLICAS] == "1"
    stable = await stack.deployment(STABLE.name)
    assert stable["spec"]["replicas"] == 2
    # Verification judged the stable Deployment over three fresh intervals.
    timeline = await stack.daemon.journal.timeline(rollback.id)
    assert len([e for e in timeline if e.kind.startswith("verify")]) >= 3
    assert [r.id for r in await stack.daemon.journal.list_rollbacks(target=CANARY)] == [rollback.id]
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.daemon.url}/api/v1/rollbacks/{rollback.id}", headers=OPERATOR_HEADERS
        ) as resp,
    ):
        body = await resp.json()
    plan = next(e for e in body["timeline"] if e["kind"] == "plan")
    assert plan["data"]["strategy"] == "canary"
    assert plan["data"]["changes"]["replicas_scaled"] == [
        {"deployment": "shop-canary", "from": 1, "to": 0}
    ]
    sent = await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)
    assert [r.json["event_action"] for r in sent] == ["trigger", "resolve"]
    summary = sent[0].json["payload"]["summary"]
    assert "scaling canary shop-canary 1 -> 0" in summary
    assert ANNOTATION_CANARY_REPLICAS in summary


async def test_a_canary_of_a_missing_deployment_pages_and_scales_nothing(stack: Stack) -> None:
    await release_a_bad_canary(stack, canary_of="shop-typo")

    page = await stack.sink.wait_for(
        lambda r: r.path == PAGERDUTY_PATH and isinstance(r.json, dict), timeout=60
    )
    summary = page.json["payload"]["summary"]
    assert "rollbackd.io/canary-of: shop-typo, which does not exist" in summary
    assert "nothing was scaled or re-weighted: manual rollback needed" in summary
    [record] = await stack.daemon.journal.list_rollbacks(target=CANARY)
    assert (record.phase, record.reason_code) == (Phase.ESCALATED, "canary_stable_not_found")
    canary = await stack.deployment(CANARY.name)
    assert canary["spec"]["replicas"] == 1


ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"


async def test_a_breaching_weighted_canary_gets_weight_zero_and_the_stable_the_total(
    stack: Stack,
) -> None:
    await stack.create_deployment(track("shop", "registry.example/shop:1.4.0", knobs(), 2))
    for name in ("shop-stable", "shop-canary"):
        selector = {"app": "shop", "track": name.removeprefix("shop-")}
        await stack._request(
            "POST",
            "/api/v1/namespaces/default/services",
            {
                "metadata": {"name": name},
                "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )
    refs = [
        {"name": "shop-stable", "port": 80, "weight": 50},
        {"name": "shop-canary", "port": 80, "weight": 50},
    ]
    await stack._request(
        "POST",
        ROUTES,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": refs}]},
        },
    )
    await stack.wait_rollout_complete(STABLE.name)
    canary = track("shop-canary", "registry.example/shop:1.5.0", knobs(error_rate=0.3), 1)
    canary["metadata"].setdefault("annotations", {}).update(
        {"rollbackd.io/canary-of": "shop", "rollbackd.io/canary-route": "shop"}
    )
    await stack.create_deployment(canary)

    rollback = await stack.wait_rollback(CANARY, phases=("ROLLBACK_COMPLETED", "ESCALATED"))

    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    route = await stack._request("GET", f"{ROUTES}/shop")
    weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"shop-stable": 100, "shop-canary": 0}
    assert (await stack.deployment(CANARY.name))["spec"]["replicas"] == 1  # kept for inspection
    sent = await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)
    assert "weight to 0 in HTTPRoute shop" in sent[0].json["payload"]["summary"]
