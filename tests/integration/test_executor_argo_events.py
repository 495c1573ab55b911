"""The Kubernetes Events of a Rollout's abort name the Rollout, not a Deployment.

Rollout default/web is paused at setWeight 25 with a canary (the helpers of
test_executor_argo.py); the executor aborts it and verifies the stable
version. Its Events must be found the ways an operator looks for them: by the
API's field selectors and with the real ``kubectl get events`` and
``kubectl describe rollout``.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from rollbackd.executor.ports import EVENT_STARTED, EVENT_VERIFIED
from rollbackd.kube import Kube
from rollbackd.model import Phase
from rollbackd.testing.kubesim import KubeSim
from tests.integration.test_executor_argo import WEB, paused_canary
from tests.integration.test_executor_argo_run import Journal, decided, executor
from tests.integration.test_executor_rolling import FakeSignals, RecordingPager
from tests.kubesim.kubectl_helpers import make_kubectl

pytestmark = pytest.mark.integration

EVENTS = "/api/v1/namespaces/default/events"


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig), retry_budget=5.0) as k:
        yield k


async def events(kube: Kube, selector: str) -> list[dict[str, Any]]:
    """rollbackd's Events matching the field ``selector``."""
    listing = await kube.request("GET", EVENTS, query=[("fieldSelector", selector)])
    return [e for e in listing.get("items") or () if e.get("reportingComponent") == "rollbackd"]


async def aborted(kube: Kube, journal: Journal | None = None) -> None:
    """The canary of Rollout default/web aborted by the executor, the stable version verified."""
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    recorder = journal or Journal()
    done = await executor(kube, recorder, RecordingPager(), FakeSignals()).run(rollback, decision)
    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason


async def test_the_events_of_an_abort_name_the_rollout_by_kind_group_and_uid(
    kube: Kube, kubesim: KubeSim, tmp_path: pathlib.Path
) -> None:
    await aborted(kube)
    uid = (await kube.read_rollout(WEB))["metadata"]["uid"]

    on_rollout = await events(kube, "involvedObject.kind=Rollout,involvedObject.name=web")

    assert sorted(e["reason"] for e in on_rollout) == [EVENT_STARTED, EVENT_VERIFIED]
    for event in on_rollout:
        assert event["involvedObject"] == {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "name": "web",
            "namespace": "default",
            "uid": uid,
        }
    assert await events(kube, "involvedObject.kind=Deployment") == []

    kubectl = await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")
    listed = await kubectl.json("get", "events", "--field-selector", "involvedObject.kind=Rollout")
    assert {EVENT_STARTED, EVENT_VERIFIED} <= {e["reason"] for e in listed["items"]}
    described = (await kubectl.run("describe", "rollout", "web")).stdout
    events_section = described.split("Events:", 1)[1]
    assert EVENT_STARTED in events_section and EVENT_VERIFIED in events_section


async def test_events_refused_never_stop_the_abort(kube: Kube, kubesim: KubeSim) -> None:
    """An RBAC without ``create`` on events (403): each Event is logged as not emitted."""
    kubesim.faults.fail("POST", f"^{EVENTS}$", 403, count=100)

    with capture_logs() as logs:
        await aborted(kube)

    assert {e["reason"] for e in logs if e["event"] == "event_not_emitted"} == {
        EVENT_STARTED,
        EVENT_VERIFIED,
    }
