"""The pod_health source on an Argo Rollout: a crash-looping canary triggers the abort.

kubesim runs Rollout default/web (4 replicas, setWeight 25 then a pause):
1.0 is Healthy, then 2.0 whose containers exit 100 ms after each start is
released: one canary pod beside three stable ones (it never becomes available,
so the step never completes). The
poller (the real adapter: the canary's ReplicaSet's pods from the watch cache,
listed by the Rollouts' hash label while the pod watch fails) judges the
canary's pods only, fires, and the decision on that signal is the
abort; once the canary is aborted the stable pods are what serves, so the
anomaly resolves. A canary started outside the change window is not looked at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.decide import decide
from rollbackd.kube import Kube
from rollbackd.model import Action, History, Policy, Signal, SignalStatus, utcnow
from rollbackd.reasons import ReasonCode
from rollbackd.sources.kubernetes import PodHealthPoller
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.kubesim.controllers.crashloop import KNOB_CRASH_AFTER
from rollbackd.testing.stack import wait_for
from tests.integration.test_executor_argo import ROLLOUTS, WEB, manifest, status, until
from tests.integration.test_pod_health_source import pod_lists, pods_unwatched, poller

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    """A Healthy 1.0, then a crash-looping 2.0 canary at setWeight 25; the cache synced."""
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig), retry_budget=5.0) as k:
        await k.request("POST", ROLLOUTS, body=manifest("example/app:1.0"))
        await until(lambda: status(k), lambda s: s.get("phase") == "Healthy")
        ops = [
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "2.0"},
            {
                "op": "add",
                "path": "/spec/template/metadata/annotations",
                "value": {KNOB_CRASH_AFTER: "100ms"},
            },
        ]
        await k.request(
            "PATCH", f"{ROLLOUTS}/web", body=ops, content_type="application/json-patch+json"
        )
        await until(
            lambda: status(k),
            # The crashing canary never becomes available: setWeight 25 never completes.
            lambda s: (
                s.get("updatedReplicas") == 1 and s.get("currentPodHash") != s.get("stableRS")
            ),
        )
        await k.start_watches(["default"])
        assert await k.wait_synced(timeout=10)
        yield k


async def first(subject: PodHealthPoller, emitted: list[Signal], wanted: SignalStatus) -> Signal:
    async def seen() -> Signal | None:
        await subject.evaluate_once()
        return next((s for s in emitted if s.status is wanted), None)

    return await wait_for(seen, 20, f"pod_health {wanted}", interval=0.2)


async def test_a_crash_looping_canary_fires_is_aborted_by_the_decision_and_then_resolves(
    kube: Kube, kubesim: KubeSim
) -> None:
    paused: dict[str, Any] = await status(kube)
    canary_rs = f"web-{paused['currentPodHash']}"
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))

    fired = await first(subject, emitted, SignalStatus.FIRING)

    assert fired.target == WEB and fired.labels["replicaset"] == canary_rs
    assert f"1 of 1 pods of ReplicaSet {canary_rs} unhealthy" in fired.summary  # stable not judged
    now = utcnow()
    decision = decide(fired, kube.facts(WEB, now=now), History(), Policy(), now)
    assert decision.action is Action.ROLLBACK, decision.reason  # the canary's abort

    await kube.abort_rollout(WEB)
    resolved = await first(subject, emitted, SignalStatus.RESOLVED)
    assert resolved.key.startswith(f"kube:{WEB}:pod_health:{canary_rs}")
    # Aborted: a repeat of the anomaly is skipped by the decision, never a second abort.
    await until(lambda: status(kube), lambda s: s.get("phase") == "Degraded")
    facts = kube.facts(WEB, now=utcnow())
    assert facts.rollout is not None
    again = decide(fired, facts, History(), Policy(), utcnow())
    assert (again.action, again.reason_code) == (Action.SKIP, ReasonCode.ROLLOUT_ALREADY_ABORTED)


async def test_a_canary_outside_its_change_window_is_neither_judged_nor_listed(
    kube: Kube, kubesim: KubeSim
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(milliseconds=1))
    await pods_unwatched(kubesim, kube)  # lists would be the visible trace of a look
    mark = kubesim.requests.mark()

    for _ in range(3):
        assert await subject.evaluate_once() == []

    assert pod_lists(kubesim, mark) == []
