"""Blue-green end to end, on real servers: a selector switch to a bad colour is switched back.

kubesim serves the cluster and the workload's metrics (only the colour the
Service selects gets traffic); the real Prometheus scrapes them and evaluates
the alert rules; the real Alertmanager posts to rollbackd, which also polls.
The daemon learns when the switch happened from the Service's managedFields.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.bluegreen import ANNOTATION_BLUEGREEN
from rollbackd.model import Phase, Target
from rollbackd.testing.stack import (
    OPERATOR_HEADERS,
    PAGERDUTY_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BLUE = Target("default", "shop-blue")
GREEN = Target("default", "shop-green")
SERVICE = "/api/v1/namespaces/default/services"


def colour(name: str, image: str, behaviour: dict[str, str]) -> dict[str, Any]:
    manifest = deployment_manifest(f"shop-{name}", image=image, behaviour=behaviour)
    labels = {"app": "shop", "version": name}
    manifest["spec"]["selector"] = {"matchLabels": labels}
    manifest["spec"]["template"]["metadata"]["labels"] = labels
    return manifest


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack") as started:
        yield started


async def release_a_bad_green(stack: Stack, annotations: dict[str, str] | None = None) -> None:
    """blue serves and is stable; green (30 % errors) is deployed; the selector moves to green."""
    await stack.create_deployment(colour("blue", "registry.example/shop:1.4.0", knobs()))
    await stack.create_deployment(
        colour("green", "registry.example/shop:1.5.0", knobs(error_rate=0.3))
    )
    await stack._request(
        "POST",
        SERVICE,
        {
            "metadata": {
                "name": "shop",
                "annotations": {"rollbackd.io/strategy": "blue-green", **(annotations or {})},
            },
            "spec": {
                "selector": {"app": "shop", "version": "blue"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        },
    )
    await stack.wait_rollout_complete(BLUE.name)
    await stack.wait_rollout_complete(GREEN.name)
    await asyncio.sleep(3.5)  # blue has run longer than policy.min_stable (3s)

    # The release: kubectl patch svc shop -p '{"spec":{"selector":{"version":"green"}}}'
    await stack._request(
        "PATCH",
        f"{SERVICE}/shop?fieldManager=kubectl-patch",
        {"spec": {"selector": {"version": "green"}}},
        content_type="application/strategic-merge-patch+json",
    )


async def test_a_bad_colour_is_switched_back_verified_and_scaled_down(stack: Stack) -> None:
    await release_a_bad_green(stack)
    switched = time.monotonic()

    rollback = await stack.wait_rollback(GREEN, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    print(f"\nselector switch -> ROLLBACK_COMPLETED: {time.monotonic() - switched:.1f}s")

    service = await stack._request("GET", f"{SERVICE}/shop")
    assert service["spec"]["selector"] == {"app": "shop", "version": "blue"}

    async def green_scaled_down() -> bool:
        green = await stack.deployment(GREEN.name)
        annotations = green["metadata"].get("annotations") or {}
        return green["spec"]["replicas"] == 0 and ANNOTATION_BLUEGREEN not in annotations

    await wait_for(green_scaled_down, 20, "green scaled to 0 after ROLLBACK_COMPLETED")

    # Verification judged blue (the colour now serving) over three fresh intervals.
    timeline = await stack.daemon.journal.timeline(rollback.id)
    kinds = [entry.kind for entry in timeline]
    assert len([k for k in kinds if k.startswith("verify")]) >= 3, kinds
    # Exactly one rollback, although Alertmanager and the poller both fired.
    assert [r.id for r in await stack.daemon.journal.list_rollbacks(target=GREEN)] == [rollback.id]

    # The API says which strategy ran and what it changed.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.daemon.url}/api/v1/rollbacks/{rollback.id}", headers=OPERATOR_HEADERS
        ) as resp,
    ):
        body = await resp.json()
    plan = next(e for e in body["timeline"] if e["kind"] == "plan")
    assert plan["message"].startswith(
        "blue-green: switching Service shop selector version=green -> version=blue (shop-blue)"
    )
    assert plan["data"]["strategy"] == "blue-green"
    assert plan["data"]["changes"]["selector_before"]["version"] == "green"
    assert plan["data"]["changes"]["selector_after"]["version"] == "blue"
    assert any(e["kind"] == "cleanup" for e in body["timeline"])

    # The page: info trigger, then its resolve.
    sent = await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)
    assert [r.json["event_action"] for r in sent] == ["trigger", "resolve"]
    assert (
        "switching Service shop selector version=green -> version=blue"
        in (sent[0].json["payload"]["summary"])
    )


async def test_a_cleanup_left_undone_is_done_by_the_next_start(stack: Stack) -> None:
    # rollbackd's PATCHes of shop-green: PLANNING, ROLLING_BACK (with the record),
    # VERIFYING, ROLLBACK_COMPLETED; the fifth, the cleanup, is refused.
    stack.sim.faults.fail("patch", r"/deployments/shop-green$", 403, count=1, after=4)
    await release_a_bad_green(stack)
    rollback = await stack.wait_rollback(GREEN, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason

    async def cleanup_failed() -> bool:
        timeline = await stack.daemon.journal.timeline(rollback.id)
        return any(entry.kind == "cleanup_failed" for entry in timeline)

    await wait_for(cleanup_failed, 20, "the refused cleanup to be journaled")
    green = await stack.deployment(GREEN.name)
    assert (
        green["spec"]["replicas"] == 2 and ANNOTATION_BLUEGREEN in green["metadata"]["annotations"]
    )

    await stack.stop_daemon()
    await stack.start_daemon()

    async def cleaned_up() -> bool:
        green = await stack.deployment(GREEN.name)
        annotations = green["metadata"].get("annotations") or {}
        return green["spec"]["replicas"] == 0 and ANNOTATION_BLUEGREEN not in annotations

    await wait_for(cleaned_up, 30, "the restarted daemon to finish the cleanup")
    timeline = await stack.daemon.journal.timeline(rollback.id)
    assert [e.message for e in timeline if e.kind == "cleanup"] == [
        "scaled default/shop-green 2 -> 0"
    ]
    service = await stack._request("GET", f"{SERVICE}/shop")
    assert service["spec"]["selector"]["version"] == "blue"


async def test_a_colour_label_the_selector_lacks_pages_and_switches_nothing(stack: Stack) -> None:
    await release_a_bad_green(stack, {"rollbackd.io/color-label": "track"})

    page = await stack.sink.wait_for(
        lambda r: r.path == PAGERDUTY_PATH and isinstance(r.json, dict), timeout=60
    )
    assert page.json["payload"]["severity"] == "critical"
    summary = page.json["payload"]["summary"]
    assert "the selector of Service shop has no 'track' key" in summary
    assert "nothing was switched: manual rollback needed" in summary
    [record] = await stack.daemon.journal.list_rollbacks(target=GREEN)
    assert (record.phase, record.reason_code) == (Phase.ESCALATED, "color_label_invalid")
    service = await stack._request("GET", f"{SERVICE}/shop")
    assert service["spec"]["selector"]["version"] == "green"
    green = await stack.deployment(GREEN.name)
    assert green["spec"]["replicas"] == 2
