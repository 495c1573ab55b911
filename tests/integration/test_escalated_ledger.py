"""``rollbackd.io/escalated`` against kubesim through the real Kubernetes adapter.

The record the next leader reads must be written like every other write
(fresh read, resourceVersion, the fence), read back through the watch
cache, touch nothing but metadata, and never raise into the page's path.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from rollbackd.incidents import IncidentMark
from rollbackd.kube import Kube
from rollbackd.model import Target
from rollbackd.notify.escalated import EscalatedLedger
from rollbackd.notify.model import Notification, NotificationKind
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.stack import wait_for

pytestmark = pytest.mark.integration

DEPLOYMENTS = "apps/v1/deployments"
WEB = Target("default", "web")
REASON = "no_recent_rollout"
KEY = "esc-default-web-no_recent_rollout-1"
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PATCH_WEB = r"/apis/apps/v1/namespaces/default/deployments/web$"


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WEB.name, "namespace": WEB.namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:1.0"}]},
            },
        },
    }


def page() -> Notification:
    return Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key=KEY,
        target=WEB,
        summary="default/web: not caused by a recent rollout",
        details={"reason_code": REASON},
        created_at=AT,
    )


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    adapter = await Kube.connect(kubeconfig=str(kubesim.kubeconfig))
    async with adapter:
        # Through the API, defaults and all, as kubectl would create it.
        await adapter.request(
            "POST", "/apis/apps/v1/namespaces/default/deployments", body=deployment()
        )
        await adapter.start_watches()
        assert await adapter.wait_synced(10), "watch cache never synced"
        await wait_for(_async(lambda: adapter.cached_deployment(WEB)), 10, "web in the cache")
        yield adapter


def _async(read: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def probe() -> Any:
        return read()

    return probe


def stored(sim: KubeSim) -> dict[str, Any]:
    return sim.store.get(DEPLOYMENTS, WEB.namespace, WEB.name)


async def test_a_claim_and_its_deliveries_are_read_back_from_the_watch_cache(
    kubesim: KubeSim, kube: Kube
) -> None:
    ledger = EscalatedLedger(kube, route=lambda n: {"pagerduty", "slack"})
    before = copy.deepcopy(stored(kubesim))
    await ledger.claim(WEB, REASON, KEY, AT)
    await ledger.delivered(page(), "pagerduty")
    await ledger.delivered(page(), "slack")

    async def covered() -> bool:
        marks = ledger.marks(WEB) or {}
        return REASON in marks and marks[REASON].covered

    await wait_for(covered, 10, "both deliveries in the watch cache")
    assert (ledger.marks(WEB) or {})[REASON] == IncidentMark(
        KEY, AT, frozenset({"pagerduty", "slack"}), frozenset({"pagerduty", "slack"})
    )
    after = stored(kubesim)
    # Metadata only: no new rollout, nothing for a GitOps tool's template diff.
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1.0"
    assert after["metadata"].get("generation") == before["metadata"].get("generation"), (
        before["metadata"],
        after["metadata"],
    )


async def test_a_replica_that_does_not_hold_the_lease_records_nothing(
    kubesim: KubeSim, kube: Kube
) -> None:
    kube.fence.require_lease()  # leader election on, no grant: not the leader
    ledger = EscalatedLedger(kube)
    with capture_logs() as logs:
        await ledger.delivered(page(), "pagerduty")  # returns: the page is not held back
    assert "rollbackd.io/escalated" not in (stored(kubesim)["metadata"].get("annotations") or {})
    assert "escalated_mark_failed" in [e["event"] for e in logs], logs


@pytest.mark.parametrize("status", [409, 500])
async def test_a_refused_write_is_retried_on_a_fresh_read_then_given_up_quietly(
    kubesim: KubeSim, kube: Kube, status: int
) -> None:
    ledger = EscalatedLedger(kube)
    kubesim.faults.fail("PATCH", PATCH_WEB, status, count=1)
    await ledger.delivered(page(), "pagerduty")
    annotations = stored(kubesim)["metadata"].get("annotations") or {}
    if status == 409:  # lost a race: read again, written
        assert KEY in annotations["rollbackd.io/escalated"]
    else:  # the API server failing: logged, the page went out anyway
        assert "rollbackd.io/escalated" not in annotations


async def test_a_slow_api_server_delays_the_page_by_the_write_timeout_at_most(
    kubesim: KubeSim, kube: Kube
) -> None:
    ledger = EscalatedLedger(kube, timeout=0.3)
    kubesim.faults.delay("PATCH", PATCH_WEB, 30.0)
    started = asyncio.get_running_loop().time()
    with capture_logs() as logs:
        await ledger.delivered(page(), "pagerduty")
    assert asyncio.get_running_loop().time() - started < 5
    assert "escalated_mark_failed" in [e["event"] for e in logs], logs
