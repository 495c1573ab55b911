"""Pod health end to end: a new version that crash-loops with no metric breach is rolled back.

kubesim runs v2's containers into CrashLoopBackOff (``crash-after`` shorter
than readiness: never Ready, so it serves nothing and no error ratio or
latency ever breaches, and Prometheus and Alertmanager stay quiet). The
pod_health signal (source kubernetes) alone decides; rollbackd rolls back to
v1, verifies it against the real Prometheus, completes, and the page names
the pod, the container and the reason. The same for an Argo Rollout's
canary, which is aborted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rollbackd.model import Phase, SignalSource, Target
from rollbackd.testing.kubesim.controllers.crashloop import KNOB_CRASH_AFTER
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs, wait_for
from tests.integration.test_e2e_argo import aborts, released
from tests.integration.test_e2e_argo import status as argo_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    overrides = {"sources": {"kubernetes": {"pod_health": {"interval": "1s"}}}}
    async with Stack(tmp_path / "stack", overrides=overrides) as started:
        yield started


async def test_a_crash_looping_version_with_no_metric_breach_is_rolled_back_and_completes(
    stack: Stack,
) -> None:
    await stack.create_deployment(deployment_manifest(SHOP.name, image=V1, behaviour=knobs()))
    await stack.wait_rollout_complete(SHOP.name)
    v1 = await stack.deployment(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: only a stable v1 is restored

    # v2 exits 200 ms after each start, before its 300 ms readiness: never Ready.
    await stack.roll_out(SHOP.name, image=V2, behaviour={**knobs(), KNOB_CRASH_AFTER: "200ms"})
    rollback = await stack.wait_rollback(
        SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"), timeout=60
    )
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    assert (rollback.from_revision, rollback.to_revision) == (2, 1)

    # v1's template runs again; the crash-looping pods are gone.
    dep = await stack.deployment(SHOP.name)
    assert dep["spec"]["template"] == v1["spec"]["template"]

    # Only pod health spoke: no metric breached, so neither Prometheus nor Alertmanager did.
    timeline = await stack.daemon.journal.timeline(rollback.id)
    sources = {str(e.data.get("source")) for e in timeline if e.kind == "signal"}
    assert sources == {SignalSource.KUBERNETES.value}, sources
    [decided] = [
        d for d in await stack.daemon.journal.decisions(target=SHOP) if d["action"] == "rollback"
    ]
    # The decision names the ReplicaSet, the pod, the container and the reason.
    reason = decided["reason"]
    assert "pod_health: 1 of 1 pods of ReplicaSet shop-" in reason, reason
    assert re.search(r"shop-\w+-\w+ container app (CrashLoopBackOff|restarted)", reason), reason

    # The page carries that sentence.
    trigger = await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("event_action") == "trigger"
        ),
        timeout=20,
    )
    assert trigger.json["payload"]["custom_details"]["reason"] == reason

    # The signal resolves once the restored ReplicaSet is current and healthy.
    async def resolved() -> bool:
        rows = await stack.daemon.journal.decisions(target=SHOP)
        return any(r["reason_code"] == "signal_resolved" for r in rows)

    await wait_for(resolved, 20, "the pod_health signal's resolution")


async def test_a_crash_looping_argo_canary_with_no_metric_breach_is_aborted(stack: Stack) -> None:
    """The same source on an Argo Rollout: its canary's pods crash, the canary is aborted."""
    stable = await released(stack, canary={**knobs(), KNOB_CRASH_AFTER: "200ms"})

    rollback = await stack.wait_rollback(
        SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"), timeout=60
    )

    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback.reason
    final = await argo_status(stack)
    assert final["abort"] is True and final["stableRS"] == stable and len(aborts(stack)) == 1
    timeline = await stack.daemon.journal.timeline(rollback.id)
    sources = {str(e.data.get("source")) for e in timeline if e.kind == "signal"}
    assert sources == {SignalSource.KUBERNETES.value}, sources  # only pod health spoke
    [decided] = [
        d for d in await stack.daemon.journal.decisions(target=SHOP) if d["action"] == "rollback"
    ]
    assert "pod_health: 1 of 1 pods of ReplicaSet shop-" in decided["reason"], decided
