"""Argo Rollouts end to end, on real servers: a canary paused at setWeight 25 that fails is aborted.

kubesim runs the Rollout's canary controller and serves its pods' metrics
(labelled with the Rollout's name as ``deployment``); the real Prometheus
scrapes them and evaluates the alert rules; the real Alertmanager posts to
rollbackd, which also polls. No Deployment named ``shop`` exists: the signals
are judged against the Rollout, and the rollback is the abort.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.model import ANNOTATION_MODE, Phase, Target
from rollbackd.testing.stack import OPERATOR_HEADERS, PAGERDUTY_PATH, Stack, knobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHOP = Target("default", "shop")
ROLLOUTS = "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts"
HASH = "rollouts-pod-template-hash"


def rollout(
    image: str, behaviour: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop", "annotations": annotations or {}},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}, "annotations": behaviour},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
        },
    }


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack") as started:
        yield started


async def status(stack: Stack) -> dict[str, Any]:
    return dict((await stack._request("GET", f"{ROLLOUTS}/shop")).get("status") or {})


async def released(
    stack: Stack,
    annotations: dict[str, str] | None = None,
    canary: dict[str, str] | None = None,
) -> str:
    """Shop 1.4.0 Healthy, then 1.5.0 as a canary at setWeight 25; the stable hash.

    The canary fails 60 % of its requests unless ``canary`` gives other knobs.
    """
    await stack._request(
        "POST", ROLLOUTS, rollout("registry.example/shop:1.4.0", knobs(), annotations)
    )

    async def healthy() -> dict[str, Any] | None:
        found = await status(stack)
        return found if found.get("phase") == "Healthy" else None

    stable = (await wait_for(healthy, 30, "the first version Healthy"))["stableRS"]
    # The release: the canary gets one pod of four and the steps pause.
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": canary or knobs(error_rate=0.6)},
                "spec": {"containers": [{"name": "app", "image": "registry.example/shop:1.5.0"}]},
            }
        }
    }
    await stack._request(
        "PATCH", f"{ROLLOUTS}/shop", patch, content_type="application/merge-patch+json"
    )
    return str(stable)


def aborts(stack: Stack) -> list[Any]:
    return [
        r for r in stack.sim.requests if r.method == "PATCH" and r.path == f"{ROLLOUTS}/shop/status"
    ]


async def test_a_failing_canary_paused_at_25_is_aborted_and_the_stable_version_verified(
    stack: Stack,
) -> None:
    stable = await released(stack)
    released_at = time.monotonic()

    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    print(f"\ncanary paused at 25 -> ROLLBACK_COMPLETED: {time.monotonic() - released_at:.1f}s")

    aborted = await status(stack)
    assert aborted["abort"] is True and aborted["phase"] == "Degraded"
    assert aborted["stableRS"] == stable  # an abort never promotes
    sets = (await stack._request("GET", "/apis/apps/v1/namespaces/default/replicasets"))["items"]
    replicas = {rs["metadata"]["labels"][HASH]: rs["spec"]["replicas"] for rs in sets}
    assert replicas[stable] == 4 and sum(replicas.values()) == 4  # the canary is at 0
    assert len(aborts(stack)) == 1  # Alertmanager and the poller both fired: one abort

    timeline = await stack.daemon.journal.timeline(rollback.id)
    kinds = [entry.kind for entry in timeline]
    assert len([k for k in kinds if k.startswith("verify")]) >= 3, kinds
    sent = await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)
    assert [r.json["event_action"] for r in sent] == ["trigger", "resolve"]
    assert "aborting Rollout default/shop: canary shop-" in sent[0].json["payload"]["summary"]

    # The API's timeline and the postmortem draft say what was aborted.
    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS) as session:
        async with session.get(f"{stack.daemon.url}/api/v1/rollbacks/{rollback.id}") as resp:
            body = await resp.json()
        async with session.get(f"{stack.daemon.url}/api/v1/rollbacks/{rollback.id}/report") as resp:
            assert resp.status == 200
            report = await resp.text()
    started = next(e for e in body["timeline"] if (e.get("data") or {}).get("changes"))
    assert started["data"]["changes"]["strategy"] == "argo-rollouts"
    assert started["data"]["changes"]["stable_hash"] == stable
    assert "aborting Rollout default/shop" in report
    # The change that caused it: the canary's template against the stable's.
    assert "Bad revision **2**, restored revision **1**." in report
    assert "`registry.example/shop:1.5.0`" in report and "`registry.example/shop:1.4.0`" in report

    # Alertmanager's alert names the Rollout too: it is decided, not dropped as unknown.
    # The rule's alert may never fire here (the poller's lower threshold can abort the
    # canary before the rule's ratio holds for its `for`), so the same alert is also
    # pushed into the real Alertmanager, which posts it to rollbackd as it would the rule's.
    await stack.alertmanager.post_alerts(
        [
            {
                "labels": {
                    "alertname": "DeploymentHighErrorRatio",
                    "namespace": SHOP.namespace,
                    "deployment": SHOP.name,
                    "severity": "page",
                },
                "annotations": {"summary": "default/shop error ratio 0.15"},
            }
        ]
    )

    async def alert_decided() -> dict[str, Any] | None:
        decisions = await stack.daemon.journal.decisions(target=SHOP)
        return next((d for d in decisions if str(d["signal_key"]).startswith("am:")), None)

    decided = await wait_for(alert_decided, 60, "a decision on Alertmanager's alert")
    assert decided["reason_code"] != "target_not_found", decided


async def test_in_approve_mode_the_abort_is_proposed_then_done_once_when_approved_over_the_api(
    stack: Stack,
) -> None:
    stable = await released(stack, {ANNOTATION_MODE: "approve"})
    released_at = time.monotonic()

    proposal = await stack.wait_rollback(SHOP, phases=("PENDING_APPROVAL",), timeout=45)
    page = await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("dedup_key") == proposal.id
            and r.json["payload"]["custom_details"].get("kind") == "approval_requested"
        ),
        timeout=20,
    )
    proposed_after = time.monotonic() - released_at
    summary = page.json["payload"]["summary"]
    canary = (await status(stack))["currentPodHash"]
    assert f"abort Rollout default/shop: canary {canary} to 0, stable {stable} keeps serving" in (
        summary
    )
    assert f"rollbackd approve {proposal.id}" in summary
    assert aborts(stack) == [] and "abort" not in await status(stack)  # asked, not done

    approved_at = time.monotonic()
    async with aiohttp.ClientSession(headers=OPERATOR_HEADERS) as session:
        approve = f"{stack.daemon.url}/api/v1/rollbacks/{proposal.id}/approve"
        async with session.post(approve, json={"by": "alice"}) as resp:
            assert resp.status == 202, await resp.text()
            assert (await resp.json())["phase"] == "PLANNING"

    done = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert (done.id, done.phase) == (proposal.id, Phase.ROLLBACK_COMPLETED), done.reason
    print(
        f"\ncanary released -> proposal paged: {proposed_after:.1f}s; "
        f"approved -> ROLLBACK_COMPLETED: {time.monotonic() - approved_at:.1f}s"
    )
    assert len(aborts(stack)) == 1 and (await status(stack))["stableRS"] == stable
    kinds = [entry.kind for entry in await stack.daemon.journal.timeline(done.id)]
    assert kinds.count("approved") == 1
    assert len([k for k in kinds if k.startswith("verify")]) >= 3, kinds
    # The incident the proposal opened is closed by the rollback's resolve.
    resolved = await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("dedup_key") == proposal.id
            and r.json.get("event_action") == "resolve"
        ),
        timeout=20,
    )
    assert resolved is not None
