"""The pod_health source against kubesim through the real Kubernetes adapter.

Only Deployments with a rollout inside the change window are judged. Their
pods come from the watch cache, with no API call, while its pod watch is
current; while it is not, they are listed by selector. An API server
answering 503 or 429 to the pod watch and lists while the signal fires is no
data (said once), never a trigger and never a crash; when it answers again,
the same anomaly goes on under the same key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import config

from rollbackd.kube import Kube
from rollbackd.model import Signal, SignalStatus, Target, utcnow
from rollbackd.podhealth import PodRules
from rollbackd.sources.kubernetes import PodHealthPoller
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.kubesim.controllers.crashloop import KNOB_CRASH_AFTER
from rollbackd.testing.stack import wait_for

pytestmark = pytest.mark.integration

CRASHY = Target("default", "crashy")
CALM = Target("default", "calm")
POD_LISTS = r"^/api/v1/namespaces/default/pods$"


def deployment(name: str, knobs: Mapping[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(knobs)},
                "spec": {"containers": [{"name": "app", "image": f"{name}:1"}]},
            },
        },
    }


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    kubesim.store.create(
        "apps/v1/deployments", deployment(CRASHY.name, {KNOB_CRASH_AFTER: "100ms"})
    )
    kubesim.store.create("apps/v1/deployments", deployment(CALM.name, {}))
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with Kube(api) as adapter:  # retry budget 0: an error is seen at once
        await adapter.start_watches(["default"])
        assert await adapter.wait_synced(timeout=10)
        yield adapter


async def pods_unwatched(
    kubesim: KubeSim, kube: Kube, *, lists: int | None = None, duration: float = 30
) -> None:
    """The pod watch refused (and the pod lists too, answered ``lists``) until the poller sees it."""
    kubesim.faults.fail_for("watch", POD_LISTS, lists or 503, duration=duration)
    if lists is not None:
        kubesim.faults.fail_for("list", POD_LISTS, lists, duration=duration)
    kubesim.faults.drop_watches(POD_LISTS)

    async def stale() -> bool:
        return not kube.pods_watched()

    await wait_for(stale, 10, "the pod watch to fail", interval=0.02)


def pod_lists(kubesim: KubeSim, mark: int) -> list[Any]:
    """The pod lists (not watches) since ``mark``."""
    return [
        r for r in kubesim.requests.since(mark) if r.verb == "list" and r.path.endswith("/pods")
    ]


def poller(kube: Kube, emitted: list[Signal], window: timedelta) -> PodHealthPoller:
    async def emit(signal: Signal) -> None:
        emitted.append(signal)

    return PodHealthPoller(
        kube,
        rules=PodRules(),
        for_count=2,
        interval=0.2,
        window_of=lambda target, annotations: window,
        default_window=window,
        emit=emit,
        clock=utcnow,
    )


async def fire(subject: PodHealthPoller, emitted: list[Signal]) -> Signal:
    async def fired() -> Signal | None:
        await subject.evaluate_once()
        firing = [s for s in emitted if s.status is SignalStatus.FIRING]
        return firing[-1] if firing else None

    return await wait_for(fired, 20, "pod_health to fire", interval=0.2)


async def test_the_crash_looping_deployment_fires_from_the_watched_pods_without_a_list(
    kube: Kube, kubesim: KubeSim
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))
    mark = kubesim.requests.mark()
    signal = await fire(subject, emitted)
    assert signal.target == CRASHY and signal.labels["replicaset"].startswith("crashy-")
    assert "2 of 2 pods of ReplicaSet crashy-" in signal.summary
    assert "container app CrashLoopBackOff" in signal.summary or "restarted" in signal.summary
    assert all(s.target == CRASHY for s in emitted), "the calm Deployment never signals"
    assert pod_lists(kubesim, mark) == [], "the watch cache holds what pod health reads"


async def test_while_the_pod_watch_fails_the_pods_are_listed_by_selector_and_still_fire(
    kube: Kube, kubesim: KubeSim
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))
    await pods_unwatched(kubesim, kube)
    mark = kubesim.requests.mark()
    signal = await fire(subject, emitted)
    assert signal.target == CRASHY and "2 of 2 pods of ReplicaSet crashy-" in signal.summary
    assert not kube.pods_watched(), "fired from lists, the watch still refused"
    selectors = {r.query for r in pod_lists(kubesim, mark)}
    assert selectors and all("labelSelector=app%3D" in q for q in selectors), selectors
    assert any("crashy" in q for q in selectors) and any("calm" in q for q in selectors)


async def test_deployments_outside_their_change_window_are_neither_judged_nor_listed(
    kube: Kube, kubesim: KubeSim
) -> None:
    emitted: list[Signal] = []
    # The rollouts began seconds ago: a window of a millisecond excludes them.
    subject = poller(kube, emitted, timedelta(milliseconds=1))
    await pods_unwatched(kubesim, kube)  # lists would be the visible trace of a look
    mark = kubesim.requests.mark()
    for _ in range(3):
        assert await subject.evaluate_once() == []
    assert pod_lists(kubesim, mark) == []
    assert subject.tracked == 0


@pytest.mark.parametrize("status", [503, 429])
async def test_an_api_server_refusing_pods_is_no_data_once_then_the_anomaly_goes_on(
    kube: Kube, kubesim: KubeSim, status: int
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))
    fired = await fire(subject, emitted)
    await pods_unwatched(kubesim, kube, lists=status)
    emitted.clear()
    for _ in range(3):
        await subject.evaluate_once()
    assert [s.status for s in emitted] == [SignalStatus.NO_DATA], emitted
    assert "listing pods failed" in emitted[0].summary
    kubesim.faults.clear()
    again = await fire(subject, emitted)
    assert again.key == fired.key, "the same anomaly, still firing: the intake dedupes it"
